//! The supervisord socket's XML-RPC request parser (any local user of the socket's group
//! can send it anything): it must answer every body with a call or an error, never panic,
//! overflow the stack or allocate without bound; what it accepts must survive the writer.
#![no_main]

use cfy_init::supervisord::xmlrpc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(call) = xmlrpc::parse_call(data) {
        assert!(call.params.len() <= xmlrpc::MAX_PARAMS);
        for p in &call.params {
            let out = xmlrpc::response(p);
            assert!(out.starts_with("<?xml"));
        }
    }
});

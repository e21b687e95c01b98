//! The config loader's limits: input it would take super-linear time on fails at once with
//! an error naming the limit; a long dependency chain within them loads (no recursion).
//! Timings are in the report / docs, not asserted here.

use cfy_init::config::{Config, Root, MAX_CONFIG_BYTES, MAX_FLOW_DEPTH};

fn load(text: &str) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, text).unwrap();
    Config::load(Some(&file), &Root::new(dir.path())).map_err(|e| e.to_string())
}

#[test]
fn deep_flow_nesting_fails_at_once_naming_the_limit() {
    let deep = format!(
        "log:\n  level: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let err = load(&deep).unwrap_err();
    assert!(
        err.contains(&format!("nested deeper than {MAX_FLOW_DEPTH} levels")) && err.contains(":2:"),
        "{err}"
    );
    let braces = format!("log: {}\n", "{a: ".repeat(100_000));
    assert!(load(&braces).unwrap_err().contains("nested deeper"));
    // Within the limit it is an ordinary type error, not a limit error.
    let ok_depth = format!(
        "log:\n  level: {}{}\n",
        "[".repeat(MAX_FLOW_DEPTH),
        "]".repeat(MAX_FLOW_DEPTH)
    );
    let err = load(&ok_depth).unwrap_err();
    assert!(!err.contains("nested deeper"), "{err}");
}

#[test]
fn huge_files_fail_at_once_and_long_chains_load() {
    let mut many = String::from("supervise:\n  services:\n");
    for i in 0..200_000 {
        many.push_str(&format!("    - {{name: s{i}, command: [sleep, '1']}}\n"));
    }
    let err = load(&many).unwrap_err();
    assert!(
        err.contains(&format!("limit is {MAX_CONFIG_BYTES} bytes")),
        "{err}"
    );

    // A 30 000-long depends_on chain (and a cycle closing it) within the size limit.
    let n = 30_000;
    let mut chain = String::from("supervise:\n  services:\n");
    for i in 0..n {
        let next = if i + 1 < n {
            format!("s{}", i + 1)
        } else {
            "z".into()
        };
        chain.push_str(&format!(
            "    - {{name: s{i}, command: [x], depends_on: [{next}]}}\n"
        ));
    }
    assert!(chain.len() < MAX_CONFIG_BYTES);
    let c = load(&chain).unwrap();
    assert_eq!(c.supervise.services.len(), n);
    let order = cfy_init::supervise::order::start_order(&c.supervise.services);
    assert_eq!(
        order.first().map(String::as_str),
        Some(&*format!("s{}", n - 1))
    );
    let cycle = chain.replace("depends_on: [z]", "depends_on: [s0]");
    assert!(load(&cycle)
        .unwrap_err()
        .contains("dependency cycle s0 -> s1 -> s2"));
}

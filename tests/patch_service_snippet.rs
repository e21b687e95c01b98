//! The native service definition that runs scripts/load-resolver-rules.py once per store
//! after the REST service is ready. The integrator copies this snippet into the supervise
//! defaults; this test keeps it valid against the shared service model.

use std::path::{Path, PathBuf};

use cfy_init::config::Root;
use cfy_init::supervise::{RestartPolicy, ServiceKind, ServiceSpec};

/// The snippet, exactly as handed over (one item of `supervise.services`).
const SNIPPET: &str = r#"
- name: load-resolver-rules
  kind: after-ready
  depends_on: [cloudify-restservice]
  marker: /cfy-persist/.cfy-init/resolver-rules-loaded
  command:
    - /opt/manager/env/bin/python
    - /opt/cfy-init/load-resolver-rules.py
    - --config
    - /etc/cloudify/config.yaml
  restart: on-failure
  startsecs: 0s
"#;

#[test]
fn snippet_is_a_valid_after_ready_task_with_a_marker_in_the_store() {
    let mut specs: Vec<ServiceSpec> = serde_norway::from_str(SNIPPET).unwrap();
    assert_eq!(specs.len(), 1);
    let spec = &mut specs[0];
    assert_eq!(spec.kind, ServiceKind::AfterReady);
    assert_eq!(spec.depends_on, vec!["cloudify-restservice".to_string()]);
    assert_eq!(spec.restart, RestartPolicy::OnFailure);
    assert_eq!(spec.command[0], "/opt/manager/env/bin/python");
    assert!(spec.command[1].ends_with("load-resolver-rules.py"));
    // The marker lives in the store, so a fresh store (or a restored one) runs it again.
    let store = cfy_init::config::Config::embedded().persist.store;
    let marker = spec.marker.clone().unwrap();
    assert!(marker.starts_with(&store), "{marker:?} in {store:?}");
    spec.reroot(&Root::new("/R"));
    assert_eq!(
        spec.marker.as_deref(),
        Some(Path::new("/R/cfy-persist/.cfy-init/resolver-rules-loaded"))
    );
    // The script it runs is the one in this repository.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/load-resolver-rules.py");
    assert!(script.is_file());
}

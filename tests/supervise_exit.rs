//! Exit codes that explain (issue 16, item 7): in supervisor mode (as PID 1 of a PID
//! namespace) a required service that fails for good ends the run with exit code 1, and
//! the last log line names the service and why: `exited 3`, `killed by SIGSEGV`,
//! `crash loop: ...`.

#[path = "common/services.rs"]
mod services;

use services::{Init, Sandbox};

/// Run `config` until cfy-init exits by itself; its exit code and its last log message.
fn run_to_end(sb: &Sandbox, config: &str, log: &str) -> (Init, i32, String) {
    let mut init = sb.start(config, &[], log);
    let code = init.wait_exit().code().expect("exit code");
    let last = init
        .events()
        .last()
        .and_then(|e| e["message"].as_str().map(str::to_string))
        .unwrap_or_default();
    (init, code, last)
}

#[test]
fn a_required_service_that_exits_names_itself_and_its_code() {
    let sb = Sandbox::new();
    let config = r#"
supervise:
  services:
    - name: worker
      command: [sh, -c, "sleep 0.3; exit 3"]
      startsecs: 50ms
      restart: never
      required: true
"#;
    let (init, code, last) = run_to_end(&sb, config, "exit3");
    init.check(code == 1, &format!("exit {code}, want 1"));
    init.check(
        last == "supervisor finished: required service worker exited 3",
        &format!("last line {last:?}"),
    );
}

#[test]
fn a_required_service_killed_by_a_signal_names_the_signal() {
    let sb = Sandbox::new();
    let config = r#"
supervise:
  services:
    - name: crasher
      command: [sh, -c, "sleep 0.3; kill -SEGV $$"]
      startsecs: 50ms
      restart: never
      required: true
"#;
    let (init, code, last) = run_to_end(&sb, config, "segv");
    init.check(code == 1, &format!("exit {code}, want 1"));
    init.check(
        last == "supervisor finished: required service crasher killed by SIGSEGV",
        &format!("last line {last:?}"),
    );
}

#[test]
fn a_required_service_in_a_crash_loop_says_so() {
    let sb = Sandbox::new();
    let config = r#"
supervise:
  services:
    - name: flappy
      command: [sh, -c, "sleep 0.2; exit 1"]
      startsecs: 50ms
      required: true
      backoff: {initial: 10ms, max: 40ms}
      crash_loop: {max_restarts: 3, window: 1m}
"#;
    let (init, code, last) = run_to_end(&sb, config, "loop");
    init.check(code == 1, &format!("exit {code}, want 1"));
    init.check(
        last == "supervisor finished: required service flappy crash loop: 4 restarts within 1m",
        &format!("last line {last:?}"),
    );
}

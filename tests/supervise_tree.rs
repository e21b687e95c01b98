//! A process tree no service escapes (issue 16, item 6): a service's `setsid` escapee and
//! double-forked daemon carry its `CFY_INIT_SERVICE` marker and get the stop signal (TERM)
//! at shutdown, before anything is killed; cfy-init waits for them. As PID 1 of a PID
//! namespace.

#[path = "common/services.rs"]
mod services;

use services::{poll, Sandbox, PATIENCE};

#[test]
fn setsid_and_double_forked_processes_get_term_at_shutdown() {
    let sb = Sandbox::new();
    let esc = sb.path("escapee");
    let dae = sb.path("daemon");
    let keeper = |f: &std::path::Path| {
        format!(
            "trap \\\"echo got-term >> {f}; exit 0\\\" TERM; echo up > {f}.up; while :; do sleep 1; done",
            f = f.display()
        )
    };
    let config = format!(
        r#"
supervise:
  services:
    - name: leaky
      command: [sh, -c, "setsid sh -c '{esc}' & (sh -c '{dae}' &) ; exec sleep 1000"]
      startsecs: 0s
"#,
        esc = keeper(&esc),
        dae = keeper(&dae),
    );
    let mut init = sb.start(&config, &[], "tree");
    for f in [&esc, &dae] {
        let up = f.with_extension("up");
        poll("the escapee to start", PATIENCE, || {
            up.exists().then_some(())
        });
    }
    init.signal(libc::SIGTERM);
    let code = init.wait_exit().code().unwrap();
    init.check(code == 0, &format!("exit {code}, want 0"));
    for f in [&esc, &dae] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        init.check(
            text.contains("got-term"),
            &format!("{} got no TERM before the end", f.display()),
        );
    }
}

//! cfy-init as PID 1 of a fresh PID namespace: exit codes, orphan reaping, signal
//! forwarding, transparent TERM in `run --`, and `--kill-after`.

#[path = "common/services.rs"]
mod services;

use services::{poll, Sandbox, PATIENCE};

const NO_CONFIG: &str = "log:\n  level: debug\n";

fn run_main(sb: &Sandbox, config: &str, main: &[&str], log: &str) -> (i32, services::Init) {
    let mut init = sb.start(config, main, log);
    let st = init.wait_exit();
    let code = st.code().unwrap_or_else(|| panic!("unshare died: {st}"));
    (code, init)
}

#[test]
fn main_exit_codes_follow_tini() {
    let sb = Sandbox::new();
    let cases: &[(&[&str], i32)] = &[
        (&["/bin/true"], 0),
        (&["sh", "-c", "exit 1"], 1),
        (&["sh", "-c", "exit 42"], 42),
        (&["sh", "-c", "kill -KILL $$"], 137),
        (&["sh", "-c", "kill -USR1 $$"], 128 + libc::SIGUSR1),
        // The main command is a child of PID 1 (cfy-init) in the namespace.
        (&["sh", "-c", "[ $PPID -eq 1 ] && exit 7"], 7),
        (&["/nonexistent/program"], 127),
    ];
    for (i, (argv, want)) in cases.iter().enumerate() {
        let (code, init) = run_main(&sb, NO_CONFIG, argv, &format!("log{i}"));
        init.check(
            code == *want,
            &format!("{argv:?}: exit {code}, want {want}"),
        );
    }
}

#[test]
fn orphan_zombie_storm_is_reaped() {
    const N: usize = 3000;
    let sb = Sandbox::new();
    // Each `(true &)` leaves an orphan re-parented to PID 1. The main command then waits
    // (bounded) until /proc shows no zombie at all, and reports failure otherwise.
    let script = format!(
        r#"i=0; while [ $i -lt {N} ]; do (true &); i=$((i+1)); done
n=0
while [ $n -lt 600 ]; do
  z=$(cat /proc/[0-9]*/stat 2>/dev/null | awk '$3 == "Z"' | wc -l)
  [ "$z" -eq 0 ] && exit 0
  n=$((n+1)); sleep 0.05
done
echo "zombies left: $z" >&2; exit 3"#
    );
    let (code, init) = run_main(&sb, NO_CONFIG, &["sh", "-c", &script], "storm");
    init.check(
        code == 0,
        &format!("zombies were left behind (exit {code})"),
    );
    let events = init.events();
    let fin = events
        .iter()
        .find(|e| e["message"] == "main command finished")
        .expect("final event");
    let orphans = fin["orphans"].as_u64().unwrap();
    let reaped = fin["reaped"].as_u64().unwrap();
    init.check(
        orphans >= N as u64 && reaped > orphans,
        &format!("reaped {reaped}, orphans {orphans}, want ≥ {N} orphans"),
    );
}

#[test]
fn signals_are_forwarded_to_the_main_command() {
    let sb = Sandbox::new();
    let ready = sb.path("ready");
    let got = sb.path("got");
    let script = format!(
        "trap 'echo usr1 > {got}; exit 42' USR1; trap 'echo hup >> {got}' HUP; \
         touch {ready}; while :; do sleep 0.05; done",
        got = got.display(),
        ready = ready.display()
    );
    let mut init = sb.start(NO_CONFIG, &["sh", "-c", &script], "fwd");
    poll("the main command to be ready", PATIENCE, || {
        ready.exists().then_some(())
    });
    // HUP in main mode is forwarded (not a reload): the trap appends, keeps running.
    init.signal(libc::SIGHUP);
    poll("HUP to arrive", PATIENCE, || {
        std::fs::read_to_string(&got)
            .ok()
            .filter(|s| s.contains("hup"))
    });
    init.signal(libc::SIGUSR1);
    let code = init.wait_exit().code().unwrap();
    init.check(
        code == 42,
        &format!("exit {code}, want 42 from the USR1 trap"),
    );
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "usr1\n");
}

#[test]
fn term_is_forwarded_and_cfy_init_waits_for_the_command() {
    // Transparent by default (tini's model): a command that handles TERM and goes on is
    // not killed; it ends when it chooses to, with its own status.
    let sb = Sandbox::new();
    let ready = sb.path("ready");
    let got = sb.path("got");
    let script = format!(
        "trap 'echo term >> {got}' TERM; trap 'echo int >> {got}' INT; trap 'exit 42' USR1; \
         touch {ready}; \
         while :; do sleep 0.05; done",
        got = got.display(),
        ready = ready.display()
    );
    // A short shutdown deadline that must not apply to `run --`.
    let config = "supervise:\n  shutdown_deadline: 1s\n";
    let mut init = sb.start(config, &["sh", "-c", &script], "transparent");
    poll("the main command to be ready", PATIENCE, || {
        ready.exists().then_some(())
    });
    init.signal(libc::SIGTERM);
    init.signal(libc::SIGINT);
    poll("TERM and INT to arrive", PATIENCE, || {
        std::fs::read_to_string(&got)
            .ok()
            .filter(|s| s.contains("term") && s.contains("int"))
    });
    // Still running after its TERM trap (a KILL would have ended it with 137): the next
    // signal still reaches it and decides the exit code.
    init.signal(libc::SIGUSR1);
    let code = init.wait_exit().code().unwrap();
    init.check(
        code == 42,
        &format!("exit {code}, want 42 from the USR1 trap"),
    );
}

#[test]
fn kill_after_sigkills_a_command_that_ignores_term() {
    let sb = Sandbox::new();
    let ready = sb.path("ready");
    // Ignored dispositions are inherited, so the whole group ignores TERM.
    let script = format!(
        "trap '' TERM; touch {}; while :; do sleep 0.05; done",
        ready.display()
    );
    let mut init = sb.start_run(
        NO_CONFIG,
        &["--kill-after", "1s"],
        &["sh", "-c", &script],
        "deadline",
    );
    poll("the main command to be ready", PATIENCE, || {
        ready.exists().then_some(())
    });
    let t0 = std::time::Instant::now();
    init.signal(libc::SIGTERM);
    let code = init.wait_exit().code().unwrap();
    init.check(code == 137, &format!("exit {code}, want 137 (SIGKILL)"));
    init.check(
        t0.elapsed() >= std::time::Duration::from_millis(900),
        "killed before the grace",
    );
    init.check(
        init.events().iter().any(|e| {
            e["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("the command did not exit within the grace")
        }),
        "no 'did not exit within the grace' event",
    );
}

#[test]
fn term_gives_the_main_command_a_graceful_exit() {
    let sb = Sandbox::new();
    let ready = sb.path("ready");
    let script = format!(
        "trap 'exit 0' TERM; touch {}; while :; do sleep 0.05; done",
        ready.display()
    );
    let mut init = sb.start(NO_CONFIG, &["sh", "-c", &script], "graceful");
    poll("ready", PATIENCE, || ready.exists().then_some(()));
    init.signal(libc::SIGTERM);
    let code = init.wait_exit().code().unwrap();
    init.check(code == 0, &format!("exit {code}, want 0"));
}

#[test]
fn supervisor_mode_stops_services_on_rtmin3_and_kills_stubborn_ones() {
    let sb = Sandbox::new();
    let config = r#"
supervise:
  shutdown_deadline: 5s
  services:
    - name: polite
      command: [sleep, "1000"]
      startsecs: 0s
    - name: stubborn
      command: [sh, -c, "trap '' TERM; while :; do sleep 0.05; done"]
      startsecs: 0s
      stop_timeout: 300ms
      depends_on: [polite]
"#;
    let mut init = sb.start(config, &[], "rtmin");
    init.wait_event("running and ready", "stubborn", 1);
    init.signal(libc::SIGRTMIN() + 3);
    let code = init.wait_exit().code().unwrap();
    init.check(
        code == 0,
        &format!("exit {code}, want 0 after a clean shutdown"),
    );
    // Reverse dependency order: stubborn is gone before polite is asked to stop.
    let stopped = init.find("stopped", "stubborn")[0];
    let stopping = init.find("stopping", "polite")[0];
    init.check(
        stopped < stopping,
        "polite was stopped before its dependent",
    );
}

#[test]
fn supervisor_mode_forwards_signals_to_every_service() {
    let sb = Sandbox::new();
    let mut services = String::from("supervise:\n  forward_signals: all\n  services:\n");
    for n in ["one", "two"] {
        services.push_str(&format!(
            "    - name: {n}\n      command: [sh, -c, \"trap 'echo {n} >> {got}' USR2; touch {ready}-{n}; while :; do sleep 0.05; done\"]\n      startsecs: 0s\n",
            got = sb.path("got").display(),
            ready = sb.path("ready").display(),
        ));
    }
    let mut init = sb.start(&services, &[], "fwd-all");
    for n in ["one", "two"] {
        let f = sb.path(&format!("ready-{n}"));
        poll("service ready", PATIENCE, || f.exists().then_some(()));
    }
    init.signal(libc::SIGUSR2);
    let got = sb.path("got");
    poll("both services to get USR2", PATIENCE, || {
        let t = std::fs::read_to_string(&got).unwrap_or_default();
        (t.contains("one") && t.contains("two")).then_some(())
    });
    init.signal(libc::SIGINT);
    let code = init.wait_exit().code().unwrap();
    init.check(code == 0, &format!("exit {code}, want 0"));
}

//! The real `supervisorctl` drives cfy-init (PID 1 in a PID namespace) and a real
//! `supervisord` running the same programs; outputs and exit codes must match.

#[path = "common/supervisord.rs"]
mod svd;

use svd::{ctl, normalise, settled, wait_until, CfyInit, RealSupervisord};

const PROGRAMS: &str = r#"
[program:starter]
command=/bin/sh -c "echo starting; echo done"
startsecs=0
autorestart=false

[program:manual]
command=sleep 1000
autostart=false

[program:missing]
command=/nonexistent/bin/thing --flag
autostart=false

[program:quick]
command=/bin/sh -c "echo bye; exit 3"
autostart=false
startretries=0

[group:grp]
programs=g1,g2

[program:g1]
command=sleep 1001
startsecs=0

[program:g2]
command=sleep 1002
startsecs=0
priority=5
"#;

const SLEEPER_V1: &str = "[program:sleeper]\ncommand=/bin/sh -c 'echo out-a; echo err-a >&2; exec sleep 1000'\nstartsecs=0\n";
const SLEEPER_V2: &str =
    "[program:sleeper]\ncommand=/bin/sh -c 'echo out-b; exec sleep 999'\nstartsecs=0\n";
const EXTRA: &str = "[program:extra]\ncommand=sleep 998\n";

/// Both sides, with a command → (normalised output, exit code) comparison.
struct Pair {
    ours: CfyInit,
    real: RealSupervisord,
}

impl Pair {
    fn start() -> Pair {
        let includes = [("sleeper.conf", SLEEPER_V1)];
        let real = RealSupervisord::start(PROGRAMS, &includes);
        let ours = CfyInit::prepare(PROGRAMS, &includes).start("");
        let p = Pair { ours, real };
        p.settle();
        p
    }

    fn settle(&self) {
        wait_until("cfy-init to settle", || settled(&self.ours.sock));
        wait_until("supervisord to settle", || settled(&self.real.sock));
    }

    /// Run `args` on both; assert same normalised output and exit code; return ours.
    fn same(&self, args: &[&str]) -> String {
        let (ours, our_rc) = ctl(&self.ours.sock, args);
        let (theirs, their_rc) = ctl(&self.real.sock, args);
        assert_eq!(
            (normalise(&ours), our_rc),
            (normalise(&theirs), their_rc),
            "`supervisorctl {}` differs (left: cfy-init, right: supervisord)\ncfy-init log:\n{}",
            args.join(" "),
            self.ours.log()
        );
        self.settle();
        ours
    }

    /// Like [`Pair::same`] for commands acting on several processes at once, whose result
    /// order in supervisord depends on which start finished first: lines compared sorted.
    /// supervisord itself races on the one-shot `starter` (startsecs=0, exits at once):
    /// "started" if it is still running when supervisord first looks, else "abnormal
    /// termination"; either is its answer, so both compare equal.
    fn same_lines(&self, args: &[&str]) -> String {
        let one_shot = |l: &str| match l {
            "starter: started" | "starter: ERROR (abnormal termination)" => {
                "starter: started or abnormal termination".to_owned()
            }
            l => l.to_owned(),
        };
        let sorted = |s: &str| {
            let mut l: Vec<String> = normalise(s).lines().map(one_shot).collect();
            l.sort();
            l
        };
        let (ours, our_rc) = ctl(&self.ours.sock, args);
        let (theirs, their_rc) = ctl(&self.real.sock, args);
        assert_eq!(
            (sorted(&ours), our_rc),
            (sorted(&theirs), their_rc),
            "`supervisorctl {}` differs (left: cfy-init, right: supervisord)",
            args.join(" ")
        );
        self.settle();
        ours
    }

    /// Like [`Pair::same`] without waiting for both to settle afterwards.
    fn same_now(&self, args: &[&str]) -> String {
        let (ours, our_rc) = ctl(&self.ours.sock, args);
        let (theirs, their_rc) = ctl(&self.real.sock, args);
        assert_eq!(
            (normalise(&ours), our_rc),
            (normalise(&theirs), their_rc),
            "`supervisorctl {}` differs (left: cfy-init, right: supervisord)\ncfy-init log:\n{}",
            args.join(" "),
            self.ours.log()
        );
        ours
    }

    /// Write an include file whose text names a path in each side's own include dir.
    fn write_include_with(&self, name: &str, text: impl Fn(&std::path::Path) -> String) {
        for dir in [self.ours.include_dir(), self.real.include_dir()] {
            std::fs::write(dir.join(name), text(&dir)).unwrap();
        }
    }

    fn write_include(&self, name: &str, text: &str) {
        for dir in [self.ours.include_dir(), self.real.include_dir()] {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    fn remove_include(&self, name: &str) {
        for dir in [self.ours.include_dir(), self.real.include_dir()] {
            std::fs::remove_file(dir.join(name)).unwrap();
        }
    }
}

#[test]
fn status_start_stop_restart_signal_match_supervisord() {
    let p = Pair::start();
    let status = p.same(&["status"]);
    assert!(
        status.contains("sleeper") && status.contains("RUNNING"),
        "{status}"
    );
    assert!(status.contains("grp:g1"), "{status}");
    p.same(&["status", "sleeper", "nope", "grp:*"]);
    p.same(&["stop", "sleeper"]);
    p.same(&["stop", "sleeper"]);
    p.same(&["start", "sleeper"]);
    p.same(&["start", "sleeper"]);
    p.same(&["restart", "sleeper"]);
    p.same(&["start", "nope"]);
    p.same(&["start", "missing"]);
    p.same(&["start", "quick"]);
    p.same(&["status", "quick"]);
    p.same_lines(&["stop", "grp:*"]);
    p.same(&["status"]);
    p.same_lines(&["start", "grp:*"]);
    p.same_lines(&["start", "manual", "grp:g1"]);
    p.same_lines(&["stop", "all"]);
    p.same(&["status"]);
    p.same_lines(&["start", "all"]);
    p.same(&["signal", "HUP", "manual"]);
    p.same(&["signal", "BOGUS", "manual"]);
    p.same(&["signal", "USR1", "nope"]);
    p.same(&["pid", "manual"]);
    p.same(&["pid", "nope"]);
    p.same(&["avail"]);
    p.same(&["version"]);
}

#[test]
fn reread_and_update_follow_program_files_like_supervisord() {
    let p = Pair::start();
    p.same(&["reread"]);
    p.write_include("extra.conf", EXTRA);
    p.write_include("sleeper.conf", SLEEPER_V2);
    p.same(&["reread"]);
    p.same(&["update"]);
    p.same(&["status"]);
    let tail = p.same(&["tail", "sleeper"]);
    assert!(tail.contains("out-b"), "changed program restarted: {tail}");
    p.remove_include("extra.conf");
    p.same(&["reread"]);
    p.same(&["update"]);
    p.same(&["status"]);
    // add / remove by hand, as the manager's scripts sometimes do.
    p.write_include("extra.conf", EXTRA);
    p.same(&["reread"]);
    p.same(&["add", "extra"]);
    p.same(&["add", "extra"]);
    p.same(&["remove", "extra"]);
    p.same(&["stop", "extra"]);
    p.same(&["remove", "extra"]);
    p.same(&["remove", "extra"]);
    p.same(&["update"]);
    p.same(&["status"]);
    // A broken file: reread reports the error, nothing running is disturbed.
    p.write_include("broken.conf", "[program:broken\ncommand=x\n");
    let (ours, rc) = ctl(&p.ours.sock, &["reread"]);
    let (_, their_rc) = ctl(&p.real.sock, &["reread"]);
    assert_eq!(rc, their_rc, "{ours}");
    assert!(ours.contains("broken.conf"), "error names the file: {ours}");
    p.remove_include("broken.conf");
    p.same(&["status"]);
}

#[test]
fn tail_matches_supervisord() {
    let p = Pair::start();
    p.same(&["tail", "starter"]);
    p.same(&["tail", "-5", "starter"]);
    p.same(&["tail", "sleeper", "stderr"]);
    p.same(&["tail", "nope"]);
    p.same(&["tail", "sleeper", "bogus"]);
    // tail -f streams: the first chunk carries what was already written.
    let mut child = std::process::Command::new("supervisorctl")
        .arg("-s")
        .arg(format!("unix://{}", p.ours.sock.display()))
        .args(["tail", "-f", "sleeper"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 256];
        let mut seen = String::new();
        while !seen.contains("out-a") {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        seen
    });
    wait_until("tail -f output", || reader.is_finished());
    let _ = child.kill();
    let _ = child.wait();
    assert!(reader.join().unwrap().contains("out-a"));
}

#[test]
fn concurrent_updates_leave_a_consistent_state() {
    let includes = [("sleeper.conf", SLEEPER_V1)];
    let ours = CfyInit::prepare(PROGRAMS, &includes).start("");
    for i in 0..4 {
        std::fs::write(
            ours.include_dir().join(format!("n{i}.conf")),
            format!("[program:n{i}]\ncommand=sleep 99{i}\nstartsecs=0\n"),
        )
        .unwrap();
    }
    let sock = ours.sock.clone();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || ctl(&sock, &["update"]))
        })
        .collect();
    let outputs: Vec<(String, i32)> = runs.into_iter().map(|t| t.join().unwrap()).collect();
    // Every new group was added exactly once, by one of the two.
    for i in 0..4 {
        let added = outputs
            .iter()
            .filter(|(o, _)| o.contains(&format!("n{i}: added process group")))
            .count();
        assert_eq!(added, 1, "n{i} added once: {outputs:?}");
    }
    wait_until("all settled", || settled(&sock));
    let (status, _) = ctl(&sock, &["status"]);
    for i in 0..4 {
        let lines = status
            .lines()
            .filter(|l| l.starts_with(&format!("n{i} ")))
            .count();
        assert_eq!(lines, 1, "{status}");
        assert!(status.contains(&format!("n{i} ")), "{status}");
    }
    assert!(
        status.lines().filter(|l| l.contains("RUNNING")).count() >= 7,
        "{status}"
    );
    // Nothing left to do afterwards.
    let (reread, rc) = ctl(&sock, &["reread"]);
    assert_eq!((reread.trim(), rc), ("No config updates to processes", 0));
}

#[test]
fn basic_auth_like_supervisord() {
    let programs = "[unix_http_server]\nusername=admin\npassword=s3cret\n\n[program:one]\ncommand=sleep 1000\nstartsecs=0\n";
    let real = RealSupervisord::start(programs, &[]);
    let ours = CfyInit::prepare(programs, &[]).start("");
    for args in [
        &["status"][..],
        &["-u", "admin", "-p", "wrong", "status"][..],
        &["-u", "admin", "-p", "s3cret", "status"][..],
    ] {
        let (mine, my_rc) = ctl(&ours.sock, args);
        let (theirs, their_rc) = ctl(&real.sock, args);
        assert_eq!(
            (normalise(&mine), my_rc),
            (normalise(&theirs), their_rc),
            "{args:?}"
        );
    }
    let (ok, _) = ctl(&ours.sock, &["-u", "admin", "-p", "s3cret", "status"]);
    assert!(ok.contains("one") && ok.contains("RUNNING"), "{ok}");
    assert!(
        !ours.log().contains("s3cret"),
        "the password is never logged"
    );
}

/// `maintail` shows the init's own log at the console's level: the DEBUG line that every
/// XML-RPC call writes stays out at `info`, and shows at `debug` (so the check can see one).
#[test]
fn maintail_keeps_the_log_level() {
    for (level, want_debug) in [("info", false), ("debug", true)] {
        let mut ours = CfyInit::prepare(PROGRAMS, &[]).start(&format!("log:\n  level: {level}\n"));
        wait_until("cfy-init to settle", || settled(&ours.sock));
        ctl(&ours.sock, &["status"]);
        let (out, _) = ctl(&ours.sock, &["maintail"]);
        assert!(out.contains(" INFO "), "{level}: {out}");
        assert_eq!(out.contains(" DEBUG "), want_debug, "{level}: {out}");
        ours.stop();
    }
}

/// Fails every start: four attempts (startretries=3) with supervisord's 1 s, 2 s, 3 s
/// back-off between them, then FATAL.
const FAILING: &str = "[program:failing]\ncommand=/bin/sh -c 'sleep 0.2; exit 1'\nstartretries=3\n";

/// Needs two tries: the first start exits before startsecs (1 s), the second stays up.
fn slow_start(dir: &std::path::Path) -> String {
    let mark = dir.join("slow.mark");
    format!(
        "[program:slow]\ncommand=/bin/sh -c '[ -e {m} ] && exec sleep 1000; sleep 0.2; touch {m}; exit 1'\n",
        m = mark.display()
    )
}

/// The state name `supervisorctl status NAME` shows.
fn state_of(sock: &std::path::Path, name: &str) -> String {
    let (out, _) = ctl(sock, &["status", name]);
    out.split_whitespace().nth(1).unwrap_or("").to_string()
}

/// Cloudify's `cfy_manager` service calls (components' `service.start` is `update X` then
/// `start X`; stop, restart, reload = reread + update, remove = stop + remove) on a program
/// that never starts and one that needs two tries: same outputs and exit codes as
/// supervisord, and supervisord's back-off timing (cfy-init used to give up within 1 s and
/// answer the manager's `start` with `spawn error`, exit 7).
#[test]
fn cloudify_service_calls_on_failing_and_slow_programs_match_supervisord() {
    let p = Pair::start();
    p.write_include("failing.conf", FAILING);
    let t0 = std::time::Instant::now();
    let added = p.same_now(&["update", "failing"]);
    assert_eq!(added.trim(), "failing: added process group");
    // supervisord: STARTING or BACKOFF, both "already started", exit 0: configure goes on.
    let start = p.same_now(&["start", "failing"]);
    assert_eq!(start.trim(), "failing: ERROR (already started)");
    wait_until("both FATAL", || {
        state_of(&p.ours.sock, "failing") == "FATAL" && state_of(&p.real.sock, "failing") == "FATAL"
    });
    // Back-off 1 s + 2 s + 3 s at least, on both sides.
    assert!(
        t0.elapsed() >= std::time::Duration::from_secs(6),
        "{:?}",
        t0.elapsed()
    );
    let status = p.same(&["status", "failing"]);
    assert!(status.contains("Exited too quickly"), "{status}");
    // restart (update first, as the manager does): answered at the first failed attempt.
    p.same_now(&["update", "failing"]);
    let restart = p.same_now(&["restart", "failing"]);
    assert!(restart.contains("spawn error"), "{restart}");
    // stop while it backs off.
    p.same_now(&["update", "failing"]);
    p.same(&["stop", "failing"]);
    p.same(&["status", "failing"]);

    // Two tries before it stays up.
    p.write_include_with("slow.conf", slow_start);
    p.same_now(&["update", "slow"]);
    let start = p.same_now(&["start", "slow"]);
    assert_eq!(start.trim(), "slow: ERROR (already started)");
    wait_until("both RUNNING", || {
        state_of(&p.ours.sock, "slow") == "RUNNING" && state_of(&p.real.sock, "slow") == "RUNNING"
    });
    p.same(&["status", "slow"]);
    p.same_now(&["update", "slow"]);
    p.same(&["restart", "slow"]);
    p.same(&["status", "slow"]);

    // reload = reread + update of the changed file; remove = stop + remove.
    p.write_include(
        "failing.conf",
        &FAILING.replace("startretries=3", "startretries=0"),
    );
    p.same(&["reread"]);
    p.same(&["update", "failing"]);
    p.same(&["stop", "failing"]);
    p.same(&["remove", "failing"]);
    p.remove_include("failing.conf");
    p.same(&["reread"]);
    p.same(&["status"]);
}

/// `start all` / `stop all` report in completion order (the slowest start last), and
/// `exitstatus` reads as supervisord's after `stop all; start all` (0 since the spawn, not
/// 143): what node_exporter's supervisord collector exports.
#[test]
fn all_results_in_completion_order_and_exitstatus_like_supervisord() {
    let p = Pair::start();
    p.write_include(
        "order.conf",
        "[program:a_slow]\ncommand=sleep 1003\nstartsecs=2\n\n[program:z_fast]\ncommand=sleep 1004\nstartsecs=0\n",
    );
    p.same(&["update"]);
    p.same_lines(&["stop", "all"]);
    let exitstatus = |sock: &std::path::Path| {
        svd::python(
            &format!(
                "{}\nprint(json.dumps({{i['name']: [i['statename'], i['exitstatus']] for i in proxy.supervisor.getAllProcessInfo()}}, sort_keys=True))",
                svd::PY_PROXY
            ),
            sock,
        )
    };
    let stopped = exitstatus(&p.ours.sock);
    assert_eq!(stopped, exitstatus(&p.real.sock));
    assert!(
        stopped.contains(r#""z_fast": ["STOPPED", -1]"#),
        "{stopped}"
    );
    // supervisord itself races on the one-shot `starter` (startsecs=0, exits at once):
    // "started" if it is still running when supervisord first looks, else "abnormal
    // termination"; its line is left out, everything else must match line for line.
    let (ours, our_rc) = ctl(&p.ours.sock, &["start", "all"]);
    let (theirs, their_rc) = ctl(&p.real.sock, &["start", "all"]);
    let lines = |s: &str| -> Vec<String> {
        normalise(s)
            .lines()
            .filter(|l| !l.starts_with("starter:"))
            .map(str::to_owned)
            .collect()
    };
    let sorted = |s: &str| {
        let mut l = lines(s);
        l.sort();
        l
    };
    assert_eq!((sorted(&ours), our_rc), (sorted(&theirs), their_rc));
    for out in [&ours, &theirs] {
        let l = lines(out);
        assert_eq!(
            l.last().map(String::as_str),
            Some("a_slow: started"),
            "{out}"
        );
        assert_eq!(
            l.iter()
                .position(|x| x == "z_fast: started")
                .map(|i| i < l.len() - 1),
            Some(true),
            "{out}"
        );
    }
    p.settle();
    let started = exitstatus(&p.ours.sock);
    assert_eq!(started, exitstatus(&p.real.sock));
    assert!(started.contains(r#""a_slow": ["RUNNING", 0]"#), "{started}");
}

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
    fn same_lines(&self, args: &[&str]) -> String {
        let sorted = |s: &str| {
            let mut l: Vec<String> = normalise(s).lines().map(str::to_owned).collect();
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

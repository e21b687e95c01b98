//! `cfy-init run -- CMD` in the scenarios of tini's and dumb-init's own test suites (our
//! own tests of the same behaviour), each as PID 1 of a new PID namespace and as a plain
//! process: exit codes and `-e`, reaping and `-w`, signal proxying and rewriting, process
//! groups and setsid, the inherited signal state, the parent-death signal, the working
//! directory, the tini/dumb-init command lines, and a signal table against Debian's
//! tini and dumb-init side by side.

#[path = "common/pid1.rs"]
mod pid1;

use pid1::{alive, descendants, kill, poll, state, Harness, Ns, BOTH};

type Env = Vec<(&'static str, &'static str)>;
type Rewrites = Vec<(i32, i32)>;

fn sh(script: &str) -> Vec<&str> {
    vec!["sh", "-c", script]
}

#[test]
fn exit_codes_and_deaths_by_signal_pass_through() {
    let h = Harness::new();
    for ns in BOTH {
        for init in [
            h.cfy(&[]),
            h.alias("tini", &["--"]),
            h.alias("dumb-init", &[]),
        ] {
            for code in [0, 1, 2, 32, 64, 127, 254, 255] {
                let mut r = h.spawn(ns, &init, &sh(&format!("exit {code}")));
                assert_eq!(r.wait(), code, "{ns:?} {init:?} exit {code}");
            }
            for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGKILL] {
                let mut r = h.spawn(ns, &init, &sh(&format!("kill -{sig} $$")));
                assert_eq!(r.wait(), 128 + sig, "{ns:?} {init:?} killed by {sig}");
            }
        }
    }
}

#[test]
fn expect_exit_remaps_codes_to_zero() {
    let h = Harness::new();
    // Inclusive: `-e N` turns exactly N into 0, for every N (not as PID 1: 256 runs).
    for code in 0..=255 {
        let n = code.to_string();
        let mut r = h.spawn(Ns::Host, &h.cfy(&["-e", &n]), &sh(&format!("exit {code}")));
        assert_eq!(r.wait(), 0, "-e {code}");
    }
    // Exclusive: every other code listed, N stays N; also through the tini symlink, where
    // options stop at the first word that is not one (the command's `-c` is its own).
    for ns in BOTH {
        for code in [0, 1, 42, 143, 255] {
            let others: Vec<String> = (0..=255u32)
                .filter(|c| *c != code)
                .flat_map(|c| ["-e".to_string(), c.to_string()])
                .collect();
            let others: Vec<&str> = others.iter().map(String::as_str).collect();
            let script = format!("exit {code}");
            let mut r = h.spawn(ns, &h.cfy(&others), &sh(&script));
            assert_eq!(r.wait(), code as i32, "{ns:?} run -e (all but {code})");
            let mut r = h.spawn(ns, &h.alias("tini", &others), &sh(&script));
            assert_eq!(r.wait(), code as i32, "{ns:?} tini -e (all but {code})");
            if code == 143 {
                let mut r = h.spawn(ns, &h.cfy(&["-e", "143"]), &sh("kill -TERM $$"));
                assert_eq!(r.wait(), 0, "{ns:?}: death by TERM remapped");
            }
        }
    }
}

/// The command double-forks 100 short-lived orphans, then waits until the init has no
/// child but itself: every orphan was re-parented to the init and reaped.
const REAPING: &str = r#"i=0
while [ $i -lt 100 ]; do (sleep 0.0$((i % 5)) &); i=$((i+1)); done
n=0
while [ $n -lt 1200 ]; do
  set -- $(cat /proc/$PPID/task/$PPID/children)
  [ $# -eq 1 ] && [ "$1" = $$ ] && exit 0
  n=$((n+1)); sleep 0.05
done
echo "left: $*" >&2; exit 3"#;

#[test]
fn orphans_are_reaped_as_pid1_and_as_subreaper() {
    let h = Harness::new();
    for ns in BOTH {
        for init in [h.cfy(&[]), h.alias("tini", &[]), h.alias("dumb-init", &[])] {
            let mut r = h.spawn(ns, &init, &sh(REAPING));
            assert_eq!(r.wait(), 0, "{ns:?} {init:?}: {}", r.stderr());
            assert!(
                !r.stderr().contains("reaped zombie process"),
                "warned without -w"
            );
        }
        // -w: each reaped orphan is a warning.
        for init in [h.cfy(&["-w"]), h.alias("tini", &["-w"])] {
            let mut r = h.spawn(ns, &init, &sh(REAPING));
            assert_eq!(r.wait(), 0, "{ns:?} {init:?}");
            assert!(
                r.stderr().contains("reaped zombie process with pid="),
                "{ns:?} {init:?}: no warning: {}",
                r.stderr()
            );
        }
    }
}

#[test]
fn term_usr1_usr2_reach_the_command() {
    let h = Harness::new();
    for ns in BOTH {
        for init in [h.cfy(&[]), h.alias("tini", &[]), h.alias("dumb-init", &[])] {
            for sig in [libc::SIGTERM, libc::SIGUSR1, libc::SIGUSR2] {
                let mut r = h.spawn(ns, &init, &["sleep", "1000"]);
                r.wait_started();
                r.signal(sig);
                assert_eq!(r.wait(), 128 + sig, "{ns:?} {init:?} signal {sig}");
            }
        }
    }
}

#[test]
fn group_mode_signals_the_whole_process_group() {
    // The command ignores USR1 and waits for a child that does not: only a signal to the
    // whole group ends the child, and then the command.
    let script = "trap '' USR1; env --default-signal=USR1 sleep 1000; exit 0";
    let h = Harness::new();
    for ns in BOTH {
        let inits: Vec<(Vec<String>, Env)> = vec![
            (h.cfy(&["--group"]), vec![]),
            (h.cfy(&[]), vec![("CFY_INIT_GROUP", "1")]),
            (h.alias("tini", &["-g", "--"]), vec![]),
            (
                h.alias("tini", &["--"]),
                vec![("TINI_KILL_PROCESS_GROUP", "1")],
            ),
            (h.alias("dumb-init", &[]), vec![]),
        ];
        for (init, env) in inits {
            let mut r = h.spawn_with(ns, &init, &sh(script), |c| {
                c.envs(env.iter().copied());
            });
            let cmd = r.wait_started();
            // Once `env` has exec'd sleep, USR1 is back to its default there.
            poll("the command's child to be sleep", || {
                pid1::children(cmd)
                    .into_iter()
                    .find(|p| pid1::cmdline(*p).starts_with("sleep"))
            });
            r.signal(libc::SIGUSR1);
            assert_eq!(r.wait(), 0, "{ns:?} {init:?}: {}", r.stderr());
        }
    }
}

#[test]
fn the_command_inherits_the_mask_and_ignored_signals() {
    use std::os::unix::process::CommandExt;
    let h = Harness::new();
    let sigset = |status: &str, key: &str| -> u64 {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in {status}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    let bit = |s: i32| 1u64 << (s - 1);
    for ns in BOTH {
        for (init, inherit) in [
            (h.cfy(&[]), true),
            (h.alias("tini", &["--"]), true),
            (h.cfy(&["--signal-state", "clean"]), false),
        ] {
            let mut r = h.spawn_with(ns, &init, &["cat", "/proc/self/status"], |c| {
                // SAFETY: signal-state calls only, between fork and exec.
                unsafe {
                    c.pre_exec(|| {
                        for s in [libc::SIGTTOU, libc::SIGSEGV, libc::SIGINT] {
                            libc::signal(s, libc::SIG_IGN);
                        }
                        let mut set: libc::sigset_t = std::mem::zeroed();
                        libc::sigemptyset(&mut set);
                        for s in [libc::SIGTTIN, libc::SIGILL, libc::SIGTERM] {
                            libc::sigaddset(&mut set, s);
                        }
                        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                        Ok(())
                    });
                }
            });
            let mut status = String::new();
            loop {
                let l = r.line();
                status.push_str(&l);
                status.push('\n');
                if l.starts_with("SigCgt") {
                    break;
                }
            }
            assert_eq!(r.wait(), 0);
            let (blk, ign) = (sigset(&status, "SigBlk:"), sigset(&status, "SigIgn:"));
            let want_ign = bit(libc::SIGTTOU) | bit(libc::SIGSEGV) | bit(libc::SIGINT);
            let want_blk = bit(libc::SIGTTIN) | bit(libc::SIGILL) | bit(libc::SIGTERM);
            if inherit {
                assert_eq!(ign & want_ign, want_ign, "{ns:?} {init:?} SigIgn {ign:x}");
                assert_eq!(blk, want_blk, "{ns:?} {init:?} SigBlk {blk:x}");
            } else {
                assert_eq!((blk, ign), (0, 0), "{ns:?} clean state");
            }
        }
    }
}

#[test]
fn parent_death_signal_is_forwarded() {
    let h = Harness::new();
    for (n, init) in [
        h.cfy(&["-p", "SIGUSR1"]),
        h.alias("tini", &["-p", "SIGUSR1", "--"]),
    ]
    .into_iter()
    .enumerate()
    {
        let ok = h.path(&format!("pdeath-ok-{n}"));
        let ready = h.path(&format!("pdeath-ready-{n}"));
        let child = format!(
            "trap 'echo ok > {}; exit 0' USR1; touch {}; while :; do sleep 0.05; done",
            ok.display(),
            ready.display()
        );
        // Not PID 1: the init's parent is a shell the test kills.
        let quoted: Vec<String> = init
            .iter()
            .map(|a| format!("'{a}'"))
            .chain(["sh".into(), "-c".into(), format!("\"{child}\"")])
            .collect();
        let wrapper = format!("{}; :", quoted.join(" "));
        let mut r = h.spawn(Ns::Host, &["sh".to_string(), "-c".into(), wrapper], &[]);
        poll("the command to be ready", || ready.exists().then_some(()));
        let shell = r.init_pid();
        kill(shell, libc::SIGKILL);
        let got = poll("the parent-death signal to arrive", || {
            std::fs::read_to_string(&ok).ok()
        });
        assert_eq!(got, "ok\n");
        let _ = r.wait();
        // As PID 1: the parent is unshare.
        let _ = std::fs::remove_file(&ready);
        let _ = std::fs::remove_file(&ok);
        let r = h.spawn(Ns::Pid1, &init, &sh(&child));
        poll("the command to be ready", || ready.exists().then_some(()));
        kill(r.child.id() as i32, libc::SIGKILL);
        let got = poll("the parent-death signal to arrive", || {
            std::fs::read_to_string(&ok).ok()
        });
        assert_eq!(got, "ok\n");
    }
}

/// Two pipelines, one in the background: five processes in the command's group.
const PIPELINES: &str = "yes 'oh, hi' | tail & yes error | tail >/dev/null";

#[test]
fn group_mode_terms_every_pipeline_single_child_only_the_shell() {
    let h = Harness::new();
    for ns in BOTH {
        for init in [h.cfy(&["--group"]), h.alias("dumb-init", &[])] {
            let mut r = h.spawn(ns, &init, &sh(PIPELINES));
            let init_pid = r.init_pid();
            let pids = poll("five processes", || {
                let d = descendants(init_pid);
                (d.len() == 5).then_some(d)
            });
            r.signal(libc::SIGTERM);
            assert_eq!(r.wait(), 143, "{ns:?} {init:?}");
            poll("every process of the group to end", || {
                pids.iter().all(|p| !alive(*p)).then_some(())
            });
        }
    }
    // Not in group mode, TERM reaches the shell only: four processes stay (not as PID 1,
    // where the namespace ends with the init).
    for init in [
        h.cfy(&[]),
        h.alias("dumb-init", &["--single-child"]),
        h.alias("tini", &[]),
    ] {
        let mut r = h.spawn(Ns::Host, &init, &sh(PIPELINES));
        let init_pid = r.init_pid();
        let pids = poll("five processes", || {
            let d = descendants(init_pid);
            (d.len() == 5).then_some(d)
        });
        r.signal(libc::SIGTERM);
        assert_eq!(r.wait(), 143, "{init:?}");
        let living: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        assert_eq!(living.len(), 4, "{init:?}: {living:?}");
        for p in living {
            kill(p, libc::SIGKILL);
        }
    }
}

#[test]
fn group_mode_terms_what_the_command_left_behind() {
    let h = Harness::new();
    for ns in BOTH {
        for init in [h.cfy(&["--group"]), h.alias("dumb-init", &[])] {
            let ready = h.path("left-ready");
            let _ = std::fs::remove_file(&ready);
            let printer = h.print_signals(Some(&ready)).join(" ");
            let script = format!(
                "{printer} & while [ ! -e {r} ]; do sleep 0.01; done; exit 0",
                r = ready.display()
            );
            let mut r = h.spawn(ns, &init, &sh(&script));
            let line = r.line();
            assert!(line.starts_with("ready "), "{line}");
            // The command exits; the printer left in its group gets TERM.
            assert_eq!(r.line(), "15", "{ns:?} {init:?}");
            let init_pid = r.init_pid();
            for p in descendants(init_pid) {
                kill(p, libc::SIGKILL);
            }
            assert_eq!(r.wait(), 0, "{ns:?} {init:?}");
        }
    }
    // Without group mode nothing is sent: the printer is still there for what we send.
    for init in [h.cfy(&[]), h.alias("dumb-init", &["-c"])] {
        let ready = h.path("left-ready");
        let _ = std::fs::remove_file(&ready);
        let printer = h.print_signals(Some(&ready)).join(" ");
        let script = format!(
            "{printer} & while [ ! -e {r} ]; do sleep 0.01; done; exit 0",
            r = ready.display()
        );
        let mut r = h.spawn(Ns::Host, &init, &sh(&script));
        let line = r.line();
        let pid: i32 = line.strip_prefix("ready ").unwrap().parse().unwrap();
        assert_eq!(r.wait(), 0);
        for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT] {
            kill(pid, sig);
            assert_eq!(r.line(), sig.to_string(), "{init:?}");
        }
        kill(pid, libc::SIGKILL);
    }
}

#[test]
fn a_command_that_cannot_run_fails_with_a_message() {
    let h = Harness::new();
    for ns in BOTH {
        let cases = [
            h.cfy(&[]),
            h.alias("tini", &["--"]),
            h.alias("dumb-init", &[]),
            h.alias("dumb-init", &["--"]),
            h.alias("dumb-init", &["-c"]),
            h.alias("dumb-init", &["--single-child", "--"]),
        ];
        for init in cases {
            let mut r = h.spawn(ns, &init, &["/doesnotexist"]);
            assert_ne!(r.wait(), 0, "{ns:?} {init:?}");
            assert!(
                r.stderr()
                    .contains("/doesnotexist: No such file or directory"),
                "{ns:?} {init:?}: {}",
                r.stderr()
            );
        }
    }
}

#[test]
fn command_lines_of_the_aliases_and_version() {
    let h = Harness::new();
    let run = |argv: Vec<String>| {
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap(), text)
    };
    let version = format!("cfy-init {}", env!("CARGO_PKG_VERSION"));
    let (code, text) = run(vec![pid1::BIN.into(), "--version".into()]);
    assert_eq!((code, text.trim()), (0, version.as_str()));
    for flag in ["-V", "--version"] {
        let (code, text) = run(h.alias("dumb-init", &[flag]));
        assert_eq!(code, 0);
        assert!(text.contains(&version), "{text}");
    }
    let (code, text) = run(h.alias("tini", &["--version"]));
    assert!(code == 0 && text.contains(&version), "{text}");
    for flag in ["-h", "--help"] {
        let (code, text) = run(h.alias("dumb-init", &[flag]));
        assert!(code == 0 && text.contains("--rewrite"), "{text}");
    }
    let (code, text) = run(h.alias("tini", &["-h"]));
    assert!(code == 0 && text.contains("-e EXIT_CODE"), "{text}");
    let (code, text) = run(h.alias("dumb-init", &[]));
    assert!(code != 0 && text.contains("Usage: dumb-init"), "{text}");
    let (code, _) = run(h.alias("tini", &[]));
    assert_ne!(code, 0);
    let (code, text) = run(h.alias("dumb-init", &["--yolo", "/bin/true"]));
    assert!(
        code == 1 && text.contains("unrecognized option '--yolo'"),
        "{text}"
    );
    let (code, _) = run(h.alias("tini", &["-y", "/bin/true"]));
    assert_eq!(code, 1);
    let bad: &[&[&str]] = &[
        &["-r"],
        &["-r", ""],
        &["-r", "herp"],
        &["-r", "herp:derp"],
        &["-r", "15"],
        &["-r", "15::12"],
        &["-r", "15:derp"],
        &["-r", "15:12", "-r"],
        &["-r", "15:12", "-r", "0"],
        &["-r", "15:12", "-r", "1:32"],
    ];
    for args in bad {
        let mut argv = h.alias("dumb-init", args);
        argv.extend(["echo".to_string(), "oh, hi".to_string()]);
        let (code, text) = run(argv);
        assert!(
            code == 1 && text.contains("-r option takes"),
            "{args:?}: {code} {text}"
        );
    }
    let mut argv = h.cfy(&["-r", "15:derp"]);
    argv.push("true".into());
    assert_eq!(run(argv).0, 2);
}

#[test]
fn the_command_runs_where_the_init_was_started_the_init_in_slash() {
    let h = Harness::new();
    let cwd = tempfile::tempdir().unwrap();
    let want = cwd.path().canonicalize().unwrap().display().to_string();
    for ns in BOTH {
        for init in [h.cfy(&[]), h.alias("tini", &[]), h.alias("dumb-init", &[])] {
            let cmd = sh("readlink /proc/$PPID/cwd && readlink /proc/$$/cwd");
            let mut r = h.spawn_with(ns, &init, &cmd, |c| {
                c.current_dir(cwd.path());
            });
            assert_eq!(r.line(), "/", "{ns:?} {init:?}: the init's directory");
            assert_eq!(r.line(), want, "{ns:?} {init:?}: the command's directory");
            assert_eq!(r.wait(), 0);
        }
    }
}

#[test]
fn signals_are_rewritten_and_ignored() {
    let (term, int, quit, cont, hup, winch) = (
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGCONT,
        libc::SIGHUP,
        libc::SIGWINCH,
    );
    let seq = [term, quit, cont, int];
    // (rewrites, signals sent, signals the command must see)
    let cases: Vec<(Rewrites, Vec<i32>, Vec<i32>)> = vec![
        (vec![], seq.to_vec(), seq.to_vec()),
        (vec![(term, int)], seq.to_vec(), vec![int, quit, cont, int]),
        (
            vec![(term, int), (int, term), (quit, quit)],
            seq.to_vec(),
            vec![int, quit, cont, term],
        ),
        (vec![(1, 31), (31, 1)], vec![1, 31], vec![31, 1]),
    ];
    let h = Harness::new();
    for ns in BOTH {
        for (map, send, want) in &cases {
            let args: Vec<String> = map
                .iter()
                .flat_map(|(a, b)| ["-r".to_string(), format!("{a}:{b}")])
                .collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            for init in [h.cfy(&args), h.alias("dumb-init", &args)] {
                let mut r = h.spawn(
                    ns,
                    &init,
                    &h.print_signals(None)
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                );
                assert!(r.line().starts_with("ready"));
                for (s, w) in send.iter().zip(want) {
                    r.signal(*s);
                    assert_eq!(r.line(), w.to_string(), "{ns:?} {init:?} sent {s}");
                }
            }
        }
        // R = 0 drops the signal; `--signal S:ignore` too.
        for init in [
            h.cfy(&["-r", "15:3", "-r", "2:0", "--signal", "WINCH:ignore"]),
            h.alias("dumb-init", &["-r", "15:3", "-r", "2:0", "-r", "28:0"]),
        ] {
            let printer = h.print_signals(None);
            let printer: Vec<&str> = printer.iter().map(String::as_str).collect();
            let mut r = h.spawn(ns, &init, &printer);
            assert!(r.line().starts_with("ready"));
            r.signal(term);
            r.signal(int);
            assert_eq!(r.line(), quit.to_string());
            r.signal(winch);
            r.signal(hup);
            assert_eq!(r.line(), hup.to_string(), "{ns:?} {init:?}");
        }
    }
}

#[test]
fn group_mode_suspends_the_group_and_itself_and_cont_resumes_both() {
    let h = Harness::new();
    let printer = h.print_signals(None);
    let printer: Vec<&str> = printer.iter().map(String::as_str).collect();
    // Not PID 1: a namespace's init cannot stop itself (the kernel drops the SIGSTOP).
    for init in [h.cfy(&["--group"]), h.alias("dumb-init", &[])] {
        for sig in [libc::SIGTSTP, libc::SIGTTOU, libc::SIGTTIN] {
            let mut r = h.spawn(Ns::Host, &init, &printer);
            assert!(r.line().starts_with("ready"));
            let init_pid = r.init_pid();
            let child = descendants(init_pid)[0];
            r.signal(sig);
            poll("the init and its command to stop", || {
                (state(init_pid) == Some('T') && state(child) == Some('T')).then_some(())
            });
            r.signal(libc::SIGCONT);
            assert_eq!(r.line(), libc::SIGCONT.to_string(), "{init:?} {sig}");
            assert!(matches!(state(init_pid), Some('S' | 'R')));
            assert!(matches!(state(child), Some('S' | 'R')));
        }
        // The default STOP rewrite can be overridden; cfy-init still stops itself.
        let rules = [
            (libc::SIGTTIN, libc::SIGTERM),
            (libc::SIGTTOU, libc::SIGINT),
            (libc::SIGTSTP, libc::SIGHUP),
        ];
        let args: Vec<String> = rules
            .iter()
            .flat_map(|(a, b)| ["-r".to_string(), format!("{a}:{b}")])
            .collect();
        let mut init = init.clone();
        let at = if init[0].ends_with("dumb-init") {
            1
        } else {
            init.len() - 1
        };
        for (i, a) in args.iter().enumerate() {
            init.insert(at + i, a.clone());
        }
        let mut r = h.spawn(Ns::Host, &init, &printer);
        assert!(r.line().starts_with("ready"));
        let init_pid = r.init_pid();
        for (send, want) in rules {
            r.signal(send);
            assert_eq!(r.line(), want.to_string(), "{init:?}");
            poll("the init to stop", || {
                (state(init_pid) == Some('T')).then_some(())
            });
            r.signal(libc::SIGCONT);
            assert_eq!(r.line(), libc::SIGCONT.to_string());
        }
    }
    // dumb-init's single-child mode forwards them as they are and stops itself too.
    for sig in [libc::SIGTSTP, libc::SIGTTOU, libc::SIGTTIN] {
        let mut r = h.spawn(Ns::Host, &h.alias("dumb-init", &["-c"]), &printer);
        assert!(r.line().starts_with("ready"));
        let init_pid = r.init_pid();
        r.signal(sig);
        assert_eq!(r.line(), sig.to_string());
        poll("the init to stop", || {
            (state(init_pid) == Some('T')).then_some(())
        });
        r.signal(libc::SIGCONT);
        assert_eq!(r.line(), libc::SIGCONT.to_string());
    }
}

/// Which of `signals` the printer under `init` received when each was sent to the init
/// (an init killed by one gets none of the rest).
fn delivered(h: &Harness, ns: Ns, init: &[String], signals: &[i32]) -> Vec<i32> {
    let printer = h.print_signals(None);
    let printer: Vec<&str> = printer.iter().map(String::as_str).collect();
    let mut r = h.spawn(ns, init, &printer);
    let ready = r.line();
    let printer_pid: i32 = ready.strip_prefix("ready ").unwrap().parse().unwrap();
    let init_pid = r.init_pid();
    let got = sent_and_seen(&mut r, init_pid, signals);
    if ns == Ns::Host {
        // An init that died left the printer to the system's init.
        kill(printer_pid, libc::SIGKILL);
    }
    got
}

fn sent_and_seen(r: &mut pid1::Running, init_pid: i32, signals: &[i32]) -> Vec<i32> {
    let mut got = Vec::new();
    for &sig in signals {
        // A sentinel after each signal, twice: a signal that arrives together with the
        // first sentinel is printed in the same pass, before the second one.
        let sentinel = if sig == libc::SIGUSR1 {
            libc::SIGUSR2
        } else {
            libc::SIGUSR1
        };
        kill(init_pid, sig);
        let mut lines = Vec::new();
        for _ in 0..2 {
            kill(init_pid, sentinel);
            let want = sentinel.to_string();
            let dead = poll(&format!("the sentinel after signal {sig}"), || {
                while let Some(l) = r.try_line() {
                    if l == want {
                        return Some(false);
                    }
                    lines.push(l);
                }
                if r.try_code().is_some() {
                    return Some(true);
                }
                if state(init_pid) == Some('T') {
                    // dumb-init stops itself after TSTP/TTIN/TTOU: resume it.
                    kill(init_pid, libc::SIGCONT);
                }
                None
            });
            if dead {
                return got;
            }
        }
        if lines.contains(&sig.to_string()) {
            got.push(sig);
        }
    }
    got
}

#[test]
fn signal_table_cfy_init_delivers_what_tini_and_dumb_init_deliver() {
    let h = Harness::new();
    let standard: Vec<i32> = (1..=31)
        .filter(|s| ![libc::SIGKILL, libc::SIGSTOP, libc::SIGCHLD].contains(s))
        .collect();
    let realtime: Vec<i32> = (libc::SIGRTMIN()..=libc::SIGRTMAX()).collect();
    let all: Vec<i32> = standard.iter().chain(&realtime).copied().collect();
    for ns in BOTH {
        let ours = delivered(&h, ns, &h.cfy(&[]), &all);
        let tini = delivered(&h, ns, &h.peer("tini", &["-s", "--"]), &all);
        // dumb-init in single-child mode: its default setsid mode turns TSTP/TTIN/TTOU into
        // STOP, which no printer can print.
        let dumb = delivered(&h, ns, &h.peer("dumb-init", &["-c"]), &all);
        let table: String = all
            .iter()
            .map(|s| {
                let mark = |v: &Vec<i32>| if v.contains(s) { "x" } else { "-" };
                format!("{s:>3} {} {} {}\n", mark(&ours), mark(&tini), mark(&dumb))
            })
            .collect();
        let missing: Vec<i32> = tini
            .iter()
            .chain(&dumb)
            .filter(|s| !ours.contains(s))
            .copied()
            .collect();
        assert!(
            missing.is_empty(),
            "{ns:?}: cfy-init misses {missing:?}\nsig cfy tini dumb\n{table}"
        );
        assert_eq!(
            ours, all,
            "{ns:?}: cfy-init must deliver every signal\n{table}"
        );
        eprintln!("{ns:?}\nsig cfy tini dumb\n{table}");
    }
}

#[test]
fn cfy_init_survives_every_signal_when_not_pid1() {
    // Every signal but USR2 dropped by a rule: cfy-init gets each one itself, and the
    // USR2 sent last still reaches the command, so cfy-init lived through all of them.
    let h = Harness::new();
    let all: Vec<i32> = (1..=31)
        .chain(libc::SIGRTMIN()..=libc::SIGRTMAX())
        .filter(|s| ![libc::SIGKILL, libc::SIGSTOP, libc::SIGCHLD, libc::SIGUSR2].contains(s))
        .collect();
    let rules: Vec<String> = all
        .iter()
        .flat_map(|s| ["-r".to_string(), format!("{s}:0")])
        .collect();
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let mut r = h.spawn(Ns::Host, &h.cfy(&rules), &["sleep", "1000"]);
    r.wait_started();
    let init = r.init_pid();
    for s in &all {
        r.signal(*s);
        if state(init) == Some('T') {
            r.signal(libc::SIGCONT);
        }
    }
    r.signal(libc::SIGUSR2);
    assert_eq!(r.wait(), 128 + libc::SIGUSR2, "{}", r.stderr());
}

//! Supervision behaviour of the cfy-init binary (as PID 1 of a PID namespace): SIGHUP
//! reload, restart policies and crash loops, run-once tasks, output floods, log files.

#[path = "common/services.rs"]
mod services;

use services::{poll, Init, Sandbox, PATIENCE};

fn stop(mut init: Init) -> Init {
    init.signal(libc::SIGTERM);
    let code = init.wait_exit().code().unwrap();
    init.check(code == 0, &format!("exit {code}, want 0"));
    init
}

fn has_message(init: &Init, service: &str, prefix: &str) -> bool {
    init.events()
        .iter()
        .any(|e| e["service"] == service && e["message"].as_str().unwrap_or("").starts_with(prefix))
}

#[test]
fn sighup_reloads_and_restarts_only_changed_services() {
    let sb = Sandbox::new();
    let v1 = r#"
supervise:
  services:
    - {name: same, command: [sleep, "1000"], startsecs: 0s}
    - {name: changed, command: [sleep, "1000"], startsecs: 0s}
    - {name: dropped, command: [sleep, "1000"], startsecs: 0s}
"#;
    let mut init = sb.start(v1, &[], "reload");
    init.wait_event("running and ready", "dropped", 1);
    let v2 = r#"
supervise:
  services:
    - {name: same, command: [sleep, "1000"], startsecs: 0s}
    - {name: changed, command: [sleep, "999"], startsecs: 0s}
    - {name: added, command: [sleep, "1000"], startsecs: 0s}
"#;
    sb.write("reload.config.yaml", v2);
    init.signal(libc::SIGHUP);
    init.wait_event("running and ready", "added", 1);
    init.wait_event("running and ready", "changed", 2);
    init.wait_event("stopped", "dropped", 1);
    // A broken file is reported and the running set is kept.
    sb.write(
        "reload.config.yaml",
        "supervise:\n  services: [{name: x}]\n",
    );
    init.signal(libc::SIGHUP);
    poll("the reload error", PATIENCE, || {
        init.events()
            .iter()
            .any(|e| {
                e["message"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("reload failed, keeping the running configuration")
            })
            .then_some(())
    });
    let init = stop(init);
    init.check(
        init.find("started", "same").len() == 1,
        "unchanged service restarted",
    );
    init.check(
        init.find("started", "changed").len() == 2,
        "changed service not restarted",
    );
    init.check(
        init.find("started", "added").len() == 1,
        "added service not started",
    );
}

#[test]
fn restart_policies_and_crash_loop() {
    let sb = Sandbox::new();
    let config = r#"
supervise:
  services:
    - name: flappy
      command: [sh, -c, "sleep 0.2; exit 1"]
      startsecs: 50ms
      backoff: {initial: 10ms, max: 40ms}
      crash_loop: {max_restarts: 3, window: 1m}
    - name: finishes
      command: [sh, -c, "sleep 0.2; exit 0"]
      startsecs: 50ms
      restart: on-failure
    - name: fails-once
      command: [sh, -c, "sleep 0.2; exit 5"]
      startsecs: 50ms
      restart: never
"#;
    let mut init = sb.start(config, &[], "policies");
    poll("the crash loop to be detected", PATIENCE, || {
        has_message(&init, "flappy", "failed for good: Crash loop").then_some(())
    });
    init.wait_event("exited", "finishes", 1);
    init.wait_event("exited", "fails-once", 1);
    let init = stop(init);
    // 1 start + 3 restarts, the 4th exit in the window is one too many.
    let starts = init.find("started", "flappy").len();
    init.check(
        starts == 4,
        &format!("flappy started {starts} times, want 4"),
    );
    init.check(
        init.find("started", "finishes").len() == 1,
        "on-failure restarted a clean exit",
    );
    init.check(
        init.find("started", "fails-once").len() == 1,
        "never restarted a failure",
    );
}

#[test]
fn after_ready_task_runs_once_per_store() {
    let sb = Sandbox::new();
    let runs = sb.path("runs");
    let config = format!(
        r#"
supervise:
  services:
    - {{name: db, command: [sleep, "1000"], startsecs: 300ms}}
    - name: load-rules
      kind: after-ready
      marker: /store/rules-loaded
      command: [sh, -c, "echo run >> {runs}"]
"#,
        runs = runs.display()
    );
    for (round, log) in ["once1", "once2"].into_iter().enumerate() {
        let mut init = sb.start(&config, &[], log);
        if round == 0 {
            init.wait_event("completed", "load-rules", 1);
            init.check(
                init.find("running and ready", "db")[0] < init.find("started", "load-rules")[0],
                "after-ready task ran before the services were ready",
            );
        } else {
            poll("the skip", PATIENCE, || {
                has_message(&init, "load-rules", "already done once").then_some(())
            });
        }
        stop(init);
    }
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n");
    assert!(
        sb.path("store/rules-loaded").exists(),
        "marker under --root"
    );
}

#[test]
fn output_flood_does_not_stall_supervision() {
    let sb = Sandbox::new();
    // `late` must still be started and become ready while `flood` writes 30 MB; lines the
    // bounded log queue cannot take are dropped and counted, never waited for.
    let config = r#"
supervise:
  services:
    - name: flood
      command: [sh, -c, "yes 'flood flood flood flood flood flood flood flood flood' | head -c 30000000; exec sleep 1000"]
      startsecs: 0s
    - name: late
      command: [sleep, "1000"]
      startsecs: 500ms
"#;
    let mut init = sb.start(config, &[], "flood");
    init.wait_event("running and ready", "late", 1);
    let init = stop(init);
    let fin = init
        .events()
        .into_iter()
        .find(|e| e["message"] == "supervisor finished")
        .unwrap();
    assert!(fin["dropped_log_lines"].is_u64());
}

#[test]
fn long_lines_are_split_into_bounded_log_lines() {
    let sb = Sandbox::new();
    let config = r#"
supervise:
  services:
    - name: longline
      command: [sh, -c, "head -c 100000 /dev/zero | tr '\\0' x; echo; exec sleep 1000"]
      startsecs: 0s
"#;
    let init = sb.start(config, &[], "longline");
    // 100 000 bytes in pieces of at most 16 KiB: at least 7 log lines.
    poll("the long line", PATIENCE, || {
        let n = init
            .events()
            .iter()
            .filter(|e| e["service"] == "longline")
            .filter(|e| e["message"].as_str().unwrap_or("").starts_with("xxx"))
            .count();
        (n >= 7).then_some(n)
    });
    let init = stop(init);
    let max = init
        .events()
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::len))
        .max()
        .unwrap();
    init.check(max <= 16 * 1024 + 20, &format!("a log line of {max} bytes"));
}

#[test]
fn file_log_target_rotates() {
    let sb = Sandbox::new();
    let config = r#"
supervise:
  services:
    - name: chatty
      command: [sh, -c, "i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done; exec sleep 1000"]
      startsecs: 0s
      stdout: {type: file, path: /logs/chatty.log, max_bytes: 1000, backups: 2}
"#;
    let init = sb.start(config, &[], "filelog");
    let log = sb.path("logs/chatty.log");
    poll("the last line in the log file", PATIENCE, || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.ends_with("line-299\n"))
    });
    assert!(std::fs::metadata(&log).unwrap().len() <= 1000);
    assert!(sb.path("logs/chatty.log.2").exists());
    assert!(!sb.path("logs/chatty.log.3").exists());
    let init = stop(init);
    init.check(
        !init.events().iter().any(|e| {
            e["service"] == "chatty" && e["message"].as_str().unwrap_or("").starts_with("line-")
        }),
        "file output also went to the init's log",
    );
}

#[test]
fn process_environment_user_groups_umask_rlimits_env() {
    let sb = Sandbox::new();
    let out_dir = sb.dir_for("out", "postgres", false);
    let work = sb.dir_for("work", "postgres", false);
    sb.write(
        "etc/svc.env",
        "# comment\nFROM_FILE=\"file value\"\nBOTH=file\n",
    );
    let out = out_dir.join("report");
    let config = format!(
        r#"
supervise:
  services:
    - name: probe-env
      kind: oneshot
      command: [sh, -c, 'echo "$(id -un) $(id -gn) [$(id -Gn)] $(umask) $(ulimit -n) $(pwd) $FROM_FILE/$BOTH/$HOME" > {out}']
      user: postgres
      supplementary_groups: [ssl-cert]
      umask: "0027"
      rlimits: {{nofile: 1234}}
      working_dir: /work
      env_files: [/etc/svc.env]
      env: {{BOTH: env}}
"#,
        out = out.display()
    );
    let mut init = sb.start(&config, &[], "env");
    init.wait_event("completed", "probe-env", 1);
    let report = std::fs::read_to_string(&out).unwrap();
    let home = nix::unistd::User::from_name("postgres")
        .unwrap()
        .unwrap()
        .dir;
    assert_eq!(
        report.trim(),
        format!(
            "postgres postgres [postgres ssl-cert] 0027 1234 {} file value/env/{}",
            work.display(),
            home.display()
        )
    );
    stop(init);
}

#[test]
fn shutdown_stops_dependents_first_even_through_a_completed_oneshot_then_by_priority() {
    let sb = Sandbox::new();
    let config = r#"
supervise:
  services:
    - {name: db, command: [sleep, "1000"], startsecs: 0s, priority: 100}
    - {name: migrate, kind: oneshot, command: ["true"], depends_on: [db], priority: 100}
    - {name: api, command: [sleep, "1000"], startsecs: 0s, depends_on: [migrate], priority: 100}
    - {name: metrics, command: [sleep, "1000"], startsecs: 0s, priority: 500}
"#;
    let mut init = sb.start(config, &[], "order");
    init.wait_event("running and ready", "api", 1);
    init.wait_event("running and ready", "metrics", 1);
    let init = stop(init);
    let first = |msg: &str, svc: &str| {
        *init
            .find(msg, svc)
            .first()
            .unwrap_or_else(|| panic!("no {msg:?} for {svc}"))
    };
    init.check(
        first("stopped", "metrics") < first("stopping", "api"),
        "api stopped before the higher-priority metrics was gone",
    );
    init.check(
        first("stopped", "api") < first("stopping", "db"),
        "db stopped while api, which needs it through migrate, still ran",
    );
}

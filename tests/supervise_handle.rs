//! The SupervisorHandle API used by the XML-RPC and HTTP servers, driven in-process through
//! `Runner::task` against real child processes.

use std::process::ExitCode;
use std::time::Duration;

use cfy_init::config::{Config, Context, Root};
use cfy_init::supervise::{
    Origin, ProcessState, Runner, ServiceSpec, Stream, SuperviseError, SupervisorHandle,
};

fn context(dir: &std::path::Path, yaml: &str) -> Context {
    let file = dir.join("config.yaml");
    std::fs::write(&file, yaml).unwrap();
    let root = Root::new(dir);
    Context {
        config: Config::load(Some(&file), &root).unwrap(),
        root,
        config_path: Some(file),
    }
}

fn spec(yaml: &str) -> std::sync::Arc<ServiceSpec> {
    std::sync::Arc::new(serde_norway::from_str(yaml).unwrap())
}

/// Poll the handle until `f` holds (bounded).
async fn until(
    h: &SupervisorHandle,
    what: &str,
    f: impl Fn(&[cfy_init::supervise::ServiceInfo]) -> bool,
) {
    let mut changed = h.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if f(&h.status().await) {
            return;
        }
        if tokio::time::timeout_at(deadline, changed.changed())
            .await
            .is_err()
        {
            panic!("timed out waiting for {what}: {:#?}", h.status().await);
        }
    }
}

fn state(infos: &[cfy_init::supervise::ServiceInfo], name: &str) -> ProcessState {
    infos.iter().find(|i| i.name == name).unwrap().state
}

#[test]
fn handle_controls_real_processes() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(
        dir.path(),
        r#"
supervise:
  services:
    - name: echo
      command: [sh, -c, "echo hello-out; echo hello-err >&2; exec sleep 1000"]
      startsecs: 200ms
    - name: dependent
      command: [sleep, "1000"]
      depends_on: [echo]
      startsecs: 0s
"#,
    );
    let result: std::rc::Rc<std::cell::RefCell<Option<()>>> = Default::default();
    let done = result.clone();
    let code = Runner::new(&ctx)
        .services(
            vec![spec(
                "name: extra\ncommand: [sleep, '1000']\nstartsecs: 0s\n",
            )],
            Origin::Supervisord,
        )
        .task(move |h| {
            Box::pin(async move {
                exercise(&h).await;
                *done.borrow_mut() = Some(());
                h.shutdown();
            })
        })
        .run()
        .unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(result.borrow().is_some(), "the task ran to its end");
}

async fn exercise(h: &SupervisorHandle) {
    until(h, "all ready", |_| h.all_ready_now()).await;
    let st = h.status().await;
    let names: Vec<&str> = st.iter().map(|i| i.name.as_str()).collect();
    // Dependencies first, then priority, then name.
    assert_eq!(names, ["echo", "dependent", "extra"], "start order");
    let echo = h.info("echo").await.unwrap();
    assert_eq!(echo.state, ProcessState::Running);
    assert!(echo
        .description
        .starts_with(&format!("pid {}, uptime 0:00:0", echo.pid.unwrap())));

    // Output capture for `tail`.
    until(h, "output captured", |_| {
        h.tail("echo", Stream::Stderr, -100, 100)
            .is_ok_and(|t| t.bytes == b"hello-err\n")
    })
    .await;
    let t = h.tail("echo", Stream::Stdout, 0, 5).unwrap();
    assert_eq!(
        (t.bytes.as_slice(), t.end_offset, t.overflow),
        (&b"hello"[..], 5, false)
    );

    // Errors map to supervisord faults.
    assert_eq!(
        h.start("echo", false).await,
        Err(SuperviseError::AlreadyStarted("echo".into()))
    );
    assert_eq!(
        h.info("nope").await.unwrap_err(),
        SuperviseError::BadName("nope".into())
    );
    assert_eq!(
        h.signal("echo", "NOTASIGNAL").await,
        Err(SuperviseError::BadSignal("NOTASIGNAL".into()))
    );
    assert_eq!(
        h.remove("echo").await,
        Err(SuperviseError::AlreadyStarted("echo".into()))
    );

    // stop / start / restart with wait.
    let old = h.info("echo").await.unwrap().pid.unwrap();
    h.stop("echo", true).await.unwrap();
    let i = h.info("echo").await.unwrap();
    assert_eq!(
        (i.state, i.pid, i.ready),
        (ProcessState::Stopped, None, false)
    );
    assert_eq!(i.last_exit_code, Some(128 + libc::SIGTERM));
    assert_eq!(
        h.stop("echo", true).await,
        Err(SuperviseError::NotRunning("echo".into()))
    );
    h.start("echo", true).await.unwrap();
    let i = h.info("echo").await.unwrap();
    assert_eq!(i.state, ProcessState::Running);
    assert_ne!(i.pid.unwrap(), old);
    let before = i.pid.unwrap();
    h.restart("echo").await.unwrap();
    assert_ne!(h.info("echo").await.unwrap().pid.unwrap(), before);

    // A signal reaches the process: USR1 kills sleep, which is restarted (policy always).
    let pid = h.info("extra").await.unwrap().pid.unwrap();
    h.signal("extra", "USR1").await.unwrap();
    until(h, "extra restarted", |s| {
        let i = s.iter().find(|i| i.name == "extra").unwrap();
        i.pid.is_some_and(|p| p != pid) && i.state == ProcessState::Running
    })
    .await;
    let i = h.info("extra").await.unwrap();
    assert_eq!(
        (i.restarts, i.last_exit_code),
        (1, Some(128 + libc::SIGUSR1))
    );

    // add / remove at run time; a missing dependency is waited for.
    h.add(
        spec("name: late\ncommand: [sleep, '1000']\nstartsecs: 0s\ndepends_on: [later]\n"),
        Origin::Supervisord,
    )
    .await
    .unwrap();
    let i = h.info("late").await.unwrap();
    assert_eq!(
        (i.state, i.description.as_str()),
        (ProcessState::Stopped, "Waiting for later")
    );
    h.add(
        spec("name: later\ncommand: [sleep, '1000']\nstartsecs: 0s\n"),
        Origin::Supervisord,
    )
    .await
    .unwrap();
    until(h, "late running", |s| {
        state(s, "late") == ProcessState::Running
    })
    .await;
    assert!(matches!(
        h.add(spec("name: later\ncommand: [x]\n"), Origin::Supervisord)
            .await,
        Err(SuperviseError::BadArguments(_))
    ));
    h.stop("late", true).await.unwrap();
    h.remove("late").await.unwrap();
    assert!(h.info("late").await.is_err());

    // apply: changed restarts, removed stops and goes, added starts; other origins kept.
    let report = h
        .apply(
            vec![
                spec("name: later\ncommand: [sleep, '999']\nstartsecs: 0s\n"),
                spec("name: fresh\ncommand: [sleep, '1000']\nstartsecs: 0s\n"),
            ],
            Origin::Supervisord,
        )
        .await;
    assert_eq!(report.added, ["fresh"]);
    assert_eq!(report.changed, ["later"]);
    assert_eq!(report.removed, ["extra"]);
    until(h, "apply settled", |s| {
        s.iter().all(|i| i.name != "extra")
            && state(s, "fresh") == ProcessState::Running
            && state(s, "later") == ProcessState::Running
    })
    .await;
    assert_eq!(
        h.specs()
            .await
            .iter()
            .find(|s| s.name == "later")
            .unwrap()
            .command[1],
        "999"
    );
    assert!(h.info("echo").await.is_ok(), "native services untouched");

    // A FATAL service can be started again by hand (and fails again, with the fault).
    h.add(
        spec("name: dud\ncommand: [sh, -c, 'exit 1']\nstartretries: 0\n"),
        Origin::Supervisord,
    )
    .await
    .unwrap();
    until(h, "dud fatal", |s| state(s, "dud") == ProcessState::Fatal).await;
    assert_eq!(
        h.start("dud", true).await,
        Err(SuperviseError::AbnormalTermination("dud".into()))
    );
    let i = h.info("dud").await.unwrap();
    assert_eq!(
        (i.state, i.restarts, i.last_exit_code),
        (ProcessState::Fatal, 1, Some(1))
    );
    assert!(h.stats().reaped >= 5);
    assert!(!h.is_shutting_down());
}

#[test]
fn failed_required_service_ends_the_supervisor_with_failure() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(
        dir.path(),
        r#"
supervise:
  services:
    - name: broken
      command: [sh, -c, "exit 3"]
      required: true
      startretries: 2
      backoff: {initial: 10ms, max: 20ms}
    - name: optional-broken
      command: [/does/not/exist]
      startretries: 0
"#,
    );
    let seen: std::rc::Rc<std::cell::RefCell<Vec<String>>> = Default::default();
    let kept: std::rc::Rc<std::cell::RefCell<Option<SupervisorHandle>>> = Default::default();
    let (seen2, kept2) = (seen.clone(), kept.clone());
    let code = Runner::new(&ctx)
        .task(move |h| {
            *kept2.borrow_mut() = Some(h.clone());
            Box::pin(async move {
                let mut changed = h.subscribe();
                loop {
                    for i in h.status().await {
                        let s = format!("{} {}", i.name, i.state.name());
                        if !seen2.borrow().contains(&s) {
                            seen2.borrow_mut().push(s);
                        }
                    }
                    if changed.changed().await.is_err() {
                        break;
                    }
                }
            })
        })
        .run()
        .unwrap();
    // The handle outlives the supervisor and shows the final states.
    let h = kept.borrow().clone().unwrap();
    let last: Vec<String> = h
        .status_now()
        .iter()
        .map(|i| format!("{} {} {}", i.name, i.state.name(), i.description))
        .collect();
    assert_eq!(
        last,
        [
            "broken FATAL Exited too quickly (process log may have details)",
            "optional-broken FATAL can't find command '/does/not/exist'"
        ]
    );
    assert!(h.is_shutting_down());
    assert_eq!(code, ExitCode::from(1));
    let seen = seen.borrow();
    assert!(seen.contains(&"broken BACKOFF".to_string()), "{seen:?}");
    assert!(
        seen.contains(&"optional-broken FATAL".to_string()),
        "{seen:?}"
    );
}

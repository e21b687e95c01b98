//! The tool killed (SIGKILL) at every step, before and after its mutating call, then
//! resumed: exactly one server in the end, same port, volume and floating IP, data intact.
//! Plus real `kill -9` at arbitrary moments.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use cfy_recover::journal::Step;
use common::*;

fn crash_then_resume(point: &str) {
    let w = World::new();
    w.wait_manager_ready();
    w.write_through_server("data/crash.txt", "survives every crash\n");
    let args = w.recover_args(&[]);
    let out = w
        .cmd(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("CFY_RECOVER_CRASH_AT", point)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{point}: killed at the crash point: {}",
        stderr(&out)
    );
    let status = w.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("in progress"),
        "{point}: status shows the unfinished run"
    );
    let again = w.recover(&[]);
    assert_eq!(
        exit_code(&again),
        Some(2),
        "{point}: a new recover is refused while one is unfinished"
    );
    let out = w.resume();
    assert_eq!(exit_code(&out), Some(0), "{point}: {}", stderr(&out));
    w.assert_recovered();
    w.wait_manager_ready();
    assert_eq!(
        w.served("data/crash.txt").as_deref(),
        Some("survives every crash\n"),
        "{point}: data intact"
    );
}

#[test]
fn crash_before_each_step_then_resume() {
    for step in Step::ALL {
        crash_then_resume(&format!("before:{}", step.name()));
    }
}

#[test]
fn crash_after_each_step_then_resume() {
    for step in Step::ALL {
        crash_then_resume(&format!("after:{}", step.name()));
    }
}

#[test]
fn kill_9_at_arbitrary_moments_then_resume() {
    for delay_ms in [150u64, 700, 1300] {
        let w = World::new();
        w.wait_manager_ready();
        w.write_through_server("data/k.txt", "kill -9\n");
        let args = w.recover_args(&[]);
        let mut child = w
            .cmd(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the journal exists (the run has started), then a little more.
        poll("journal", Duration::from_secs(30), || {
            w.state_dir.join("journal.json").exists()
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let out = w.resume();
        assert_eq!(
            exit_code(&out),
            Some(0),
            "after {delay_ms} ms: {}",
            stderr(&out)
        );
        w.assert_recovered();
        w.wait_manager_ready();
        assert_eq!(w.served("data/k.txt").as_deref(), Some("kill -9\n"));
    }
}

//! `pid1::output` / `pid1::run_command`: commands run through the one reaper (in their own
//! test process, since the reaper collects every child of the process).

use std::io;
use std::process::Command;
use std::time::Duration;

use cfy_init::pid1::{listen_sigchld, output, reap_loop, reaper, run_command};

#[test]
fn commands_run_through_the_reaper() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sigchld = listen_sigchld().unwrap();
        tokio::spawn(reap_loop(sigchld));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 4"]);
        let out = output(&mut cmd, Some(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(4));
        assert_eq!(
            (&out.stdout[..], &out.stderr[..]),
            (&b"out\n"[..], &b"err\n"[..])
        );
        let mut ok = Command::new("true");
        assert!(run_command(&mut ok, None).await.unwrap().success());
        let mut slow = Command::new("sleep");
        slow.arg("1000");
        let e = run_command(&mut slow, Some(Duration::from_millis(50))).await;
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::TimedOut);
        let mut missing = Command::new("/does/not/exist");
        assert_eq!(
            run_command(&mut missing, None).await.unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(reaper().reaped() >= 2);
    });
}

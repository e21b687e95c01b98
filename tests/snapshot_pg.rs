//! Real PostgreSQL 15 supervised by `cfy-init run`, under continuous pgbench writes while
//! a snapshot is taken (quiesce stops PostgreSQL cleanly for the copy); the archive is
//! restored into a fresh store under a second init; `pg_amcheck` is clean and the row
//! count equals the live database's count at the snapshot point.

#[path = "common/hooks.rs"]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use common::{env_with, get, poll, request, wait_ready, Init};
use hyper::{Method, StatusCode};

const BIN: &str = "/usr/lib/postgresql/15/bin";

fn pg_env() -> common::Env {
    let service = format!(
        "supervise:\n  services:\n    - name: postgresql\n      user: postgres\n      command: [{BIN}/postgres, -D, \"{{store}}/pgdata\", -k, \"{{store}}/../pgsock\", -p, \"5432\", -c, \"listen_addresses=\"]\n      stop_signal: INT\n      stop_timeout: 60s\n      startsecs: 0s\n      readiness:\n        check: {{type: exec, command: [{BIN}/pg_isready, -q, -h, \"{{store}}/../pgsock\", -p, \"5432\"]}}\n        interval: 200ms\n"
    );
    let e = env_with(
        "quiesce:\n  services: [postgresql]\nready_timeout: 90s",
        &service,
    );
    std::fs::set_permissions(e.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = e.root().join("pgsock");
    std::fs::create_dir_all(&sock).unwrap();
    chown_postgres(&sock);
    e
}

fn chown_postgres(p: &Path) {
    let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
    std::os::unix::fs::chown(p, Some(pg.uid.as_raw()), Some(pg.gid.as_raw())).unwrap();
}

fn sock(e: &common::Env) -> PathBuf {
    e.root().join("pgsock")
}

fn psql(e: &common::Env, sql: &str) -> String {
    let out = Command::new(format!("{BIN}/psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
            "-p",
            "5432",
            "-h",
        ])
        .arg(sock(e))
        .args(["-c", sql, "postgres"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn count(e: &common::Env, sql: &str) -> u64 {
    psql(e, sql).parse().unwrap()
}

async fn wait_pg_ready(to: &common::To) {
    let end = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let v = get(to, "/status", None).await.json();
        if v["services"][0]["ready"] == true {
            return;
        }
        assert!(std::time::Instant::now() < end, "postgresql not ready: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_snapshot_under_writes_restores_consistently() {
    // Live instance with a fresh cluster in its store.
    let live = pg_env();
    let pgdata = live.store().join("pgdata");
    std::fs::create_dir_all(&pgdata).unwrap();
    chown_postgres(&pgdata);
    let out = Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            &format!("{BIN}/initdb"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-D",
        ])
        .arg(&pgdata)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let init = Init::start(&live);
    let to = init.to();
    wait_ready(&to, Duration::from_secs(60)).await;
    wait_pg_ready(&to).await;
    psql(&live, "CREATE TABLE t (id bigserial PRIMARY KEY, ts timestamptz NOT NULL DEFAULT clock_timestamp(), pad text)");
    let script = live.root().join("insert.sql");
    std::fs::write(&script, "INSERT INTO t(pad) VALUES (repeat('x', 200));\n").unwrap();

    // Continuous writers: pgbench, restarted whenever the pause cuts its connections.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, sock, script) = (stop.clone(), sock(&live), script.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) {
                let _ = Command::new(format!("{BIN}/pgbench"))
                    .args([
                        "-n", "-U", "postgres", "-p", "5432", "-c", "4", "-T", "2", "-h",
                    ])
                    .arg(&sock)
                    .arg("-f")
                    .arg(&script)
                    .arg("postgres")
                    .output();
                runs += 1;
                // After a failed connect (PostgreSQL paused), do not spin.
                std::thread::sleep(Duration::from_millis(50));
            }
            runs
        })
    };
    poll(
        Duration::from_secs(60),
        "1000 rows before the snapshot",
        || count(&live, "SELECT count(*) FROM t") >= 1000,
    );

    let r = request(
        &to,
        Method::POST,
        "/snapshots?wait=true",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}{}",
        String::from_utf8_lossy(&r.body),
        init.log()
    );
    let meta = r.json();
    let id = meta["id"].as_str().unwrap().to_string();
    wait_pg_ready(&to).await;
    let after = count(&live, "SELECT count(*) FROM t");
    poll(Duration::from_secs(60), "writes after the snapshot", || {
        count(&live, "SELECT count(*) FROM t") > after + 500
    });
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() >= 1);

    // Restore into a fresh, empty store under a second init (its PostgreSQL cannot start yet).
    let fresh = pg_env();
    let init2 = Init::start(&fresh);
    let to2 = init2.to();
    let archive = get(&to, &format!("/snapshots/{id}/archive"), None).await;
    assert_eq!(archive.status, StatusCode::OK);
    let file = fresh.root().join("snap.tar.zst");
    std::fs::write(&file, &archive.body).unwrap();
    let out = init2.cli(&["restore", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        init2.log()
    );
    wait_pg_ready(&to2).await;

    // Consistent: every row committed before the pause, none after.
    let restored = count(&fresh, "SELECT count(*) FROM t");
    let cutoff = psql(&fresh, "SELECT max(ts) FROM t");
    let live_at_cutoff = count(
        &live,
        &format!("SELECT count(*) FROM t WHERE ts <= '{cutoff}'"),
    );
    let live_total = count(&live, "SELECT count(*) FROM t");
    assert!(restored >= 1000, "restored {restored}");
    assert_eq!(
        restored, live_at_cutoff,
        "restored rows vs live rows up to the snapshot point"
    );
    assert!(live_total > restored, "writes continued after the snapshot");

    let out = Command::new(format!("{BIN}/pg_amcheck"))
        .args([
            "-U",
            "postgres",
            "-p",
            "5432",
            "--install-missing",
            "--heapallindexed",
            "-d",
            "postgres",
            "-h",
        ])
        .arg(sock(&fresh))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_amcheck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(meta["pause_ms"].as_u64().is_some());
}

//! cfy-init's off-host copies against a real Swift + Keystone (scripts/openstack/swift.sh):
//! `snapshot create --upload`, `snapshot list --remote`, `restore swift://...`, and the
//! schedule uploading from PID 1's child with retention and metrics.

#[path = "common/hooks.rs"]
mod h;
#[path = "../openstack/tests/common/swift_env.rs"]
mod swift_env;

use std::time::Duration;

use h::Init;

/// A test root whose config points `snapshot.remote` at the real Swift.
fn env(container: &str, extra: &str) -> h::Env {
    // No service is supervised here: ready means the boot steps are done.
    let e = h::env_with(
        &format!(
            "remote:\n  cloud: cfy-member\n  clouds_file: /etc/openstack/clouds.yaml\n  container: {container}\n  keep: 2\n  segment_size: 256KiB\n  retry_budget: 30s\n{extra}"
        ),
        "supervise:\n  ready_without_services: true\n",
    );
    std::fs::create_dir_all(e.root().join("etc/openstack")).unwrap();
    std::fs::copy(
        swift_env::clouds_yaml(),
        e.root().join("etc/openstack/clouds.yaml"),
    )
    .unwrap();
    e
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_upload_list_remote_and_restore_from_swift() {
    let _g = swift_env::exclusive().await;
    let c = swift_env::container("cli");
    let e = env(&c, "");
    h::populate(&e.store());
    // Big enough for several 256 KiB segments even compressed.
    swift_env::random_file(&e.store().join("var/lib/data"), "noise.bin", 1_500_000);
    let init = Init::start(&e);
    h::wait_ready(&init.to(), Duration::from_secs(30)).await;
    let before = h::fingerprint(&e.store());

    let o = init.cli(&["snapshot", "create", "--upload"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains(&format!("copied to swift://{c}/")), "{out}");
    let id = out
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();

    let o = init.cli(&["snapshot", "list", "--remote"]);
    assert!(o.status.success(), "{}", text(&o));
    let url = format!("swift://{c}/{id}.tar.zst");
    assert!(text(&o).contains(&url), "{}", text(&o));
    let sw = swift_env::swift(Duration::from_secs(30));
    let segs = sw.list(&format!("{c}_segments")).await.unwrap();
    assert!(segs.len() >= 3, "a segmented upload: {segs:?}");

    // Lose the store and the local archives; restore from the copy in Swift.
    std::fs::remove_dir_all(e.archives()).unwrap();
    std::fs::remove_dir_all(e.store().join("var")).unwrap();
    let o = init.cli(&["restore", &url]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(h::fingerprint(&e.store()), before);
    let leftovers: Vec<_> = std::fs::read_dir(e.archives())
        .unwrap()
        .flatten()
        .map(|d| d.file_name())
        .filter(|n| n.to_string_lossy().starts_with(".swift-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let o = init.cli(&["restore", &format!("swift://{c}/nope.tar.zst")]);
    assert!(!o.status.success());
    assert!(text(&o).contains("404"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_snapshots_uploads_from_a_child_keeps_two_and_exports_metrics() {
    let _g = swift_env::exclusive().await;
    let c = swift_env::container("sched");
    let e = env(
        &c,
        "schedule:\n  every: 1s\n  jitter: 200ms\n  upload: true\n",
    );
    h::populate(&e.store());
    let init = Init::start(&e);
    h::wait_ready(&init.to(), Duration::from_secs(30)).await;
    let metric = |m: &str, name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let end = std::time::Instant::now() + Duration::from_secs(120);
    let metrics = loop {
        let m = h::get(&init.to(), "/metrics", None).await;
        let m = String::from_utf8_lossy(&m.body).into_owned();
        if metric(&m, "cfy_init_snapshot_uploads_total{result=\"ok\"}") >= 3.0 {
            break m;
        }
        assert!(
            metric(&m, "cfy_init_snapshot_uploads_total{result=\"failed\"}") == 0.0,
            "an upload failed:\n{m}\n{}",
            init.log()
        );
        assert!(
            std::time::Instant::now() < end,
            "no 3 uploads:\n{m}\n{}",
            init.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(metric(&metrics, "cfy_init_snapshot_last_success_timestamp_seconds") > 1.7e9);
    assert!(
        metric(
            &metrics,
            "cfy_init_snapshot_upload_last_success_timestamp_seconds"
        ) > 1.7e9
    );
    assert!(metric(&metrics, "cfy_init_snapshot_upload_bytes_total") > 0.0);
    assert!(metric(&metrics, "cfy_init_snapshot_upload_last_duration_seconds") > 0.0);
    assert!(metrics.contains("cfy_init_snapshot_last_pause_seconds"));
    // Retention (keep: 2): the third good upload deleted the first copy before it counted.
    let log = init.log();
    let first = log
        .lines()
        .find_map(|l| l.split("scheduled snapshot taken id=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .expect("a scheduled snapshot in the log")
        .to_owned();
    let sw = swift_env::swift(Duration::from_secs(30));
    let copies = cfy_openstack::swift::snapshots(sw.list(&c).await.unwrap());
    let names: Vec<&str> = copies.iter().map(|o| o.name.as_str()).collect();
    assert!(
        !names.contains(&format!("{first}.tar.zst").as_str()),
        "{first}: {names:?}"
    );
    assert!(
        (2..=3).contains(&names.len()),
        "2 kept (+1 being uploaded): {names:?}"
    );
}

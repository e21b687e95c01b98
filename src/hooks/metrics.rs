//! `/metrics`: Prometheus text exposition built with prometheus-client from the current
//! supervisor, boot and snapshot state at each scrape (the values live elsewhere; a fresh
//! registry per scrape keeps them from drifting).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::routes::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

pub async fn render(state: &AppState) -> String {
    let mut reg = Registry::with_prefix("cfy_init");
    let restarts = Family::<ServiceLabel, Counter>::default();
    let up = Family::<ServiceLabel, Gauge>::default();
    let ready = Family::<ServiceLabel, Gauge>::default();
    let last_exit = Family::<ServiceLabel, Gauge>::default();
    let start_time = Family::<ServiceLabel, Gauge>::default();
    let log_dropped = Family::<ServiceLabel, Counter>::default();
    for s in state.control.status().await {
        let l = ServiceLabel {
            service: s.name.clone(),
        };
        restarts.get_or_create(&l).inc_by(s.restarts);
        up.get_or_create(&l).set(s.pid.is_some() as i64);
        ready.get_or_create(&l).set(s.ready as i64);
        if let Some(code) = s.last_exit_code {
            last_exit.get_or_create(&l).set(i64::from(code));
        }
        if s.start_time > 0 {
            start_time.get_or_create(&l).set(s.start_time as i64);
        }
        log_dropped.get_or_create(&l).inc_by(s.log_dropped_lines);
    }
    reg.register(
        "build",
        "cfy-init build",
        prometheus_client::metrics::info::Info::new(vec![(
            "version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        )]),
    );
    reg.register(
        "service_last_exit_code",
        "Exit code of the service's last exit (128+signal when killed)",
        last_exit,
    );
    reg.register(
        "service_start_time_seconds",
        "Unix time of the service's last start",
        start_time,
    );
    reg.register(
        "service_log_dropped_lines",
        "Output lines of the service dropped by its log_rate_limit",
        log_dropped,
    );
    reg.register("service_restarts", "Restarts of each service", restarts);
    reg.register("service_up", "1 when the service has a running process", up);
    reg.register(
        "service_ready",
        "1 when the service passed its readiness check",
        ready,
    );

    let all_ready = Gauge::<i64>::default();
    all_ready.set(super::routes::readiness(state).await.0 as i64);
    reg.register(
        "ready",
        "1 when boot is complete and every required service is ready",
        all_ready,
    );

    let stats = state.control.stats();
    let reaped = Counter::<u64>::default();
    reaped.inc_by(stats.reaped);
    reg.register(
        "reaped_zombies",
        "Orphaned processes reaped by PID 1",
        reaped,
    );

    let boot = state.boot.view();
    let seed = Counter::<u64>::default();
    seed.inc_by(boot.seed_bytes);
    reg.register("seed_bytes", "Bytes copied into the store by seeding", seed);
    let boot_secs = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    boot_secs.set(boot.seconds.unwrap_or(0.0));
    reg.register(
        "boot_duration_seconds",
        "Time from the start of the boot until every step was done (0 while booting)",
        boot_secs,
    );
    let steps = Family::<StepLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for step in &boot.steps {
        if let Some(secs) = step.seconds {
            steps
                .get_or_create(&StepLabel {
                    step: step.name.clone(),
                })
                .set(secs);
        }
    }
    reg.register(
        "boot_step_duration_seconds",
        "Time each finished boot step took",
        steps,
    );
    let seed_secs = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    if boot.seed_bytes > 0 {
        let persist = boot.steps.iter().find(|s| s.name == "persist");
        seed_secs.set(persist.and_then(|s| s.seconds).unwrap_or(0.0));
    }
    reg.register(
        "seed_duration_seconds",
        "Time the persist step took when it copied data into the store (0 when it copied nothing)",
        seed_secs,
    );
    let free = Gauge::<i64>::default();
    if let Ok(fs) = nix::sys::statvfs::statvfs(state.engine.store()) {
        free.set((fs.blocks_available() * fs.fragment_size()) as i64);
    }
    reg.register(
        "store_free_bytes",
        "Free bytes (for unprivileged users) on the store's filesystem",
        free,
    );

    let snap = state.engine.stats();
    let jobs = Family::<ResultLabel, Counter>::default();
    for (result, n) in [
        ("snapshot_ok", snap.snapshots_ok),
        ("snapshot_failed", snap.snapshots_failed),
        ("restore_ok", snap.restores_ok),
        ("restore_failed", snap.restores_failed),
    ] {
        jobs.get_or_create(&ResultLabel {
            result: result.into(),
        })
        .inc_by(n);
    }
    reg.register("snapshot_jobs", "Snapshot and restore jobs by result", jobs);
    let duration = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    duration.set(snap.last_duration.map_or(0.0, |d| d.as_secs_f64()));
    reg.register(
        "snapshot_last_duration_seconds",
        "Duration of the last good snapshot",
        duration,
    );
    let pause = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    pause.set(snap.last_pause.map_or(0.0, |d| d.as_secs_f64()));
    reg.register(
        "snapshot_last_pause_seconds",
        "Service pause of the last good snapshot",
        pause,
    );
    let pauses = Counter::<u64>::default();
    pauses.inc_by(snap.quiesce_pauses);
    reg.register(
        "snapshot_quiesce_pauses",
        "Times snapshots stopped and started the quiesce services (not counted as restarts)",
        pauses,
    );
    let size = Gauge::<i64>::default();
    size.set(snap.last_size.unwrap_or(0) as i64);
    reg.register(
        "snapshot_last_size_bytes",
        "Compressed size of the last good snapshot",
        size,
    );

    let last_ok = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    last_ok.set(unix_secs(snap.last_success));
    reg.register(
        "snapshot_last_success_timestamp_seconds",
        "Unix time the last good snapshot finished (0 = none since boot)",
        last_ok,
    );
    let up = crate::snapshot::remote::stats();
    let uploads = Family::<ResultLabel, Counter>::default();
    for (result, n) in [("ok", up.ok), ("failed", up.failed)] {
        uploads
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc_by(n);
    }
    reg.register(
        "snapshot_uploads",
        "Scheduled uploads to Swift by result",
        uploads,
    );
    let up_bytes = Counter::<u64>::default();
    up_bytes.inc_by(up.bytes_total);
    reg.register(
        "snapshot_upload_bytes",
        "Bytes of snapshots uploaded to Swift",
        up_bytes,
    );
    let up_last = Gauge::<i64>::default();
    up_last.set(up.last_bytes.unwrap_or(0) as i64);
    reg.register(
        "snapshot_upload_last_size_bytes",
        "Size of the last good upload to Swift",
        up_last,
    );
    let up_dur = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    up_dur.set(up.last_duration.map_or(0.0, |d| d.as_secs_f64()));
    reg.register(
        "snapshot_upload_last_duration_seconds",
        "Duration of the last good upload to Swift",
        up_dur,
    );
    let up_ok = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    up_ok.set(unix_secs(up.last_success));
    reg.register(
        "snapshot_upload_last_success_timestamp_seconds",
        "Unix time the last good upload to Swift finished (0 = none since boot)",
        up_ok,
    );

    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String cannot fail");
    out
}

fn unix_secs(t: Option<std::time::SystemTime>) -> f64 {
    t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

//! Orchestration of snapshot and restore jobs: quiesce, copy, resume, compress in the
//! background, retention; verify, stop, swap, start, wait ready, roll back.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::archive::{self, ArchiveWriter};
use super::control::ServiceControl;
use super::jobs::{Job, JobKind, Jobs};
use super::{check_id, copy, restore, verify, KeepRollback, SnapshotConfig};
use super::{SnapshotError, RESERVED_PREFIX};
use crate::config::Context;
use crate::fsutil;
use crate::supervise::SuperviseError;

/// Metadata of one snapshot, stored next to its archive as `<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// Compressed size.
    pub size: u64,
    /// sha256 of the whole archive file.
    pub sha256: String,
    pub entries: usize,
    /// Uncompressed bytes of all files.
    pub total_bytes: u64,
    /// How long services were paused.
    pub pause_ms: u64,
    /// Whole job duration.
    pub duration_ms: u64,
    /// Every file was copied by reflink.
    pub reflinked: bool,
}

/// What to restore from.
#[derive(Debug, Clone)]
pub enum RestoreSource {
    /// A snapshot in the archive directory.
    Id(String),
    /// An uploaded archive file (deleted afterwards), with an optional expected sha256.
    Upload {
        path: PathBuf,
        sha256: Option<String>,
    },
}

/// Figures for metrics.
#[derive(Debug, Clone, Default)]
pub struct SnapshotStats {
    pub snapshots_ok: u64,
    pub snapshots_failed: u64,
    pub restores_ok: u64,
    pub restores_failed: u64,
    pub last_duration: Option<Duration>,
    pub last_pause: Option<Duration>,
    pub last_size: Option<u64>,
    /// Pauses of the quiesce services for a snapshot (not service restarts).
    pub quiesce_pauses: u64,
    /// When the last good snapshot finished.
    pub last_success: Option<std::time::SystemTime>,
}

pub struct Engine {
    cfg: SnapshotConfig,
    store: PathBuf,
    control: Arc<dyn ServiceControl>,
    pub jobs: Jobs,
    stats: Mutex<SnapshotStats>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A new snapshot id: the creation time to the nanosecond (fixed width, so ids sort in
/// creation order even within one second, which retention relies on) and a random suffix.
fn new_id() -> String {
    let t = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    let t: String = t.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{t}-{:04x}", rand::random::<u16>())
}

impl Engine {
    pub fn new(ctx: &Context, control: Arc<dyn ServiceControl>) -> Arc<Engine> {
        let cfg = ctx.config.snapshot.clone();
        let store = cfg
            .store
            .clone()
            .unwrap_or_else(|| ctx.config.persist.store.clone());
        Arc::new(Engine {
            cfg,
            store,
            control,
            jobs: Jobs::default(),
            stats: Mutex::new(SnapshotStats::default()),
        })
    }

    pub fn store(&self) -> &Path {
        &self.store
    }

    pub fn archive_dir(&self) -> &Path {
        &self.cfg.archive_dir
    }

    pub fn limits(&self) -> &super::Limits {
        &self.cfg.limits
    }

    /// Cloudify REST settings, when configured.
    pub fn cloudify(&self) -> Option<&super::CloudifyRest> {
        self.cfg.cloudify.as_ref()
    }

    /// Claim the job slot for a Cloudify-level job.
    pub fn begin_cloudify(&self, kind: JobKind, id: &str) -> Result<Arc<Job>, SnapshotError> {
        self.jobs
            .begin(kind, format!("cloudify-{id}-{:04x}", rand::random::<u16>()))
    }

    /// The supervisor owns `waitpid`: children must be run through the reaper.
    pub fn owns_reaping(&self) -> bool {
        self.control.owns_reaping()
    }

    pub fn stats(&self) -> SnapshotStats {
        self.stats.lock().unwrap().clone()
    }

    /// Claim the job slot for a snapshot (`Busy` when another job runs).
    pub fn begin_snapshot(&self) -> Result<Arc<Job>, SnapshotError> {
        self.jobs.begin(JobKind::Snapshot, new_id())
    }

    /// Claim the job slot for a restore.
    pub fn begin_restore(&self) -> Result<Arc<Job>, SnapshotError> {
        self.jobs
            .begin(JobKind::Restore, format!("restore-{}", new_id()))
    }

    /// Run a claimed snapshot job to its end.
    pub async fn run_snapshot(&self, job: Arc<Job>) -> Result<SnapshotMeta, SnapshotError> {
        let started = Instant::now();
        spawn_progress_log(job.clone());
        let result = self.snapshot_inner(&job, started).await;
        let mut st = self.stats.lock().unwrap();
        match &result {
            Ok(meta) => {
                st.snapshots_ok += 1;
                st.last_duration = Some(started.elapsed());
                st.last_pause = Some(Duration::from_millis(meta.pause_ms));
                st.last_size = Some(meta.size);
                st.last_success = Some(std::time::SystemTime::now());
            }
            Err(_) => st.snapshots_failed += 1,
        }
        drop(st);
        job.finish(&result.as_ref().map(|_| ()).map_err(clone_err));
        result
    }

    async fn snapshot_inner(
        &self,
        job: &Arc<Job>,
        started: Instant,
    ) -> Result<SnapshotMeta, SnapshotError> {
        let id = job.id.clone();
        job.set_snapshot(&id);
        if !self.store.is_dir() {
            return Err(SnapshotError::Other(format!(
                "{}: store is not a directory; set snapshot.store or persist.store",
                self.store.display()
            )));
        }
        let dir = self.cfg.archive_dir.clone();
        super::private_dir(&dir)?;
        let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let partial = dir.join(format!(".{id}.tar.zst.partial"));
        let made = if self.cfg.precopy {
            self.archive_live(job, &partial, created).await
        } else {
            self.archive_copy(job, &partial, created).await
        };
        let (written, pause_ms, reflinked) = match made {
            Ok(m) => m,
            Err(e) => {
                let _ = fs::remove_file(&partial);
                // Out of space: what is free once the partial archive is gone.
                return Err(e.refresh_free());
            }
        };
        let meta = SnapshotMeta {
            id: id.clone(),
            created: now_secs(),
            size: written.size,
            sha256: written.sha256,
            entries: written.entries,
            total_bytes: written.total_bytes,
            pause_ms,
            duration_ms: started.elapsed().as_millis() as u64,
            reflinked,
        };
        if let Err(e) = self.publish(&partial, &meta) {
            let _ = fs::remove_file(&partial);
            let _ = fs::remove_file(self.archive_path_unchecked(&id));
            return Err(e.refresh_free());
        }
        tracing::info!(
            id = %id, size = meta.size, bytes = meta.total_bytes, pause_ms,
            duration_ms = meta.duration_ms, "snapshot written"
        );
        self.retain();
        if self.cfg.keep_rollback == KeepRollback::UntilNextSnapshot {
            copy::remove_tree(&restore::rollback_dir(&self.store));
        }
        Ok(meta)
    }

    /// Archive the live store, then pause the writers only for a last pass that reads
    /// again what changed since. Returns what was written and the pause in ms.
    async fn archive_live(
        &self,
        job: &Arc<Job>,
        partial: &Path,
        created: String,
    ) -> Result<(archive::Written, u64, bool), SnapshotError> {
        job.phase("archive");
        let (store, out, comp) = (
            self.store.clone(),
            partial.to_path_buf(),
            self.cfg.compression.clone(),
        );
        let live = self.cfg.quiesce.live_paths.clone();
        let writer = spawn_blocking(move || {
            let mut w = ArchiveWriter::create(&store, &out, &comp, false)?;
            w.allow_changes_under(live);
            Ok(w)
        })
        .await?;
        let (mut writer, _) = run_pass(writer, job).await?;
        self.run_pre().await?;
        // Catch-up passes while the services run, until what is left is small, so that
        // the paused pass has little to read.
        job.phase("catch-up");
        for _ in 0..LIVE_CATCH_UP_PASSES {
            match run_pass(writer, job).await {
                Ok((w, pass)) => {
                    writer = w;
                    if pass.bytes <= SMALL_CATCH_UP_BYTES {
                        break;
                    }
                }
                Err(e) => {
                    self.run_post().await;
                    return Err(e);
                }
            }
        }
        job.phase("quiesce");
        let paused = Instant::now();
        let stopped = match self.stop_services(&self.cfg.quiesce.services).await {
            Ok(stopped) => stopped,
            Err((stopped, e)) => {
                self.resume(&stopped).await;
                return Err(e);
            }
        };
        job.phase("paused-pass");
        let last = run_pass(writer, job).await;
        job.phase("resume");
        self.resume(&stopped).await;
        let (writer, _) = match last {
            Ok(done) => done,
            Err(e) => {
                self.back_up(job, &stopped, paused).await;
                return Err(e);
            }
        };
        job.phase("finish");
        let finish = spawn_blocking(move || writer.finish(&created));
        let (pause_ms, written) = tokio::join!(self.back_up(job, &stopped, paused), finish);
        Ok((written?, pause_ms, false))
    }

    /// Pause the writers for a full copy of the store (a reflink where the file system
    /// can), then archive the copy while the services run.
    async fn archive_copy(
        &self,
        job: &Arc<Job>,
        partial: &Path,
        created: String,
    ) -> Result<(archive::Written, u64, bool), SnapshotError> {
        let staged = self.store.join(format!("{RESERVED_PREFIX}copy-{}", job.id));
        job.phase("quiesce");
        let paused = Instant::now();
        let stopped = self.quiesce().await;
        let copied = match stopped {
            Ok(_) => {
                job.phase("copy");
                let (src, dst, j) = (self.store.clone(), staged.clone(), job.clone());
                spawn_blocking(move || copy::copy_tree(&src, &dst, &j.bytes)).await
            }
            Err(ref e) => Err(SnapshotError::Quiesce(e.to_string())),
        };
        job.phase("resume");
        let stopped = stopped.unwrap_or_default();
        self.resume(&stopped).await;
        let pause_ms = self.back_up(job, &stopped, paused).await;
        let reflinked = match copied {
            Ok(r) => r,
            Err(e) => {
                copy::remove_tree(&staged);
                return Err(self.staging_no_space(e, &staged));
            }
        };
        // In the background of the running services: compress and checksum.
        job.phase("compress");
        let written = {
            let (src, out, j, c) = (
                staged.clone(),
                partial.to_path_buf(),
                job.clone(),
                self.cfg.compression.clone(),
            );
            // Each staged file is deleted once archived (the copy is temporary).
            spawn_blocking(move || archive::write_archive(&src, &out, &c, &created, &j.bytes)).await
        };
        copy::remove_tree(&staged);
        Ok((written?, pause_ms, reflinked))
    }

    /// Wait until every service in `names` is ready again (at most `ready_timeout`), then
    /// record and log the pause that began at `paused`: the time the services were not
    /// serving. Returns it in ms.
    async fn back_up(&self, job: &Job, names: &[String], paused: Instant) -> u64 {
        let deadline = paused + self.cfg.ready_timeout;
        for name in names {
            loop {
                match self.control.info(name).await {
                    Ok(i) if !i.ready && Instant::now() < deadline => {}
                    _ => break,
                }
                tokio::time::sleep(READY_POLL).await;
            }
        }
        let pause_ms = paused.elapsed().as_millis() as u64;
        if !names.is_empty() {
            self.stats.lock().unwrap().quiesce_pauses += 1;
        }
        job.set_pause(pause_ms);
        tracing::info!(job = %job.id, pause_ms, "snapshot: services resumed");
        pause_ms
    }

    /// Rename the finished archive into place and write its metadata, both durably.
    fn publish(&self, partial: &Path, meta: &SnapshotMeta) -> Result<(), SnapshotError> {
        let dir = &self.cfg.archive_dir;
        let archive = self.archive_path_unchecked(&meta.id);
        fs::rename(partial, &archive).map_err(|e| SnapshotError::io(&archive, e))?;
        let m = dir.join(format!("{}.json", meta.id));
        let json = serde_json::to_vec_pretty(meta).expect("meta serializes");
        fsutil::write_atomic(&m, &json, 0o600)
            .map_err(|e| SnapshotError::create(&m, e, json.len() as u64))
    }

    /// The paused copy into `staged` (removed by now) ran out of space or inodes: name the
    /// staging directory, the room a copy of the store takes where nothing is reflinked, and
    /// what the store's file system has free. Other errors pass.
    fn staging_no_space(&self, e: SnapshotError, staged: &Path) -> SnapshotError {
        match e {
            SnapshotError::Io { source, .. } if super::is_no_space(&source) => {
                let usage = copy::tree_usage(&self.store);
                super::no_space_on(staged, &self.store, usage.bytes, usage.inodes)
            }
            other => other,
        }
    }

    /// Delete snapshots beyond `keep`, oldest first.
    fn retain(&self) {
        if self.cfg.keep == 0 {
            return;
        }
        let list = self.list();
        for old in list.iter().skip(self.cfg.keep) {
            tracing::info!(id = %old.id, "snapshot: deleted by retention");
            let _ = self.delete(&old.id);
        }
    }

    /// Run the pre commands and stop the quiesce services; returns those stopped.
    /// On failure everything done so far is undone.
    async fn quiesce(&self) -> Result<Vec<String>, SnapshotError> {
        self.run_pre().await?;
        match self.stop_services(&self.cfg.quiesce.services).await {
            Ok(stopped) => Ok(stopped),
            Err((stopped, e)) => {
                self.resume(&stopped).await;
                Err(e)
            }
        }
    }

    /// Stop the configured services in order; a name the supervisor does not know is
    /// skipped. Returns the stopped ones, or those stopped so far and the error.
    async fn stop_services(
        &self,
        names: &[String],
    ) -> Result<Vec<String>, (Vec<String>, SnapshotError)> {
        let mut stopped = Vec::new();
        for name in names {
            match self.control.stop(name, true).await {
                Ok(()) => stopped.push(name.clone()),
                Err(SuperviseError::BadName(_)) => {
                    tracing::debug!(service = %name, "quiesce: no such service, skipped")
                }
                Err(SuperviseError::NotRunning(_)) => {}
                Err(e) => return Err((stopped, SnapshotError::Quiesce(e.to_string()))),
            }
        }
        Ok(stopped)
    }

    /// Start `stopped` in reverse order, then run the post commands. Errors are logged:
    /// the supervisor keeps retrying services by itself.
    async fn resume(&self, stopped: &[String]) {
        self.start_services(stopped).await;
        self.run_post().await;
    }

    async fn start_services(&self, names: &[String]) {
        for name in names.iter().rev() {
            match self.control.start(name, false).await {
                Ok(()) | Err(SuperviseError::AlreadyStarted(_)) => {}
                Err(e) => tracing::error!(service = %name, error = %e, "cannot restart service"),
            }
        }
    }

    /// The services stopped around a restore: the quiesce services, then those that keep
    /// running through a snapshot (`quiesce.live_services`), whose files the swap replaces.
    fn restore_services(&self) -> Vec<String> {
        let q = &self.cfg.quiesce;
        q.services.iter().chain(&q.live_services).cloned().collect()
    }

    /// The restore services that the supervisor knows, in configured order.
    async fn known_services(&self) -> Vec<String> {
        let mut out = Vec::new();
        for name in &self.restore_services() {
            if self.control.info(name).await.is_ok() {
                out.push(name.clone());
            }
        }
        out
    }

    /// Run the pre commands; when one fails, the post commands run and the error returns.
    async fn run_pre(&self) -> Result<(), SnapshotError> {
        for cmd in &self.cfg.quiesce.pre {
            if let Err(e) = run_command(cmd, self.control.owns_reaping()).await {
                self.run_post().await;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn run_post(&self) {
        for cmd in &self.cfg.quiesce.post {
            if let Err(e) = run_command(cmd, self.control.owns_reaping()).await {
                tracing::error!(error = %e, "quiesce post command failed");
            }
        }
    }

    /// Run a claimed restore job to its end.
    pub async fn run_restore(
        &self,
        job: Arc<Job>,
        source: RestoreSource,
    ) -> Result<(), SnapshotError> {
        let upload = match &source {
            RestoreSource::Upload { path, .. } => Some(path.clone()),
            RestoreSource::Id(_) => None,
        };
        spawn_progress_log(job.clone());
        let result = self.restore_inner(&job, source).await;
        if let Some(p) = upload {
            let _ = fs::remove_file(p);
        }
        let mut st = self.stats.lock().unwrap();
        if result.is_ok() {
            st.restores_ok += 1;
        } else {
            st.restores_failed += 1;
        }
        drop(st);
        job.finish(&result.as_ref().map(|_| ()).map_err(clone_err));
        result
    }

    async fn restore_inner(
        &self,
        job: &Arc<Job>,
        source: RestoreSource,
    ) -> Result<(), SnapshotError> {
        let (archive, sha) = match source {
            RestoreSource::Id(id) => {
                let meta = self.get(&id)?;
                job.set_snapshot(&id);
                self.check_space(meta.total_bytes, meta.entries as u64)?;
                (self.archive_path(&id)?, Some(meta.sha256))
            }
            RestoreSource::Upload { path, sha256 } => (path, sha256),
        };
        if !self.store.is_dir() {
            return Err(SnapshotError::Other(format!(
                "{}: store is not a directory",
                self.store.display()
            )));
        }
        job.phase("verify");
        let staging = self
            .store
            .join(format!("{RESERVED_PREFIX}restore-{}", job.id));
        let verified = {
            let (a, s, l, j) = (
                archive.clone(),
                staging.clone(),
                self.cfg.limits.clone(),
                job.clone(),
            );
            spawn_blocking(move || verify::extract_verified(&a, &s, &l, sha.as_deref(), &j.bytes))
                .await
        };
        if let Err(e) = verified {
            copy::remove_tree(&staging);
            return Err(e);
        }

        job.phase("stop");
        if let Err((s, e)) = self.stop_services(&self.restore_services()).await {
            self.start_services(&s).await;
            copy::remove_tree(&staging);
            return Err(e);
        }
        // After the swap every configured service the supervisor knows is started and
        // awaited, including ones that were not running before (a fresh, empty store).
        let stopped = self.known_services().await;
        job.phase("swap");
        let store = self.store.clone();
        let swapped = {
            let (st, sg) = (store.clone(), staging.clone());
            spawn_blocking(move || restore::swap_in(&st, &sg)).await
        };
        if let Err(e) = swapped {
            copy::remove_tree(&staging);
            self.start_services(&stopped).await;
            return Err(SnapshotError::RolledBack(e.to_string()));
        }
        job.phase("start");
        self.start_services(&stopped).await;
        job.phase("wait-ready");
        if let Err(not_ready) = self.wait_ready(&stopped).await {
            job.phase("rollback");
            let _ = self.stop_services(&self.restore_services()).await;
            let st = store.clone();
            let back = spawn_blocking(move || restore::swap_back(&st)).await;
            self.start_services(&stopped).await;
            return Err(match back {
                Ok(()) => SnapshotError::RolledBack(not_ready),
                Err(e) => SnapshotError::Other(format!(
                    "{not_ready}; and putting the old store back failed: {e}"
                )),
            });
        }
        restore::commit(&store, self.cfg.keep_rollback)?;
        Ok(())
    }

    /// Wait until every restarted service and the supervisor as a whole are ready.
    async fn wait_ready(&self, services: &[String]) -> Result<(), String> {
        let deadline = Instant::now() + self.cfg.ready_timeout;
        loop {
            let mut waiting = Vec::new();
            for name in services {
                match self.control.info(name).await {
                    Ok(i) if i.ready => {}
                    _ => waiting.push(name.clone()),
                }
            }
            if waiting.is_empty() && self.control.all_ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not ready within {}: {}",
                    humantime::format_duration(self.cfg.ready_timeout),
                    if waiting.is_empty() {
                        "required services".into()
                    } else {
                        waiting.join(", ")
                    }
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A restore needs room for the whole tree beside the store until the swap: its bytes
    /// and an inode per entry.
    fn check_space(&self, needed: u64, entries: u64) -> Result<(), SnapshotError> {
        let Some(free) = super::free_space(&self.store) else {
            return Ok(()); // the extraction reports it if it matters
        };
        if free.bytes < needed || free.lacks_inodes(entries) {
            return Err(super::no_space_with(
                &self.store,
                Some(free),
                needed,
                entries,
            ));
        }
        Ok(())
    }

    fn archive_path_unchecked(&self, id: &str) -> PathBuf {
        self.cfg.archive_dir.join(format!("{id}.tar.zst"))
    }

    /// The archive file of an existing snapshot.
    pub fn archive_path(&self, id: &str) -> Result<PathBuf, SnapshotError> {
        check_id(id)?;
        let p = self.archive_path_unchecked(id);
        if p.is_file() {
            Ok(p)
        } else {
            Err(SnapshotError::NotFound(id.to_string()))
        }
    }

    /// Snapshots, newest first.
    pub fn list(&self) -> Vec<SnapshotMeta> {
        let mut out: Vec<SnapshotMeta> = fs::read_dir(&self.cfg.archive_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<SnapshotMeta>(&b).ok())
            .filter(|m| self.archive_path_unchecked(&m.id).is_file())
            .collect();
        // Newest first; within one second the nanosecond time in the id decides.
        out.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
        out
    }

    pub fn get(&self, id: &str) -> Result<SnapshotMeta, SnapshotError> {
        check_id(id)?;
        let p = self.cfg.archive_dir.join(format!("{id}.json"));
        let bytes = fs::read(&p).map_err(|_| SnapshotError::NotFound(id.to_string()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| SnapshotError::Other(format!("{}: {e}", p.display())))
    }

    pub fn delete(&self, id: &str) -> Result<(), SnapshotError> {
        self.get(id)?;
        let m = self.cfg.archive_dir.join(format!("{id}.json"));
        // Metadata first: a snapshot without metadata is not listed.
        fs::remove_file(&m).map_err(|e| SnapshotError::io(&m, e))?;
        let a = self.archive_path_unchecked(id);
        let _ = fs::remove_file(&a);
        fsutil::fsync_dir(&self.cfg.archive_dir).map_err(|e| SnapshotError::io(&a, e))
    }

    /// A fresh path in the archive directory for an upload.
    pub fn upload_path(&self, job: &Job) -> Result<PathBuf, SnapshotError> {
        let dir = &self.cfg.archive_dir;
        super::private_dir(dir)?;
        Ok(dir.join(format!(".upload-{}.partial", job.id)))
    }
}

/// Log the job's progress every few seconds while it runs (the same figures as /status).
fn spawn_progress_log(job: Arc<Job>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let info = job.info();
            if info.state != super::JobState::Running {
                return;
            }
            tracing::info!(
                job = %info.id, phase = %info.phase, bytes = info.bytes,
                rate_mib_s = info.rate as f64 / 1048576.0, "progress"
            );
        }
    });
}

/// How often a resumed service's readiness is looked at to end the pause.
const READY_POLL: Duration = Duration::from_millis(10);

/// Catch-up passes over the live store before the pause, at most.
const LIVE_CATCH_UP_PASSES: usize = 3;
/// A catch-up pass that read no more than this leaves little enough for the pause.
const SMALL_CATCH_UP_BYTES: u64 = 64 << 20;

/// One archive pass on a blocking thread; the writer comes back with what the pass read.
async fn run_pass(
    mut writer: ArchiveWriter,
    job: &Arc<Job>,
) -> Result<(ArchiveWriter, archive::Pass), SnapshotError> {
    let j = job.clone();
    spawn_blocking(move || {
        let t = Instant::now();
        let pass = writer.pass(&j.bytes)?;
        tracing::info!(
            job = %j.id, entries = pass.entries, bytes = pass.bytes,
            ms = t.elapsed().as_millis() as u64, "snapshot: archive pass"
        );
        Ok((writer, pass))
    })
    .await
}

async fn spawn_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SnapshotError> + Send + 'static,
) -> Result<T, SnapshotError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(SnapshotError::Other(format!("worker panicked: {e}"))))
}

/// How long one quiesce command may run before its process group is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// Run one quiesce command; non-zero exit is an error naming the command. Under the
/// supervisor the reaper owns `waitpid`, so the command goes through it.
async fn run_command(argv: &[String], via_reaper: bool) -> Result<(), SnapshotError> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| SnapshotError::Quiesce("empty command".into()))?;
    let failed = |e: std::io::Error| SnapshotError::Quiesce(format!("{prog}: {e}"));
    let out = if via_reaper {
        let mut cmd = std::process::Command::new(prog);
        cmd.args(args);
        crate::pid1::output(&mut cmd, Some(COMMAND_TIMEOUT))
            .await
            .map_err(failed)?
    } else {
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args).kill_on_drop(true);
        tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
            .await
            .map_err(|_| SnapshotError::Quiesce(format!("{prog}: timed out")))?
            .map_err(failed)?
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(SnapshotError::Quiesce(format!(
            "{prog} failed ({}): {}",
            out.status,
            err.trim()
        )));
    }
    Ok(())
}

/// `SnapshotError` holds io::Error, which is not Clone; the job record needs only text.
pub fn clone_err(e: &SnapshotError) -> SnapshotError {
    match e {
        SnapshotError::RolledBack(m) => SnapshotError::RolledBack(m.clone()),
        other => SnapshotError::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    /// Retention deletes the oldest by this order, so it must hold within one second too.
    #[test]
    fn ids_sort_in_creation_order_within_one_second() {
        let ids: Vec<String> = (0..50).map(|_| super::new_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}

//! The job registry: at most one snapshot or restore runs at a time; every job's phase and
//! progress (bytes, rate) is visible to `/status`, and the last few finished jobs are kept.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::SnapshotError;

const KEEP_FINISHED: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Snapshot,
    Restore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    RolledBack,
}

/// A job as reported by the API.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    pub id: String,
    pub kind: JobKind,
    pub state: JobState,
    /// What it is doing now (`quiesce`, `copy`, `compress`, `verify`, `swap`, `wait-ready`...).
    pub phase: String,
    /// Bytes processed in the current phase.
    pub bytes: u64,
    /// Bytes per second over the current phase.
    pub rate: u64,
    /// Unix seconds.
    pub started: u64,
    pub finished: Option<u64>,
    /// How long services were paused, in milliseconds.
    pub pause_ms: Option<u64>,
    /// The snapshot this job made or restored.
    pub snapshot: Option<String>,
    pub error: Option<String>,
}

/// A running job's live counters, shared with the worker.
pub struct Job {
    pub id: String,
    pub kind: JobKind,
    pub bytes: AtomicU64,
    inner: Mutex<JobMut>,
    registry: Jobs,
}

struct JobMut {
    info: JobInfo,
    phase_start: Instant,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Job {
    /// Enter a new phase; resets the byte counter.
    pub fn phase(&self, phase: &str) {
        let mut m = self.inner.lock().unwrap();
        m.info.phase = phase.to_string();
        m.phase_start = Instant::now();
        self.bytes.store(0, Ordering::Relaxed);
        tracing::info!(job = %self.id, phase, "{:?} job phase", self.kind);
    }

    pub fn set_pause(&self, ms: u64) {
        self.inner.lock().unwrap().info.pause_ms = Some(ms);
    }

    pub fn set_snapshot(&self, id: &str) {
        self.inner.lock().unwrap().info.snapshot = Some(id.to_string());
    }

    pub fn info(&self) -> JobInfo {
        let m = self.inner.lock().unwrap();
        let mut info = m.info.clone();
        info.bytes = self.bytes.load(Ordering::Relaxed);
        let secs = m.phase_start.elapsed().as_secs_f64();
        info.rate = if secs > 0.0 {
            (info.bytes as f64 / secs) as u64
        } else {
            0
        };
        info
    }

    /// Record the outcome and free the slot for the next job.
    pub fn finish(&self, result: &Result<(), SnapshotError>) -> JobInfo {
        {
            let mut m = self.inner.lock().unwrap();
            m.info.finished = Some(now_secs());
            match result {
                Ok(()) => {
                    m.info.state = JobState::Succeeded;
                    m.info.phase = "done".into();
                }
                Err(e) => {
                    m.info.state = match e {
                        SnapshotError::RolledBack(_) => JobState::RolledBack,
                        _ => JobState::Failed,
                    };
                    m.info.error = Some(e.to_string());
                }
            }
        }
        let info = self.info();
        let mut reg = self.registry.0.lock().unwrap();
        reg.running = None;
        reg.finished.push_back(info.clone());
        while reg.finished.len() > KEEP_FINISHED {
            reg.finished.pop_front();
        }
        match &info.error {
            None => tracing::info!(job = %info.id, "{:?} job succeeded", info.kind),
            Some(e) => tracing::error!(job = %info.id, error = %e, "{:?} job failed", info.kind),
        }
        info
    }
}

#[derive(Default)]
struct Registry {
    running: Option<Arc<Job>>,
    finished: VecDeque<JobInfo>,
}

/// Shared registry of jobs.
#[derive(Clone, Default)]
pub struct Jobs(Arc<Mutex<Registry>>);

impl Jobs {
    /// Claim the single job slot, or `Busy`.
    pub fn begin(&self, kind: JobKind, id: String) -> Result<Arc<Job>, SnapshotError> {
        let mut reg = self.0.lock().unwrap();
        if let Some(j) = &reg.running {
            return Err(SnapshotError::Busy(
                format!("{:?} {}", j.kind, j.id).to_lowercase(),
            ));
        }
        let job = Arc::new(Job {
            id: id.clone(),
            kind,
            bytes: AtomicU64::new(0),
            inner: Mutex::new(JobMut {
                info: JobInfo {
                    id,
                    kind,
                    state: JobState::Running,
                    phase: "starting".into(),
                    bytes: 0,
                    rate: 0,
                    started: now_secs(),
                    finished: None,
                    pause_ms: None,
                    snapshot: None,
                    error: None,
                },
                phase_start: Instant::now(),
            }),
            registry: self.clone(),
        });
        reg.running = Some(job.clone());
        Ok(job)
    }

    /// The running job (if any) followed by finished ones, newest first.
    pub fn list(&self) -> Vec<JobInfo> {
        let reg = self.0.lock().unwrap();
        let running = reg.running.clone();
        let mut out: Vec<JobInfo> = reg.finished.iter().rev().cloned().collect();
        drop(reg);
        if let Some(j) = running {
            out.insert(0, j.info());
        }
        out
    }

    pub fn get(&self, id: &str) -> Option<JobInfo> {
        self.list().into_iter().find(|j| j.id == id)
    }

    pub fn busy(&self) -> bool {
        self.0.lock().unwrap().running.is_some()
    }
}

//! The recovery journal: one JSON file holding everything found, decided and done, written
//! atomically and fsynced (cfy_init::fsutil::write_atomic) before every mutating call, so
//! `resume` can pick up after a crash at any instant. Also the state-directory lock.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const JOURNAL_VERSION: u32 = 1;
pub const JOURNAL_FILE: &str = "journal.json";

/// The steps, in order. Each one first looks at the cloud and only acts when its effect is
/// not there yet, so running a step twice is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Snapshot,
    DisassociateFloatingIp,
    DetachVolumes,
    DetachPorts,
    DeleteServer,
    WaitReleased,
    PreparePorts,
    CreateServer,
    WaitActive,
    AttachVolumes,
    AssociateFloatingIp,
    WaitReady,
    Restore,
    CheckReady,
}

impl Step {
    pub const ALL: [Step; 14] = [
        Step::Snapshot,
        Step::DisassociateFloatingIp,
        Step::DetachVolumes,
        Step::DetachPorts,
        Step::DeleteServer,
        Step::WaitReleased,
        Step::PreparePorts,
        Step::CreateServer,
        Step::WaitActive,
        Step::AttachVolumes,
        Step::AssociateFloatingIp,
        Step::WaitReady,
        Step::Restore,
        Step::CheckReady,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Snapshot => "snapshot",
            Step::DisassociateFloatingIp => "disassociate-floating-ip",
            Step::DetachVolumes => "detach-volumes",
            Step::DetachPorts => "detach-ports",
            Step::DeleteServer => "delete-server",
            Step::WaitReleased => "wait-released",
            Step::PreparePorts => "prepare-ports",
            Step::CreateServer => "create-server",
            Step::WaitActive => "wait-active",
            Step::AttachVolumes => "attach-volumes",
            Step::AssociateFloatingIp => "associate-floating-ip",
            Step::WaitReady => "wait-ready",
            Step::Restore => "restore",
            Step::CheckReady => "check-ready",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    Pending,
    Running,
    Done,
    Skipped,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: Step,
    pub state: StepState,
    /// Times the step was started (more than 1 after a resume or retry).
    pub attempts: u32,
    /// Time spent in the step over all attempts.
    pub duration_ms: u64,
    /// What the step found or did, one line.
    pub note: String,
    /// cfy-recover's own CPU time in the step (user + system), over all attempts.
    #[serde(default)]
    pub cpu_ms: u64,
    /// Upper bound of the time between the cloud finishing a transition and the step
    /// noticing it (the last poll interval of each wait), over all attempts.
    #[serde(default)]
    pub slack_ms: u64,
}

/// One attempt of one step, in the order they ran (over every `recover` and `resume`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub step: Step,
    /// Unix milliseconds.
    pub started_at_ms: u64,
    /// `None` while running, or when the process died in it.
    pub duration_ms: Option<u64>,
    /// `done`, `skipped`, `failed: ...`, or empty while running.
    pub outcome: String,
}

/// The old server as found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OldServer {
    pub id: String,
    pub name: String,
    pub status: String,
    pub host_status: Option<String>,
}

/// What the new server is booted with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerSpec {
    pub name: String,
    pub flavor_id: String,
    pub image_id: String,
    pub key_name: Option<String>,
    pub security_groups: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// Base64, as Nova shows and takes it.
    pub user_data: Option<String>,
    pub availability_zone: Option<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortRecord {
    /// The port the old server had.
    pub id: String,
    pub network_id: String,
    pub fixed_ips: Vec<crate::cloud::models::FixedIp>,
    pub security_groups: Vec<String>,
    /// Created by Nova during boot: deleted with the server, replaced by a new port.
    pub nova_created: bool,
    /// The port the new server gets: `id`, or the replacement port once created.
    pub new_id: Option<String>,
    /// The replacement must have the same fixed IP(s) (the port was deleted with the server
    /// already gone): no other address is asked for.
    #[serde(default)]
    pub keep_ip: bool,
}

impl PortRecord {
    pub fn target(&self) -> Option<&str> {
        if self.nova_created {
            self.new_id.as_deref()
        } else {
            Some(&self.id)
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub id: String,
    pub device: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloatingIpRecord {
    pub id: String,
    pub address: String,
    /// The old port it was bound to (index into `ports` by id).
    pub port_id: String,
    pub fixed_ip: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotMode {
    /// Take one if the manager answers, else go on with the volume alone.
    Auto,
    /// Take one; fail (before any change) when the manager does not answer.
    Required,
    /// Use this verified file.
    File,
    /// Do not restore anything: the volume alone.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub mode: SnapshotMode,
    /// The archive to restore, once there is one.
    pub path: Option<PathBuf>,
    pub sha256: Option<String>,
    /// The Swift container of the manager's off-host copies (cfy-init's
    /// `snapshot.remote.container`): when the manager does not answer, the newest copy there
    /// is restored instead of recovering with the volume alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// How to reach the manager's hooks API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManagerTarget {
    pub url: String,
    pub token_file: Option<PathBuf>,
    pub ready_timeout_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub version: u32,
    pub run_id: String,
    /// Unix seconds.
    pub started_at: u64,
    pub os_cloud: Option<String>,
    pub old_server: OldServer,
    pub spec: ServerSpec,
    /// Tag put on the new server (recorded before the create call), how resume finds it.
    pub new_server_tag: String,
    pub new_server_id: Option<String>,
    pub ports: Vec<PortRecord>,
    pub volumes: Vec<VolumeRecord>,
    pub floating_ips: Vec<FloatingIpRecord>,
    pub snapshot: SnapshotRecord,
    pub manager: ManagerTarget,
    pub steps: Vec<StepRecord>,
    pub finished: bool,
    pub last_error: Option<String>,
    /// The inventory file given to `recover --inventory`, refreshed when the run finishes
    /// (besides the state directory's own).
    #[serde(default)]
    pub inventory_file: Option<PathBuf>,
    /// Every step attempt, over every run of this journal.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{}: cannot write the journal: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot read the journal: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{}: another cfy-recover is running with this state directory (or remove a stale lock after checking)", path.display())]
    Locked { path: PathBuf },
}

impl Journal {
    pub fn step(&self, step: Step) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.step == step)
    }

    pub fn step_mut(&mut self, step: Step) -> &mut StepRecord {
        self.steps
            .iter_mut()
            .find(|s| s.step == step)
            .expect("every step has a record")
    }

    /// The first step that is not done or skipped.
    pub fn next_step(&self) -> Option<Step> {
        self.steps
            .iter()
            .find(|s| !matches!(s.state, StepState::Done | StepState::Skipped))
            .map(|s| s.step)
    }

    pub fn fresh_steps() -> Vec<StepRecord> {
        Step::ALL
            .iter()
            .map(|&step| StepRecord {
                step,
                state: StepState::Pending,
                attempts: 0,
                duration_ms: 0,
                note: String::new(),
                cpu_ms: 0,
                slack_ms: 0,
            })
            .collect()
    }

    /// Write atomically and durably: temp file, fsync, rename, fsync dir.
    pub fn save(&self, path: &Path) -> Result<(), JournalError> {
        let text = serde_json::to_vec_pretty(self).expect("journal serializes");
        cfy_init::fsutil::write_atomic(path, &text, 0o600).map_err(|source| JournalError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn load(path: &Path) -> Result<Option<Journal>, JournalError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(JournalError::Read {
                    path: path.into(),
                    reason: e.to_string(),
                })
            }
        };
        let j: Journal = serde_json::from_slice(&text).map_err(|e| JournalError::Read {
            path: path.into(),
            reason: e.to_string(),
        })?;
        if j.version != JOURNAL_VERSION {
            return Err(JournalError::Read {
                path: path.into(),
                reason: format!("version {} (this tool writes {JOURNAL_VERSION})", j.version),
            });
        }
        Ok(Some(j))
    }
}

/// An exclusive lock on the state directory for the life of the value.
pub struct StateLock {
    _lock: nix::fcntl::Flock<File>,
}

pub fn lock_state_dir(dir: &Path) -> Result<StateLock, JournalError> {
    let path = dir.join("lock");
    let write_err = |source| JournalError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(write_err)?;
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(write_err)?;
    let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| JournalError::Locked { path: path.clone() })?;
    // Who holds it, for `status` (the lock itself is what counts: it dies with the process).
    {
        use std::io::{Seek, Write};
        let mut f: &File = &lock;
        let _ = f.set_len(0);
        let _ = f.seek(std::io::SeekFrom::Start(0));
        let _ = writeln!(f, "{}", std::process::id());
        let _ = f.sync_data();
    }
    Ok(StateLock { _lock: lock })
}

/// The pid of the live cfy-recover holding the state directory's lock, if one does (a
/// process killed with `kill -9` holds nothing: the kernel dropped its lock).
pub fn lock_holder(dir: &Path) -> Option<u32> {
    let path = dir.join("lock");
    let f = File::options().write(true).open(&path).ok()?;
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_free) => None,
        Err(_) => std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .or(Some(0)),
    }
}

/// Where state lives by default: `$XDG_STATE_HOME/cfy-recover` or `~/.local/state/cfy-recover`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("cfy-recover");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".local/state/cfy-recover")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_match_serde() {
        for s in Step::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(lock_holder(dir.path()), None, "no lock file: nobody");
        let a = lock_state_dir(dir.path()).unwrap();
        assert_eq!(lock_holder(dir.path()), Some(std::process::id()));
        assert!(matches!(
            lock_state_dir(dir.path()),
            Err(JournalError::Locked { .. })
        ));
        drop(a);
        assert_eq!(lock_holder(dir.path()), None, "released: nobody");
    }
}

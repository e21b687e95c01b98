//! The manager's side of a recovery: the snapshot (taken from the manager, given as a file, or
//! its newest off-host copy fetched from Swift), and after the rebuild its readiness, the
//! restore and the final check, all through cfy-init's hooks API.

use std::time::Duration;

use super::{done, skipped, FlowError, Outcome, Runner};
use crate::journal::SnapshotMode;
use crate::manager::{self, Manager};

impl Runner<'_> {
    fn manager(&self) -> Result<Manager, FlowError> {
        Ok(Manager::new(
            &self.journal.manager.url,
            self.journal.manager.token_file.as_deref(),
        )?)
    }

    pub(super) async fn snapshot(&mut self) -> Result<Outcome, FlowError> {
        let snap = self.journal.snapshot.clone();
        if let (Some(path), Some(sha)) = (&snap.path, &snap.sha256) {
            let actual = manager::sha256_file(path).map_err(|e| {
                FlowError::Unsafe(format!(
                    "{}: snapshot archive unreadable: {e}",
                    path.display()
                ))
            })?;
            if &actual != sha {
                return Err(FlowError::Unsafe(format!(
                    "{}: snapshot archive changed since it was verified (sha256 {actual}, expected {sha})",
                    path.display()
                )));
            }
            return done(format!("archive {} verified", path.display()));
        }
        if snap.mode == SnapshotMode::None {
            return skipped("no snapshot requested: the volume alone carries the data");
        }
        let m = self.manager()?;
        if !m.alive().await {
            if snap.mode == SnapshotMode::Required {
                return Err(FlowError::Unsafe(format!(
                    "the manager at {} stopped answering before the snapshot; nothing was changed: pass --snapshot FILE or run without --take-snapshot",
                    m.url
                )));
            }
            if let Some(container) = snap.remote.clone() {
                return self.fetch_remote_snapshot(&m.url, &container).await;
            }
            return skipped(format!(
                "the manager at {} does not answer: recovering with the volume alone",
                m.url
            ));
        }
        let dest = self
            .state_dir
            .join(format!("snapshot-{}.archive", self.journal.run_id));
        let timeout = Duration::from_secs(self.journal.manager.ready_timeout_s);
        let reported = m.take_snapshot(&dest, timeout).await?;
        let info = manager::verify_archive(&dest, &self.state_dir)?;
        if !reported.is_empty() && reported != info.sha256 {
            return Err(FlowError::Unsafe(format!(
                "{}: downloaded archive has sha256 {}, the manager reported {reported}: run resume to download again",
                dest.display(),
                info.sha256
            )));
        }
        self.journal.snapshot.path = Some(dest.clone());
        self.journal.snapshot.sha256 = Some(info.sha256);
        self.save()?;
        done(format!(
            "took snapshot {} ({} bytes, {} entries)",
            dest.display(),
            info.bytes,
            info.entries
        ))
    }

    /// The manager cannot take a snapshot: download its newest off-host copy from Swift
    /// (checked against the sha256 stored at upload), verify it as an archive, and restore
    /// that. No copy at all goes on with the volume alone; a container that cannot be read
    /// stops before any change (the copy may well be there: resume once Swift answers).
    async fn fetch_remote_snapshot(
        &mut self,
        manager_url: &str,
        container: &str,
    ) -> Result<Outcome, FlowError> {
        let unreadable = |e: cfy_openstack::swift::SwiftError| {
            FlowError::Unsafe(format!(
                "the manager at {manager_url} does not answer and its off-host copies in swift://{container} cannot be read: {e}; nothing was changed: run resume once Swift answers, or recover without --remote-snapshots to use the volume alone"
            ))
        };
        let swift = self.cloud.swift().map_err(unreadable)?;
        let Some(newest) = swift.newest_snapshot(container).await.map_err(unreadable)? else {
            return skipped(format!(
                "the manager at {manager_url} does not answer and swift://{container} holds no snapshot: recovering with the volume alone"
            ));
        };
        let dest = self
            .state_dir
            .join(format!("snapshot-{}.archive", self.journal.run_id));
        swift
            .download(container, &newest.name, &dest)
            .await
            .map_err(unreadable)?;
        let info = manager::verify_archive(&dest, &self.state_dir)?;
        self.journal.snapshot.path = Some(dest.clone());
        self.journal.snapshot.sha256 = Some(info.sha256);
        self.save()?;
        done(format!(
            "the manager at {manager_url} does not answer: restoring its newest off-host copy swift://{container}/{} ({} bytes, {} entries)",
            newest.name, info.bytes, info.entries
        ))
    }

    /// The manager URL: the journal's, with the fixed IP refreshed when the port was replaced.
    fn manager_after(&self) -> Result<Manager, FlowError> {
        self.manager()
    }

    pub(super) async fn wait_ready(&mut self) -> Result<Outcome, FlowError> {
        let m = self.manager_after()?;
        m.wait_ready(Duration::from_secs(self.journal.manager.ready_timeout_s))
            .await?;
        done(format!("{} ready", m.url))
    }

    pub(super) async fn restore(&mut self) -> Result<Outcome, FlowError> {
        let Some(path) = self.journal.snapshot.path.clone() else {
            return skipped("no snapshot: the volume alone carries the data");
        };
        let sha = self.journal.snapshot.sha256.clone().unwrap_or_default();
        {
            let actual = manager::sha256_file(&path).map_err(|e| {
                FlowError::Unsafe(format!(
                    "{}: snapshot archive unreadable: {e}",
                    path.display()
                ))
            })?;
            if actual != sha {
                return Err(FlowError::Unsafe(format!(
                    "{}: snapshot archive changed since it was verified",
                    path.display()
                )));
            }
        }
        let m = self.manager_after()?;
        let timeout = Duration::from_secs(self.journal.manager.ready_timeout_s);
        m.restore(&path, &sha, timeout).await?;
        done(format!("restored {}", path.display()))
    }

    pub(super) async fn check_ready(&mut self) -> Result<Outcome, FlowError> {
        let m = self.manager_after()?;
        m.wait_ready(Duration::from_secs(self.journal.manager.ready_timeout_s))
            .await?;
        done(format!("{} ready after restore", m.url))
    }
}

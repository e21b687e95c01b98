//! Start, stop and signal: one process, a group, or all (supervisord's `make_allfunc`,
//! results in completion order), with its fault for each failure.

use super::*;

impl Rpc {
    pub(super) async fn start_process(&self, name: &str, wait: bool) -> RpcResult {
        let info = match self.resolve(name).await? {
            (group, None) => return self.start_group(&group, wait).await,
            (_, Some(info)) => info,
        };
        if let Some(spec) = self.spec_of(&info.name) {
            check_command(&spec)?;
        }
        if RUNNING_STATES.contains(&info.state) {
            return Err(Fault::with(faults::ALREADY_STARTED, name));
        }
        if info.state == ProcessState::Unknown {
            return Err(Fault::with(
                faults::FAILED,
                format!("{name} is in an unknown process state"),
            ));
        }
        let first_failure = self.first_failed_attempt(&info.name);
        tokio::select! {
            r = self.handle.start(&info.name, wait) => if let Err(e) = r {
                return Err(self.start_fault(e, &info.name, name).await);
            },
            // supervisord answers at the first failed attempt, not after all retries.
            () = first_failure, if wait => return Err(Fault::with(faults::SPAWN_ERROR, name)),
        }
        Ok(Value::Bool(true))
    }

    /// A failed start as supervisord reports it: SPAWN_ERROR whenever the process has a
    /// spawn error (exec failure, or "Exited too quickly"), else ABNORMAL_TERMINATION.
    pub(super) async fn start_fault(&self, e: SuperviseError, process: &str, name: &str) -> Fault {
        // supervisord sets `spawnerr` for exec failures and for exits before `startsecs`,
        // i.e. whenever a start attempt ends in BACKOFF or FATAL.
        let spawnerr = self
            .handle
            .info(process)
            .await
            .map(|i| matches!(i.state, ProcessState::Backoff | ProcessState::Fatal))
            .unwrap_or(false);
        match e {
            SuperviseError::SpawnError { .. } => Fault::with(faults::SPAWN_ERROR, name),
            SuperviseError::AbnormalTermination(_) | SuperviseError::Failed(_) if spawnerr => {
                Fault::with(faults::SPAWN_ERROR, name)
            }
            SuperviseError::AbnormalTermination(_) | SuperviseError::Failed(_) => {
                Fault::with(faults::ABNORMAL_TERMINATION, name)
            }
            other => fault_of(other, name),
        }
    }

    /// Resolves when `name` backs off after a failed start attempt (a spawn error or an
    /// exit before `startsecs`); never otherwise.
    pub(super) async fn first_failed_attempt(&self, name: &str) {
        let mut changed = self.handle.subscribe();
        // The caller checked the process is not in BACKOFF before starting it, so any
        // BACKOFF seen from now on is this start failing.
        loop {
            match self.handle.info(name).await {
                Ok(i) if i.state == ProcessState::Backoff => return,
                Ok(_) => {}
                Err(_) => return std::future::pending().await,
            }
            if changed.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    pub(super) async fn stop_process(&self, name: &str, wait: bool) -> RpcResult {
        let info = match self.resolve(name).await? {
            (group, None) => return self.stop_group(&group, wait).await,
            (_, Some(info)) => info,
        };
        if !RUNNING_STATES.contains(&info.state) {
            return Err(Fault::with(faults::NOT_RUNNING, name));
        }
        self.handle
            .stop(&info.name, wait)
            .await
            .map_err(|e| fault_of(e, name))?;
        Ok(Value::Bool(true))
    }

    pub(super) async fn signal_process(&self, name: &str, signal: &str) -> RpcResult {
        let info = match self.resolve(name).await? {
            (group, None) => return self.signal_group(&group, signal).await,
            (_, Some(info)) => info,
        };
        let sig =
            values::signal_name(signal).map_err(|_| Fault::with(faults::BAD_SIGNAL, signal))?;
        if !SIGNALLABLE_STATES.contains(&info.state) {
            return Err(Fault::with(faults::NOT_RUNNING, name));
        }
        self.handle
            .signal(&info.name, &sig)
            .await
            .map_err(|e| fault_of(e, name))?;
        Ok(Value::Bool(true))
    }

    pub(super) async fn start_group(&self, group: &str, wait: bool) -> RpcResult {
        self.group_exists(group).await?;
        self.start_members(Some(group), wait).await
    }

    pub(super) async fn start_all(&self, wait: bool) -> RpcResult {
        self.start_members(None, wait).await
    }

    /// Start every process of `group` (all processes for `None`) that is not running.
    pub(super) async fn start_members(&self, group: Option<&str>, wait: bool) -> RpcResult {
        let procs = self.members(group).await;
        Ok(self
            .for_each(
                procs,
                |i| !RUNNING_STATES.contains(&i.state),
                |n| async move { self.start_process(&n, wait).await },
            )
            .await)
    }

    pub(super) async fn stop_group(&self, group: &str, wait: bool) -> RpcResult {
        self.group_exists(group).await?;
        self.stop_members(Some(group), wait).await
    }

    pub(super) async fn stop_all(&self, wait: bool) -> RpcResult {
        self.stop_members(None, wait).await
    }

    /// Stop every running process of `group` (all processes for `None`).
    pub(super) async fn stop_members(&self, group: Option<&str>, wait: bool) -> RpcResult {
        let procs = self.members(group).await;
        Ok(self
            .for_each(
                procs,
                |i| RUNNING_STATES.contains(&i.state),
                |n| async move { self.stop_process(&n, wait).await },
            )
            .await)
    }

    pub(super) async fn signal_group(&self, group: &str, signal: &str) -> RpcResult {
        self.group_exists(group).await?;
        self.signal_members(Some(group), signal).await
    }

    pub(super) async fn signal_all(&self, signal: &str) -> RpcResult {
        self.signal_members(None, signal).await
    }

    /// Signal every signallable process of `group` (all processes for `None`).
    pub(super) async fn signal_members(&self, group: Option<&str>, signal: &str) -> RpcResult {
        let procs = self.members(group).await;
        let signal = signal.to_string();
        Ok(self
            .for_each(
                procs,
                |i| SIGNALLABLE_STATES.contains(&i.state),
                |n| {
                    let signal = signal.clone();
                    async move { self.signal_process(&n, &signal).await }
                },
            )
            .await)
    }

    pub(super) async fn group_exists(&self, group: &str) -> Result<(), Fault> {
        if self.program_infos().await.iter().any(|i| i.group == group) {
            Ok(())
        } else {
            Err(Fault::with(faults::BAD_NAME, group))
        }
    }

    /// supervisord's `make_allfunc`: run `f` on every process matching `pred` (all at
    /// once, like its deferred callbacks) and report `{name, group, status, description}`
    /// in the order they finish, as supervisord does (supervisorctl prints them so, and its
    /// exit status comes from them).
    pub(super) async fn for_each<F, Fut>(
        &self,
        procs: Vec<ServiceInfo>,
        pred: impl Fn(&ServiceInfo) -> bool,
        f: F,
    ) -> Value
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = RpcResult>,
    {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        let chosen: Vec<ServiceInfo> = procs.into_iter().filter(|i| pred(i)).collect();
        let outcomes: Vec<(usize, RpcResult)> = chosen
            .iter()
            .enumerate()
            .map(|(k, i)| {
                let fut = f(make_namespec(&i.group, &i.name));
                async move { (k, fut.await) }
            })
            .collect::<FuturesUnordered<_>>()
            .collect()
            .await;
        Value::Array(
            outcomes
                .into_iter()
                .map(|(k, r)| {
                    let i = &chosen[k];
                    let (status, description) = match r {
                        Ok(_) => (faults::SUCCESS, "OK".to_string()),
                        Err(f) => (f.code, f.text),
                    };
                    Value::structure([
                        ("name", Value::str(&i.name)),
                        ("group", Value::str(&i.group)),
                        ("status", Value::Int(status.into())),
                        ("description", Value::Str(description)),
                    ])
                })
                .collect(),
        )
    }
}

/// supervisord checks the command exists before spawning (`NO_FILE` / `NOT_EXECUTABLE`).
pub(super) fn check_command(spec: &ServiceSpec) -> Result<(), Fault> {
    use std::os::unix::fs::PermissionsExt;
    if spec.shell {
        return Ok(());
    }
    let Some(program) = spec.command.first() else {
        return Err(Fault::with(faults::NOT_EXECUTABLE, "command is empty"));
    };
    let found: Option<PathBuf> = if program.contains('/') {
        Some(PathBuf::from(program)).filter(|p| p.exists())
    } else {
        let path = spec
            .env
            .get("PATH")
            .cloned()
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_default();
        path.split(':')
            .map(|d| Path::new(d).join(program))
            .find(|p| p.exists())
    };
    let Some(file) = found else {
        return Err(Fault::with(
            faults::NO_FILE,
            format!("can't find command '{program}'"),
        ));
    };
    let meta = std::fs::metadata(&file).map_err(|_| {
        Fault::with(
            faults::NOT_EXECUTABLE,
            format!("command at '{program}' is not executable"),
        )
    })?;
    if meta.is_dir() {
        return Err(Fault::with(
            faults::NOT_EXECUTABLE,
            format!("command at '{}' is a directory", file.display()),
        ));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(Fault::with(
            faults::NOT_EXECUTABLE,
            format!("command at '{}' is not executable", file.display()),
        ));
    }
    Ok(())
}

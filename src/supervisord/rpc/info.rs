//! Process lookup and the info structs: `getProcessInfo`, `getAllProcessInfo`,
//! `getAllConfigInfo`, with supervisord's `spawnerr`, `description` and time formats.

use std::collections::HashMap;

use super::*;

impl Rpc {
    /// The supervisor's services that came from supervisord files (see [`is_program`]).
    pub(super) async fn program_infos(&self) -> Vec<ServiceInfo> {
        let mut infos = self.handle.status().await;
        infos.retain(is_program);
        infos
    }

    /// The processes of `name`'s group, or the one process it names.
    pub(super) async fn resolve(&self, name: &str) -> Result<(String, Option<ServiceInfo>), Fault> {
        let (group, process) = split_namespec(name);
        let infos = self.program_infos().await;
        if !infos.iter().any(|i| i.group == group) {
            return Err(Fault::with(faults::BAD_NAME, name));
        }
        match process {
            None => Ok((group, None)),
            Some(p) => infos
                .into_iter()
                .find(|i| i.group == group && i.name == p)
                .map(|i| (group, Some(i)))
                .ok_or_else(|| Fault::with(faults::BAD_NAME, name)),
        }
    }

    /// Processes of one group (or all) in supervisord's order: the files' group order
    /// (see `conf::read`), then services defined elsewhere by priority.
    pub(super) async fn members(&self, group: Option<&str>) -> Vec<ServiceInfo> {
        // Each service's priority comes with its status under one lock (no spec cloned), and
        // the files' order is looked up by name: a group of 2 000 is sorted in n log n.
        let rank: HashMap<String, usize> = {
            let programs = self.programs.lock().await;
            let mut rank = HashMap::with_capacity(programs.available.len());
            for (i, s) in programs.available.iter().enumerate() {
                rank.entry(s.name.clone()).or_insert(i);
            }
            rank
        };
        let mut rows = self.handle.status_with(|s| s.priority);
        rows.retain(|(i, _)| is_program(i) && group.map_or(true, |g| i.group == g));
        rows.sort_by_cached_key(|(i, priority)| {
            (rank.get(&i.name).copied().unwrap_or(rank.len()), *priority)
        });
        rows.into_iter().map(|(i, _)| i).collect()
    }

    pub(super) fn spec_of(&self, name: &str) -> Option<Arc<ServiceSpec>> {
        self.handle.spec(name)
    }

    pub(super) async fn get_process_info(&self, name: &str) -> RpcResult {
        match self.resolve(name).await? {
            (_, Some(info)) => {
                let spec = self.spec_of(&info.name);
                let logs = spec.map(|s| self.log_names(&s)).unwrap_or_default();
                Ok(self.process_info(&info, logs))
            }
            (_, None) => Err(Fault::with(faults::BAD_NAME, name)),
        }
    }

    /// Every call of `supervisorctl status`: the log names are taken under the supervisor's
    /// lock, so no spec is cloned.
    pub(super) async fn get_all_process_info(&self) -> RpcResult {
        let mut rows = self.handle.status_with(|s| self.log_names(s));
        rows.retain(|(i, _)| is_program(i));
        rows.sort_by(|(a, _), (b, _)| (&a.group, &a.name).cmp(&(&b.group, &b.name)));
        Ok(Value::Array(
            rows.into_iter()
                .map(|(i, logs)| self.process_info(&i, logs))
                .collect(),
        ))
    }

    /// `(stdout_logfile, stderr_logfile)` as supervisord shows them.
    pub(super) fn log_names(&self, s: &ServiceSpec) -> (String, String) {
        let stderr = if s.redirect_stderr {
            String::new()
        } else {
            self.logfile_name(&s.stderr, Stream::Stderr)
        };
        (self.logfile_name(&s.stdout, Stream::Stdout), stderr)
    }

    pub(super) fn process_info(&self, info: &ServiceInfo, logs: (String, String)) -> Value {
        let now = now_secs();
        let (stdout, stderr) = logs;
        let spawnerr = spawnerr_of(info);
        let description = describe(info, &spawnerr, now);
        Value::structure([
            ("name", Value::str(&info.name)),
            ("group", Value::str(&info.group)),
            ("start", Value::Int(info.start_time as i64)),
            ("stop", Value::Int(info.stop_time as i64)),
            ("now", Value::Int(now as i64)),
            ("state", Value::Int(info.state.code().into())),
            ("statename", Value::str(info.state.name())),
            ("spawnerr", Value::Str(spawnerr)),
            ("exitstatus", Value::Int(info.exitstatus.into())),
            ("logfile", Value::Str(stdout.clone())),
            ("stdout_logfile", Value::Str(stdout)),
            ("stderr_logfile", Value::Str(stderr)),
            ("pid", Value::Int(info.pid.unwrap_or(0).into())),
            ("description", Value::Str(description)),
        ])
    }

    /// The log file name clients see: the container path of a file, `/dev/fd/1|2` for the
    /// init's own output, empty when discarded.
    pub(super) fn logfile_name(&self, target: &LogTarget, stream: Stream) -> String {
        match target {
            LogTarget::Log => match stream {
                Stream::Stdout => "/dev/fd/1".into(),
                Stream::Stderr => "/dev/fd/2".into(),
            },
            LogTarget::File { path, .. } => self
                .source
                .root
                .unroot(path)
                .unwrap_or_else(|| path.clone())
                .to_string_lossy()
                .into_owned(),
            LogTarget::Null => String::new(),
        }
    }

    pub(super) async fn get_all_config_info(&self) -> RpcResult {
        let programs = self.programs.lock().await;
        let mut rows: Vec<Value> = programs
            .available
            .iter()
            .map(|s| self.config_info(s, programs.active.contains_key(s.group_name())))
            .collect();
        rows.sort_by(|a, b| {
            let n = |v: &Value| v.member("name").and_then(Value::as_str).map(str::to_owned);
            n(a).cmp(&n(b))
        });
        Ok(Value::Array(rows))
    }

    pub(super) fn config_info(&self, s: &ServiceSpec, inuse: bool) -> Value {
        let autorestart = match s.restart {
            RestartPolicy::Always => Value::Bool(true),
            RestartPolicy::Never => Value::Bool(false),
            RestartPolicy::OnFailure => Value::str("unexpected"),
        };
        let uid = s
            .user
            .as_deref()
            .and_then(|u| {
                u.parse::<u32>().ok().or_else(|| {
                    nix::unistd::User::from_name(u)
                        .ok()
                        .flatten()
                        .map(|u| u.uid.as_raw())
                })
            })
            .map(|u| Value::Int(u.into()))
            .unwrap_or_else(|| Value::str("none"));
        let dir = s
            .working_dir
            .as_ref()
            .map(|d| {
                let d = self.source.root.unroot(d).unwrap_or_else(|| d.clone());
                Value::str(d.to_string_lossy())
            })
            .unwrap_or_else(|| Value::str("none"));
        let (out_max, out_bk) = rotation(&s.stdout);
        let (err_max, err_bk) = rotation(&s.stderr);
        let stopsignal = s
            .stop_signal
            .parse::<i64>()
            .ok()
            .or_else(|| {
                format!("SIG{}", s.stop_signal)
                    .parse::<nix::sys::signal::Signal>()
                    .ok()
                    .map(|sig| sig as i64)
            })
            .unwrap_or(15);
        let stderr_name = if s.redirect_stderr {
            "none".to_string()
        } else {
            self.logfile_name(&s.stderr, Stream::Stderr)
        };
        Value::structure([
            ("autostart", Value::Bool(s.autostart)),
            ("autorestart", autorestart),
            ("directory", dir),
            ("uid", uid),
            ("command", Value::Str(s.command.join(" "))),
            (
                "exitcodes",
                Value::Array(
                    s.exit_codes
                        .iter()
                        .map(|c| Value::Int((*c).into()))
                        .collect(),
                ),
            ),
            ("group", Value::str(s.group_name())),
            ("group_prio", Value::Int(s.priority.into())),
            ("inuse", Value::Bool(inuse)),
            ("killasgroup", Value::Bool(s.stop_as_group)),
            ("name", Value::str(&s.name)),
            ("process_prio", Value::Int(s.priority.into())),
            ("redirect_stderr", Value::Bool(s.redirect_stderr)),
            ("startretries", Value::Int(s.startretries.into())),
            ("startsecs", Value::Int(s.startsecs.as_secs() as i64)),
            ("stdout_capture_maxbytes", Value::Int(0)),
            ("stdout_events_enabled", Value::Bool(false)),
            (
                "stdout_logfile",
                Value::Str(self.logfile_name(&s.stdout, Stream::Stdout)),
            ),
            ("stdout_logfile_backups", Value::Int(out_bk)),
            ("stdout_logfile_maxbytes", Value::Int(out_max)),
            ("stdout_syslog", Value::Bool(false)),
            ("stopsignal", Value::Int(stopsignal)),
            ("stopwaitsecs", Value::Int(s.stop_timeout.as_secs() as i64)),
            ("stderr_capture_maxbytes", Value::Int(0)),
            ("stderr_events_enabled", Value::Bool(false)),
            ("stderr_logfile", Value::Str(stderr_name)),
            ("stderr_logfile_backups", Value::Int(err_bk)),
            ("stderr_logfile_maxbytes", Value::Int(err_max)),
            ("stderr_syslog", Value::Bool(false)),
            ("serverurl", Value::str("none")),
        ])
    }
}

pub(super) fn rotation(t: &LogTarget) -> (i64, i64) {
    match t {
        LogTarget::File {
            max_bytes, backups, ..
        } => (*max_bytes as i64, i64::from(*backups)),
        _ => (0, 0),
    }
}

/// supervisord's `spawnerr`: why the last start attempt failed, while that matters.
pub(super) fn spawnerr_of(info: &ServiceInfo) -> String {
    match info.state {
        ProcessState::Backoff | ProcessState::Fatal => info
            .spawn_error
            .clone()
            .unwrap_or_else(|| info.description.clone()),
        _ => info.spawn_error.clone().unwrap_or_default(),
    }
}

/// supervisord's `description` for a process.
pub(super) fn describe(info: &ServiceInfo, spawnerr: &str, now: u64) -> String {
    match info.state {
        ProcessState::Running => format!(
            "pid {}, uptime {}",
            info.pid.unwrap_or(0),
            uptime(now.saturating_sub(info.start_time))
        ),
        ProcessState::Fatal | ProcessState::Backoff => {
            if spawnerr.is_empty() {
                format!("unknown error (try \"tail {}\")", info.name)
            } else {
                spawnerr.to_string()
            }
        }
        ProcessState::Stopped | ProcessState::Exited => {
            if info.start_time == 0 {
                "Not started".into()
            } else {
                local_time(info.stop_time)
            }
        }
        _ => String::new(),
    }
}

/// Python's `str(timedelta)`: `H:MM:SS`, `1 day, H:MM:SS`, `2 days, H:MM:SS`.
pub(super) fn uptime(secs: u64) -> String {
    let (days, rem) = (secs / 86400, secs % 86400);
    let hms = format!("{}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    match days {
        0 => hms,
        1 => format!("1 day, {hms}"),
        d => format!("{d} days, {hms}"),
    }
}

/// `%b %d %I:%M %p` in local time, as supervisord prints stop times.
pub(super) fn local_time(secs: u64) -> String {
    let t = secs as libc::time_t;
    // SAFETY: localtime_r and strftime write only into the buffers we pass.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return String::new();
        }
        let mut buf = [0u8; 64];
        let n = libc::strftime(
            buf.as_mut_ptr().cast(),
            buf.len(),
            c"%b %d %I:%M %p".as_ptr(),
            &tm,
        );
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

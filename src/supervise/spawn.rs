//! Turning a [`ServiceSpec`] into a running process: user and groups, environment, working
//! directory, umask, rlimits, a fresh session or process group, a clean signal state, and
//! pipes for its output. Spawned through the one reaper ([`crate::pid1::Reaper::spawn`]).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::{LogTarget, ServiceSpec};

/// How the child is attached to the init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// A service: new session, output through pipes.
    Service,
    /// The main command of `run -- CMD`: its own process group, the init's stdio, and the
    /// terminal's foreground when stdin is a tty (tini's behaviour).
    Foreground,
}

/// A spawned process and the read ends of its output pipes.
pub struct Spawned {
    pub pid: i32,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// The user/groups to switch to, resolved in the parent (lookups are not allowed between
/// fork and exec).
struct Identity {
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    name: String,
    home: String,
}

/// Spawn `spec` through the reaper; `on_exit` gets the raw wait status.
pub fn spawn(
    spec: &ServiceSpec,
    attach: Attach,
    marker: &str,
    on_exit: crate::pid1::Claim,
) -> Result<Spawned, String> {
    let mut cmd = command_for(spec, attach)?;
    cmd.env(super::tree::MARKER_VAR, marker);
    let child = crate::pid1::reaper()
        .spawn(&mut cmd, on_exit)
        .map_err(|e| spawn_error_text(spec, &e))?;
    let pid = child.id() as i32;
    let mut child = child;
    Ok(Spawned {
        pid,
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
    })
}

fn spawn_error_text(spec: &ServiceSpec, e: &io::Error) -> String {
    let prog = spec.command.first().map(String::as_str).unwrap_or("");
    match e.kind() {
        io::ErrorKind::NotFound => format!("can't find command '{prog}'"),
        io::ErrorKind::PermissionDenied => format!("command '{prog}' is not executable: {e}"),
        _ => format!("{prog}: {e}"),
    }
}

/// Build the `Command` for a spec (everything that can fail is checked here, in the parent).
fn command_for(spec: &ServiceSpec, attach: Attach) -> Result<Command, String> {
    let argv: Vec<String> = if spec.shell {
        vec!["/bin/sh".into(), "-c".into(), spec.command.join(" ")]
    } else {
        spec.command.clone()
    };
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let mut cmd = Command::new(prog);
    cmd.args(args);
    let identity = resolve_identity(spec)?;
    if let Some(id) = &identity {
        cmd.env("HOME", &id.home)
            .env("USER", &id.name)
            .env("LOGNAME", &id.name);
    }
    for file in &spec.env_files {
        for (k, v) in read_env_file(file)? {
            cmd.env(k, v);
        }
    }
    cmd.envs(&spec.env);
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    let umask = spec.umask.as_deref().map(parse_umask).transpose()?;
    let rlimits = spec
        .rlimits
        .iter()
        .map(|(name, v)| Ok((rlimit_resource(name)?, *v)))
        .collect::<Result<Vec<_>, String>>()?;
    match attach {
        Attach::Service => {
            cmd.stdin(Stdio::null());
            cmd.stdout(stdio_for(&spec.stdout));
            // With redirect_stderr, stderr joins stdout's pipe (dup2 in the child).
            cmd.stderr(if spec.redirect_stderr {
                Stdio::null()
            } else {
                stdio_for(&spec.stderr)
            });
        }
        Attach::Foreground => {}
    }
    let redirect = attach == Attach::Service && spec.redirect_stderr;
    // SAFETY: the closure only makes async-signal-safe syscalls on data prepared above.
    unsafe {
        cmd.pre_exec(move || child_setup(attach, redirect, umask, &rlimits, identity.as_ref()));
    }
    Ok(cmd)
}

fn stdio_for(target: &LogTarget) -> Stdio {
    match target {
        LogTarget::Null => Stdio::null(),
        LogTarget::Log | LogTarget::File { .. } => Stdio::piped(),
    }
}

/// Runs in the child between fork and exec: async-signal-safe calls only.
fn child_setup(
    attach: Attach,
    redirect_stderr: bool,
    umask: Option<u32>,
    rlimits: &[(libc::__rlimit_resource_t, u64)],
    identity: Option<&Identity>,
) -> io::Result<()> {
    // SAFETY (whole function): raw syscalls in a freshly forked child.
    unsafe {
        // Handlers installed by the init do not survive exec, but ignored signals and the
        // mask (every signal blocked in the init) would: give the child a clean slate.
        crate::pid1::signals::clean_in_child();
        match attach {
            Attach::Service => check(libc::setsid())?,
            Attach::Foreground => {
                check(libc::setpgid(0, 0))?;
                if libc::isatty(0) == 1 {
                    // Taking the foreground from the background needs SIGTTOU ignored.
                    libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                    libc::tcsetpgrp(0, libc::getpid());
                    libc::signal(libc::SIGTTOU, libc::SIG_DFL);
                }
            }
        }
        if redirect_stderr {
            check(libc::dup2(1, 2))?;
        }
        for (res, v) in rlimits {
            let lim = libc::rlimit {
                rlim_cur: *v,
                rlim_max: *v,
            };
            check(libc::setrlimit(*res, &lim))?;
        }
        if let Some(m) = umask {
            libc::umask(m as libc::mode_t);
        }
        if let Some(id) = identity {
            check(libc::setgroups(id.groups.len(), id.groups.as_ptr()))?;
            check(libc::setgid(id.gid))?;
            check(libc::setuid(id.uid))?;
        }
    }
    Ok(())
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Look up user, group and supplementary groups of a spec (None: keep the init's own).
fn resolve_identity(spec: &ServiceSpec) -> Result<Option<Identity>, String> {
    use nix::unistd::{Gid, Uid, User};
    let Some(user) = spec.user.as_deref() else {
        if spec.run_group.is_some() || spec.supplementary_groups.is_some() {
            return Err("user_group and supplementary_groups need `user`".into());
        }
        return Ok(None);
    };
    let u = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)).ok().flatten(),
        Err(_) => User::from_name(user).ok().flatten(),
    };
    let (uid, mut gid, name, home) = match (&u, user.parse::<u32>()) {
        (Some(u), _) => (
            u.uid.as_raw(),
            u.gid.as_raw(),
            u.name.clone(),
            u.dir.display().to_string(),
        ),
        (None, Ok(uid)) => (uid, uid, uid.to_string(), "/".into()),
        (None, Err(_)) => return Err(format!("no such user: {user}")),
    };
    if let Some(g) = spec.run_group.as_deref() {
        gid = lookup_group(g)?;
    }
    let groups = match &spec.supplementary_groups {
        Some(list) => list
            .iter()
            .map(|g| lookup_group(g))
            .collect::<Result<Vec<_>, _>>()?,
        None => {
            let cname = CString::new(name.clone()).map_err(|_| "bad user name")?;
            nix::unistd::getgrouplist(&cname, Gid::from_raw(gid))
                .map(|v| v.into_iter().map(|g| g.as_raw()).collect())
                .unwrap_or_else(|_| vec![gid])
        }
    };
    Ok(Some(Identity {
        uid,
        gid,
        groups,
        name,
        home,
    }))
}

fn lookup_group(g: &str) -> Result<u32, String> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    nix::unistd::Group::from_name(g)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
        .ok_or_else(|| format!("no such group: {g}"))
}

/// Read a `KEY=value` file (blank lines and `#` comments skipped, optional `export `,
/// matching quotes stripped).
pub fn read_env_file(path: &std::path::Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read env file: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = line.split_once('=').ok_or_else(|| {
            format!(
                "{}:{}: expected KEY=value in env file",
                path.display(),
                n + 1
            )
        })?;
        let v = v.trim();
        let v = ['"', '\'']
            .iter()
            .find_map(|q| v.strip_prefix(*q).and_then(|x| x.strip_suffix(*q)))
            .unwrap_or(v);
        out.insert(k.trim().to_string(), v.to_string());
    }
    Ok(out)
}

/// Parse an octal umask ("027", "0027").
pub fn parse_umask(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("bad umask {s:?}: expected octal such as 0027"))
}

/// Map an rlimit name (`nofile`, `RLIMIT_NOFILE`) to its resource.
pub fn rlimit_resource(name: &str) -> Result<libc::__rlimit_resource_t, String> {
    let n = name.to_ascii_lowercase();
    let n = n.strip_prefix("rlimit_").unwrap_or(&n);
    Ok(match n {
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "core" => libc::RLIMIT_CORE,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "stack" => libc::RLIMIT_STACK,
        "as" => libc::RLIMIT_AS,
        "fsize" => libc::RLIMIT_FSIZE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "rss" => libc::RLIMIT_RSS,
        "locks" => libc::RLIMIT_LOCKS,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "rtprio" => libc::RLIMIT_RTPRIO,
        _ => return Err(format!("unknown rlimit {name:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_parses_quotes_and_comments() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("env");
        std::fs::write(&f, "# c\n\nA=1\nexport B=\"two words\"\nC='x'\n").unwrap();
        let m = read_env_file(&f).unwrap();
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "two words");
        assert_eq!(m["C"], "x");
        std::fs::write(&f, "oops\n").unwrap();
        assert!(read_env_file(&f)
            .unwrap_err()
            .contains(":1: expected KEY=value"));
    }

    #[test]
    fn umask_and_rlimits_parse() {
        assert_eq!(parse_umask("0027"), Ok(0o27));
        assert!(parse_umask("999").is_err());
        assert_eq!(rlimit_resource("NOFILE"), Ok(libc::RLIMIT_NOFILE));
        assert!(rlimit_resource("bogus").is_err());
    }
}

//! Reading `supervisord.conf` with its `[include]` files and converting `[program:x]`
//! sections into [`ServiceSpec`]s, the way supervisord 4 interprets each option.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Root, Secret};
use crate::supervise::{LogTarget, RestartPolicy, ServiceSpec};

use super::ini::{Entry, Ini, IniSection};
use super::values;
use super::{ProgramOverride, SupervisordError};

/// `[unix_http_server]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Socket path (host path, re-rooted).
    pub socket: PathBuf,
    /// Socket file mode (supervisord's default 0700).
    pub chmod: u32,
    /// `user` or `user:group` owning the socket.
    pub chown: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// Everything read from the supervisord files.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// Programs in file order, re-rooted, overrides applied.
    pub programs: Vec<ServiceSpec>,
    pub server: Option<ServerSettings>,
    /// `[supervisord] identifier` (default `supervisor`).
    pub identifier: String,
    /// Non-fatal findings (unknown options, includes matching nothing), with file:line.
    pub warnings: Vec<String>,
}

/// Options of `[program:x]` that supervisord knows; anything else earns a warning.
const PROGRAM_OPTIONS: &[&str] = &[
    "command",
    "process_name",
    "numprocs",
    "numprocs_start",
    "priority",
    "autostart",
    "startsecs",
    "startretries",
    "autorestart",
    "exitcodes",
    "stopsignal",
    "stopwaitsecs",
    "stopasgroup",
    "killasgroup",
    "user",
    "redirect_stderr",
    "stdout_logfile",
    "stdout_logfile_maxbytes",
    "stdout_logfile_backups",
    "stdout_capture_maxbytes",
    "stdout_events_enabled",
    "stdout_syslog",
    "stderr_logfile",
    "stderr_logfile_maxbytes",
    "stderr_logfile_backups",
    "stderr_capture_maxbytes",
    "stderr_events_enabled",
    "stderr_syslog",
    "environment",
    "directory",
    "umask",
    "serverurl",
    // Not supervisord options, but used by Cloudify's program files, and ignored as
    // supervisord ignores them: `group` (children get the user's primary group), `minfds`
    // (only `[supervisord] minfds` counts: it raises the limit every program inherits).
    "group",
    "minfds",
];

/// Read `conf` (a host path) and everything it includes.
pub fn read(
    conf: &Path,
    root: &Root,
    overrides: &BTreeMap<String, ProgramOverride>,
) -> Result<Parsed, SupervisordError> {
    let mut ini = Ini::default();
    let mut warnings = Vec::new();
    read_file(&mut ini, conf)?;
    if let Some(include) = ini.section("include").cloned() {
        read_includes(&mut ini, &include, conf, root, &mut warnings)?;
    }
    let here = root
        .unroot(super::parent_dir(conf))
        .unwrap_or_else(|| super::parent_dir(conf).to_path_buf());
    let ctx = ExpandContext::new(&here);
    let global_env = match ini
        .section("supervisord")
        .and_then(|s| s.get("environment"))
    {
        Some(e) => parse_env(e, &ctx.base)?,
        None => BTreeMap::new(),
    };
    let identifier = ini
        .section("supervisord")
        .and_then(|s| s.get("identifier"))
        .map(|e| e.value.clone())
        .unwrap_or_else(|| "supervisor".into());
    let nofile = min_fds(&ini, &mut warnings)?;
    let groups = group_members(&ini)?;
    let mut programs = Vec::new();
    for section in &ini.sections {
        let name = section.name.as_str();
        if let Some(prog) = name.strip_prefix("program:") {
            let group = groups.get(prog).cloned();
            let mut spec = program(section, prog, group, &ctx, &global_env, &mut warnings)?;
            spec.backoff = crate::supervise::Backoff::supervisord();
            if let Some(n) = nofile {
                spec.rlimits.insert("nofile".into(), n);
            }
            spec.reroot(root);
            if let Some(o) = overrides.get(&spec.name) {
                o.apply_to(&mut spec);
            }
            programs.push(spec);
        } else if !is_known_section(name) {
            warnings.push(format!(
                "{}:{}: section [{name}] is not supported by cfy-init and is ignored",
                section.file.display(),
                section.line
            ));
        }
    }
    let programs = supervisord_order(programs, &ini);
    let server = match ini.section("unix_http_server") {
        Some(s) => Some(server_settings(s, &ctx, root)?),
        None => None,
    };
    Ok(Parsed {
        programs,
        server,
        identifier,
        warnings,
    })
}

/// supervisord's `[supervisord] minfds` (default 1024): it raises its own soft limit of open
/// files to at least that, and every program inherits it. `Some(n)`: give programs `n`
/// (the init's soft limit is lower); a per-program `minfds` counts for nothing, as there.
fn min_fds(ini: &Ini, warnings: &mut Vec<String>) -> Result<Option<u64>, SupervisordError> {
    let entry = ini.section("supervisord").and_then(|s| s.get("minfds"));
    let want = match entry {
        Some(e) => non_negative(&e.value).map_err(|m| invalid(e, "supervisord", &m))?,
        None => 1024,
    };
    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((u64::MAX, u64::MAX));
    if soft >= want {
        return Ok(None);
    }
    if want > hard {
        // supervisord exits here unless it may raise the hard limit; the programs still
        // run, with the most they can get.
        if let Some(e) = entry {
            warnings.push(format!(
                "{}:{}: [supervisord] minfds={want} is above the hard limit {hard} of open files; using {hard}",
                e.file.display(),
                e.line
            ));
        }
    }
    Ok(Some(want.min(hard)))
}

fn read_file(ini: &mut Ini, path: &Path) -> Result<(), SupervisordError> {
    let text = std::fs::read_to_string(path).map_err(|e| SupervisordError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(ini.read_str(&text, path)?)
}

/// `[include] files=` globs, space-separated, relative to the including file's directory;
/// absolute patterns are host paths and get re-rooted.
fn read_includes(
    ini: &mut Ini,
    include: &IniSection,
    conf: &Path,
    root: &Root,
    warnings: &mut Vec<String>,
) -> Result<(), SupervisordError> {
    let Some(files) = include.get("files") else {
        return Err(SupervisordError::Invalid {
            file: include.file.clone(),
            line: include.line,
            section: "include".into(),
            msg: "[include] section without a `files` setting".into(),
        });
    };
    let here = root
        .unroot(super::parent_dir(conf))
        .unwrap_or_else(|| super::parent_dir(conf).to_path_buf());
    let ctx = ExpandContext::new(&here);
    let expanded = values::expand(&files.value, &ctx.base, "include.files")
        .map_err(|m| invalid(files, "include", &m))?;
    for pattern in expanded.split_whitespace() {
        let full = if Path::new(pattern).is_absolute() {
            root.path(Path::new(pattern))
        } else {
            super::parent_dir(conf).join(pattern)
        };
        let matches = glob::glob(&full.to_string_lossy())
            .map_err(|e| invalid(files, "include", &format!("bad glob {pattern:?}: {e}")))?;
        let mut found: Vec<PathBuf> = matches.filter_map(Result::ok).collect();
        found.sort();
        if found.is_empty() {
            warnings.push(format!(
                "{}:{}: no file matches include {:?}",
                files.file.display(),
                files.line,
                full.display()
            ));
        }
        for f in found {
            read_file(ini, &f)?;
        }
    }
    Ok(())
}

fn is_known_section(name: &str) -> bool {
    matches!(
        name,
        "supervisord" | "supervisorctl" | "unix_http_server" | "include"
    ) || name.starts_with("rpcinterface:")
        || name.starts_with("group:")
}

/// supervisord's `process_group_configs` order: `[group:x]` groups first, then programs,
/// stably sorted by group priority; within a group by process priority. Starting, stopping
/// and `avail` follow it.
fn supervisord_order(programs: Vec<ServiceSpec>, ini: &Ini) -> Vec<ServiceSpec> {
    let mut groups: Vec<(i64, Vec<ServiceSpec>)> = Vec::new();
    for s in &ini.sections {
        let Some(g) = s.name.strip_prefix("group:") else {
            continue;
        };
        let prio = s
            .get("priority")
            .and_then(|e| values::integer(&e.value).ok())
            .unwrap_or(999);
        let mut members: Vec<ServiceSpec> = programs
            .iter()
            .filter(|p| p.group.as_deref() == Some(g))
            .cloned()
            .collect();
        members.sort_by_key(|p| p.priority);
        groups.push((prio, members));
    }
    for p in programs.into_iter().filter(|p| p.group.is_none()) {
        groups.push((i64::from(p.priority), vec![p]));
    }
    groups.sort_by_key(|(prio, _)| *prio);
    groups.into_iter().flat_map(|(_, m)| m).collect()
}

/// `[group:g] programs=a,b` → program name → group name.
fn group_members(ini: &Ini) -> Result<BTreeMap<String, String>, SupervisordError> {
    let mut out = BTreeMap::new();
    for s in &ini.sections {
        let Some(g) = s.name.strip_prefix("group:") else {
            continue;
        };
        let Some(progs) = s.get("programs") else {
            return Err(SupervisordError::Invalid {
                file: s.file.clone(),
                line: s.line,
                section: s.name.clone(),
                msg: "group section has no `programs` setting".into(),
            });
        };
        for p in progs
            .value
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            out.insert(p.to_string(), g.to_string());
        }
    }
    Ok(out)
}

/// The names `%(...)s` may use.
struct ExpandContext {
    base: BTreeMap<String, String>,
}

impl ExpandContext {
    fn new(here: &Path) -> Self {
        let mut base: BTreeMap<String, String> = std::env::vars()
            .map(|(k, v)| (format!("ENV_{k}"), v))
            .collect();
        base.insert("here".into(), here.to_string_lossy().into_owned());
        base.insert(
            "host_node_name".into(),
            nix::sys::utsname::uname()
                .map(|u| u.nodename().to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        ExpandContext { base }
    }
}

fn invalid(e: &Entry, section: &str, msg: &str) -> SupervisordError {
    SupervisordError::Invalid {
        file: e.file.clone(),
        line: e.line,
        section: section.to_string(),
        msg: format!("{}: {msg}", e.key),
    }
}

fn parse_env(
    e: &Entry,
    names: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, SupervisordError> {
    values::expand(&e.value, names, "environment")
        .and_then(|v| values::key_value_pairs(&v))
        .map_err(|m| invalid(e, "supervisord", &m))
}

/// One `[program:x]` section → a spec (host paths not yet re-rooted).
fn program(
    section: &IniSection,
    prog: &str,
    group: Option<String>,
    ctx: &ExpandContext,
    global_env: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<ServiceSpec, SupervisordError> {
    let sname = section.name.as_str();
    for e in &section.entries {
        if !PROGRAM_OPTIONS.contains(&e.key.as_str()) {
            warnings.push(format!(
                "{}:{}: [{sname}] unknown option {:?} ignored",
                e.file.display(),
                e.line,
                e.key
            ));
        }
    }
    let mut names = ctx.base.clone();
    names.insert("program_name".into(), prog.to_string());
    names.insert(
        "group_name".into(),
        group.clone().unwrap_or_else(|| prog.to_string()),
    );
    names.insert("process_num".into(), "0".into());
    names.insert("numprocs".into(), "1".into());
    let header = Entry {
        key: "command".into(),
        value: String::new(),
        file: section.file.clone(),
        line: section.line,
    };
    let opts = Options { section, sname };

    let numprocs = opts
        .parse("numprocs", &names, values::integer)?
        .unwrap_or(1);
    if numprocs != 1 {
        let e = section.get("numprocs").unwrap_or(&header);
        return Err(invalid(
            e,
            sname,
            "numprocs other than 1 is not supported by cfy-init",
        ));
    }
    let mut env = global_env.clone();
    if let Some(e) = section.get("environment") {
        env.extend(parse_env(e, &names).map_err(|err| retag(err, sname))?);
    }
    // Options after `environment` may use %(ENV_X)s of the program's own environment.
    for (k, v) in &env {
        names.insert(format!("ENV_{k}"), v.clone());
    }
    let name = match opts.text("process_name", &names)? {
        Some(n) => n,
        None => prog.to_string(),
    };
    let Some(command_line) = opts.text("command", &names)? else {
        return Err(invalid(
            &header,
            sname,
            "program section does not specify a command",
        ));
    };
    let command = shlex::split(&command_line)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            invalid(
                section.get("command").unwrap_or(&header),
                sname,
                "cannot split the command line (empty, or unbalanced quotes)",
            )
        })?;

    let mut spec: ServiceSpec =
        serde_json::from_value(serde_json::json!({ "name": name, "command": command }))
            .expect("a name and a command make a valid spec");
    spec.group = group;
    spec.env = env;
    spec.source = Some(format!("{}:{}", section.file.display(), section.line));
    // supervisord's defaults differ from the native ones: autorestart=unexpected, and a
    // program that got to RUNNING is restarted however often it exits (only failed
    // starts count against `startretries`); the manager relies on that while its
    // database or broker comes up.
    spec.restart = RestartPolicy::OnFailure;
    spec.crash_loop.max_restarts = u32::MAX;
    if let Some(p) = opts.parse("priority", &names, values::integer)? {
        spec.priority = p as i32;
    }
    if let Some(v) = opts.parse("autostart", &names, values::boolean)? {
        spec.autostart = v;
    }
    if let Some(v) = opts.parse("startsecs", &names, non_negative)? {
        spec.startsecs = Duration::from_secs(v);
    }
    if let Some(v) = opts.parse("startretries", &names, non_negative)? {
        spec.startretries = v as u32;
    }
    if let Some(v) = opts.parse("autorestart", &names, auto_restart)? {
        spec.restart = v;
    }
    if let Some(v) = opts.parse("exitcodes", &names, values::exit_codes)? {
        spec.exit_codes = v;
    }
    if let Some(v) = opts.parse("stopsignal", &names, values::signal_name)? {
        spec.stop_signal = v;
    }
    if let Some(v) = opts.parse("stopwaitsecs", &names, non_negative)? {
        spec.stop_timeout = Duration::from_secs(v);
    }
    let stopasgroup = opts.parse("stopasgroup", &names, values::boolean)?;
    let killasgroup = opts.parse("killasgroup", &names, values::boolean)?;
    if stopasgroup == Some(true) && killasgroup == Some(false) {
        let e = section.get("killasgroup").unwrap_or(&header);
        return Err(invalid(
            e,
            sname,
            "cannot set stopasgroup=true and killasgroup=false",
        ));
    }
    spec.stop_as_group = stopasgroup.or(killasgroup).unwrap_or(false);
    if let Some(user) = opts.text("user", &names)? {
        check_user(&user)
            .map_err(|m| invalid(section.get("user").unwrap_or(&header), sname, &m))?;
        spec.user = Some(user);
    }
    if let Some(dir) = opts.text("directory", &names)? {
        spec.working_dir = Some(PathBuf::from(dir));
    }
    if let Some(u) = opts.parse("umask", &names, values::octal)? {
        spec.umask = Some(u);
    }
    if let Some(v) = opts.parse("redirect_stderr", &names, values::boolean)? {
        spec.redirect_stderr = v;
    }
    spec.stdout = log_target(&opts, "stdout", &names)?;
    spec.stderr = log_target(&opts, "stderr", &names)?;
    Ok(spec)
}

/// Re-label an environment error with the program's section name.
fn retag(err: SupervisordError, sname: &str) -> SupervisordError {
    match err {
        SupervisordError::Invalid {
            file, line, msg, ..
        } => SupervisordError::Invalid {
            file,
            line,
            section: sname.to_string(),
            msg,
        },
        other => other,
    }
}

/// Option access for one section: expansion, then a typed parse; errors name file:line.
struct Options<'a> {
    section: &'a IniSection,
    sname: &'a str,
}

impl Options<'_> {
    fn text(
        &self,
        key: &str,
        names: &BTreeMap<String, String>,
    ) -> Result<Option<String>, SupervisordError> {
        let Some(e) = self.section.get(key) else {
            return Ok(None);
        };
        values::expand(&e.value, names, key)
            .map(Some)
            .map_err(|m| invalid(e, self.sname, &m))
    }

    fn parse<T>(
        &self,
        key: &str,
        names: &BTreeMap<String, String>,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, SupervisordError> {
        let Some(text) = self.text(key, names)? else {
            return Ok(None);
        };
        let e = self.section.get(key).expect("text() found it");
        f(&text).map(Some).map_err(|m| invalid(e, self.sname, &m))
    }
}

fn non_negative(s: &str) -> Result<u64, String> {
    values::integer(s).and_then(|n| u64::try_from(n).map_err(|_| format!("{s:?} is negative")))
}

fn auto_restart(s: &str) -> Result<RestartPolicy, String> {
    match s.trim().to_lowercase().as_str() {
        "unexpected" => Ok(RestartPolicy::OnFailure),
        "true" | "yes" | "on" | "1" => Ok(RestartPolicy::Always),
        "false" | "no" | "off" | "0" => Ok(RestartPolicy::Never),
        _ => Err(format!("invalid 'autorestart' value {s:?}")),
    }
}

/// supervisord refuses a program whose user does not exist (`Invalid user name`).
fn check_user(user: &str) -> Result<(), String> {
    if user.parse::<u32>().is_ok() {
        return Ok(());
    }
    match nix::unistd::User::from_name(user) {
        Ok(Some(_)) => Ok(()),
        _ => Err(format!(
            "invalid user name {user:?} (no such user on this system)"
        )),
    }
}

/// `stdout_logfile` and friends: `/dev/fd/1|2`, `/dev/stdout`, `AUTO` and `syslog` go to
/// the init's log; `NONE` discards; a path is a rotated file.
fn log_target(
    opts: &Options,
    stream: &str,
    names: &BTreeMap<String, String>,
) -> Result<LogTarget, SupervisordError> {
    let file = opts.text(&format!("{stream}_logfile"), names)?;
    let max_bytes = opts
        .parse(
            &format!("{stream}_logfile_maxbytes"),
            names,
            values::byte_size,
        )?
        .unwrap_or(50 << 20);
    let backups = opts
        .parse(&format!("{stream}_logfile_backups"), names, non_negative)?
        .unwrap_or(10);
    let Some(file) = file else {
        return Ok(LogTarget::Log);
    };
    Ok(match file.trim() {
        f if f.eq_ignore_ascii_case("none") => LogTarget::Null,
        f if f.eq_ignore_ascii_case("auto") || f.eq_ignore_ascii_case("syslog") => LogTarget::Log,
        "/dev/fd/1" | "/dev/fd/2" | "/dev/stdout" | "/dev/stderr" => LogTarget::Log,
        f => LogTarget::File {
            path: PathBuf::from(f),
            max_bytes,
            backups: backups as u32,
        },
    })
}

fn server_settings(
    s: &IniSection,
    ctx: &ExpandContext,
    root: &Root,
) -> Result<ServerSettings, SupervisordError> {
    let opts = Options {
        section: s,
        sname: "unix_http_server",
    };
    let Some(file) = opts.text("file", &ctx.base)? else {
        return Err(SupervisordError::Invalid {
            file: s.file.clone(),
            line: s.line,
            section: s.name.clone(),
            msg: "section [unix_http_server] has no file value".into(),
        });
    };
    let chmod = opts
        .parse("chmod", &ctx.base, |v| {
            values::octal(v)
                .map(|o| u32::from_str_radix(o.trim_start_matches("0o"), 8).unwrap_or(0o700))
        })?
        .unwrap_or(0o700);
    Ok(ServerSettings {
        socket: root.path(Path::new(file.trim())),
        chmod,
        chown: opts.text("chown", &ctx.base)?,
        username: opts.text("username", &ctx.base)?,
        // Not expanded: a `%` in a password must not end up in an error message.
        password: s.get("password").map(|e| Secret::new(e.value.clone())),
    })
}

//! Every Cloudify 5.1.2 program file (the shared fixtures, Jinja templates rendered here
//! with plausible values and stand-in commands) loads, converts with the options Cloudify
//! relies on, and runs under cfy-init as PID 1, with the image's own supervisord.conf
//! honoured (socket path, mode, owner, includes).

#[path = "common/supervisord.rs"]
mod svd;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cfy_init::config::Root;
use cfy_init::supervise::{LogTarget, RestartPolicy};
use svd::{ctl, settled, wait_until, CfyInit};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/supervisord-5.1.2")
}

/// Fill a Jinja template with plausible values: `{% if/for %}...{% end %}` blocks are
/// dropped, `{{ expr }}` becomes a value chosen from the expression's name.
fn render(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{']) {
        out.push_str(&rest[..i]);
        let at = &rest[i..];
        if at.starts_with("{%") {
            let tag_end = at.find("%}").expect("closed tag") + 2;
            let tag = at[2..tag_end - 2].trim_matches(|c: char| c == '-' || c.is_whitespace());
            let word = tag.split_whitespace().next().unwrap_or("");
            rest = &at[tag_end..];
            if word == "if" || word == "for" {
                let end = format!("end{word}");
                let close = rest.find(&end).expect("block end");
                let after = &rest[close..];
                rest = &after[after.find("%}").unwrap() + 2..];
            }
        } else if at.starts_with("{{") {
            let end = at.find("}}").expect("closed expression") + 2;
            out.push_str(value_for(at[2..end - 2].trim()));
            rest = &at[end..];
        } else {
            out.push('{');
            rest = &at[1..];
        }
    }
    out.push_str(rest);
    out
}

fn value_for(expr: &str) -> &'static str {
    match expr {
        e if e.contains("port") => "9100",
        e if e.contains("dir") => "/opt/cfy",
        e if e.contains("service_user") => "nobody",
        e if e.contains("service_group") => "nogroup",
        e if e.contains("max_open_fds") => "102400",
        e if e.contains("worker") || e.contains("max_requests") => "4",
        e if e.contains("ip") || e.contains("networks") || e.contains("hostname") => "10.0.0.5",
        _ => "value",
    }
}

/// Users that do not exist on the test machine become `nobody`; commands become stand-ins.
fn adapt(conf: &str, stand_in: &str) -> String {
    conf.lines()
        .map(|l| match l.split_once('=') {
            Some(("user" | "group", "cfyuser" | "etcd")) => {
                format!("{}=nobody", &l[..l.find('=').unwrap()])
            }
            Some(("chown", _)) => "chown = nobody:nogroup".into(),
            Some(("command", _)) => format!("command={stand_in}"),
            _ => l.to_string(),
        })
        .map(|l| l + "\n")
        .collect()
}

/// A root holding the rendered image: /etc/supervisord.conf and /etc/supervisord.d/*.conf.
fn rendered_root() -> (CfyInit, Vec<String>) {
    let dir = fixtures_dir();
    let init = CfyInit::prepare("", &[]);
    std::fs::set_permissions(init.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let main = std::fs::read_to_string(dir.join("supervisord.conf")).unwrap();
    let main = adapt(&main, "/bin/sh -c \"echo image-starter; exit 0\"")
        .replace("chown = cfyuser:cfyuser", "chown = nobody:nogroup");
    std::fs::write(init.root.path().join("etc/supervisord.conf"), main).unwrap();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if file == "supervisord.conf" {
            continue;
        }
        let text = render(&std::fs::read_to_string(&path).unwrap());
        let text = adapt(&text, "/bin/sh -c \"echo up; exec sleep 1000\"");
        // Working directories must exist (and be reachable for the programs' users).
        for dir in text.lines().filter_map(|l| l.strip_prefix("directory=")) {
            std::fs::create_dir_all(init.root.path().join(dir.trim().trim_start_matches('/')))
                .unwrap();
        }
        std::fs::write(
            init.include_dir()
                .join(format!("{}.cloudify.conf", file.trim_end_matches(".conf"))),
            text,
        )
        .unwrap();
        names.push(file.trim_end_matches(".conf").to_string());
    }
    names.sort();
    (init, names)
}

#[test]
fn every_fixture_converts_with_cloudify_options() {
    let (init, names) = rendered_root();
    let root = Root::new(init.root.path());
    let conf = root.path(Path::new("/etc/supervisord.conf"));
    let parsed =
        cfy_init::supervisord::conf::read(&conf, &root, &Default::default()).expect("loads");
    let mut got: Vec<String> = parsed.programs.iter().map(|p| p.name.clone()).collect();
    got.retain(|n| n != "cloudify-starter");
    got.sort();
    // Program names come from the section headers, not the file names.
    assert_eq!(got.len(), names.len(), "{got:?} vs {names:?}");
    let by = |n: &str| {
        parsed
            .programs
            .iter()
            .find(|p| p.name == n)
            .unwrap()
            .clone()
    };

    let starter = by("cloudify-starter");
    assert_eq!(starter.restart, RestartPolicy::Never);
    assert_eq!(starter.startsecs.as_secs(), 0);
    assert_eq!(
        (starter.stdout.clone(), starter.stderr.clone()),
        (LogTarget::Log, LogTarget::Log)
    );

    let rabbit = by("cloudify-rabbitmq");
    assert_eq!(rabbit.umask.as_deref(), Some("0027"));
    // Its `minfds=102400` is ignored, as supervisord ignores it in a program section.
    assert_eq!(rabbit.rlimits.get("nofile"), None);
    assert_eq!(rabbit.exit_codes, vec![0, 69]);
    assert_eq!(rabbit.user.as_deref(), Some("rabbitmq"));
    assert_eq!(
        rabbit.restart,
        RestartPolicy::OnFailure,
        "supervisord default: unexpected"
    );
    assert_eq!(
        rabbit.working_dir,
        Some(root.path(Path::new("/var/lib/rabbitmq")))
    );
    assert_eq!(rabbit.env["RABBITMQ_NODENAME"], "value");
    assert_eq!(rabbit.env["HOME"], "/var/lib/rabbitmq");

    let pg = by("postgresql-9.5");
    assert_eq!(pg.restart, RestartPolicy::Never);
    assert_eq!(pg.env["PGDATA"], "/var/lib/pgsql/9.5/data/");
    assert_eq!(pg.user.as_deref(), Some("postgres"));

    assert!(by("cloudify-mgmtworker").stop_as_group);
    assert_eq!(by("cloudify-mgmtworker").env["KERBEROS_ENV"], "false");
    assert_eq!(by("haveged").exit_codes, vec![0, 143]);
    assert!(!by("patroni_startup_check").autostart);
    assert_eq!(by("rsyslog").umask.as_deref(), Some("0066"));
    let etcd = by("etcd");
    assert_eq!(etcd.env["ETCD_PEER_CERT_FILE"], "/etc/etcd/etcd.crt");
    assert_eq!(etcd.env["ETCD_INITIAL_CLUSTER_STATE"], "new");

    // The embedded default's readiness overrides apply to the manager's programs.
    let cfg = cfy_init::config::Config::embedded().supervisord;
    let parsed = cfy_init::supervisord::conf::read(&conf, &root, &cfg.overrides).unwrap();
    let rest = parsed
        .programs
        .iter()
        .find(|p| p.name == "cloudify-restservice")
        .unwrap();
    assert!(format!("{:?}", rest.readiness.check).contains("127.0.0.1:8100"));

    let server = parsed.server.expect("[unix_http_server]");
    assert_eq!(server.socket, root.path(Path::new("/tmp/supervisor.sock")));
    assert_eq!(server.chmod, 0o770);
}

#[test]
fn every_fixture_runs_under_cfy_init_with_the_image_socket_settings() {
    let (init, names) = rendered_root();
    let init = init.start("");
    let sock = init.sock.clone();
    wait_until("programs settled", || settled(&sock));
    let (status, _) = ctl(&sock, &["status"]);
    for line in status.lines() {
        let name = line.split_whitespace().next().unwrap();
        let state = line.split_whitespace().nth(1).unwrap();
        let expected = match name {
            "cloudify-starter" => "EXITED",
            "patroni_startup_check" | "wait_on_restart" => "STOPPED",
            _ => "RUNNING",
        };
        assert_eq!(state, expected, "{line}\n{status}\n{}", init.log());
    }
    assert_eq!(status.lines().count(), names.len() + 1, "{status}");
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o770);
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "chown nobody:nogroup"
    );
    let (tail, _) = ctl(&sock, &["tail", "cloudify-rabbitmq"]);
    assert_eq!(tail.trim(), "up");
}

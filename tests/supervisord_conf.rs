//! supervisord files: expansion, includes, re-rooting, overrides, and bad input (errors
//! naming file and line, warnings for what supervisord would ignore).

use std::path::{Path, PathBuf};

use cfy_init::config::{Config, Context, Root};
use cfy_init::supervise::LogTarget;
use cfy_init::supervisord::{conf, load, SupervisordError};

/// A root with `/etc/supervisord.conf` = `main` and `/etc/supervisord.d/<name>` files.
fn root_with(main: &str, includes: &[(&str, &str)]) -> (tempfile::TempDir, Root, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(etc.join("supervisord.d")).unwrap();
    std::fs::write(etc.join("supervisord.conf"), main).unwrap();
    for (n, t) in includes {
        std::fs::write(etc.join("supervisord.d").join(n), t).unwrap();
    }
    let root = Root::new(dir.path());
    let conf = root.path(Path::new("/etc/supervisord.conf"));
    (dir, root, conf)
}

const HEAD: &str = "[supervisord]\n[unix_http_server]\nfile=/tmp/s.sock\n[include]\nfiles=/etc/supervisord.d/*.conf supervisord.d/*.ini\n";

fn read(includes: &[(&str, &str)]) -> Result<conf::Parsed, SupervisordError> {
    let (_d, root, conf) = root_with(HEAD, includes);
    conf::read(&conf, &root, &Default::default())
}

#[test]
fn expansions_environment_and_paths() {
    std::env::set_var("SVD_TEST_HOME", "/home/x");
    let p = read(&[(
        "a.conf",
        "[program:a]\ncommand=/bin/echo %(program_name)s %(ENV_SVD_TEST_HOME)s %(ENV_MINE)s\n\
         environment=MINE=\"m,1\",\n  OTHER='o'\ndirectory=%(here)s/work\n\
         stdout_logfile=/var/log/%(program_name)s.log\nstdout_logfile_maxbytes=1KB\n\
         stdout_logfile_backups=2\nstderr_logfile=NONE\nredirect_stderr=false\n\
         stopsignal=INT\nstopwaitsecs=3\nautorestart=true\npriority=5\n",
    )])
    .unwrap();
    let a = &p.programs[0];
    assert_eq!(a.command, ["/bin/echo", "a", "/home/x", "m,1"]);
    assert_eq!(a.env["OTHER"], "o");
    assert!(a.working_dir.as_ref().unwrap().ends_with("etc/work"));
    match &a.stdout {
        LogTarget::File {
            path,
            max_bytes,
            backups,
        } => {
            assert!(path.ends_with("var/log/a.log") && path.starts_with(std::env::temp_dir()));
            assert_eq!((*max_bytes, *backups), (1024, 2));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a.stderr, LogTarget::Null);
    assert_eq!(
        (a.stop_signal.as_str(), a.stop_timeout.as_secs()),
        ("INT", 3)
    );
    assert_eq!(a.priority, 5);
    assert!(p.server.unwrap().socket.starts_with(std::env::temp_dir()));
}

#[test]
fn malformed_files_name_file_and_line() {
    let err = read(&[("bad.conf", "[program:a]\ncommand=/bin/true\n[program:b\n")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.conf:3:"), "{err}");
    let err = read(&[("bad.conf", "[program:a]\ncommand=/bin/true\njust words\n")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.conf:3:"), "{err}");
    let err = read(&[("bad.conf", "command=/bin/true\n")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.conf:1:"), "{err}");
}

#[test]
fn invalid_values_name_file_line_and_option() {
    for (body, line, what) in [
        (
            "[program:a]\ncommand=/bin/true\nautorestart=sometimes\n",
            3,
            "autorestart",
        ),
        (
            "[program:a]\ncommand=/bin/true\nstartsecs=soon\n",
            3,
            "startsecs",
        ),
        (
            "[program:a]\ncommand=/bin/true\nexitcodes=0,x\n",
            3,
            "exitcodes",
        ),
        (
            "[program:a]\ncommand=/bin/true\nstopsignal=NOPE\n",
            3,
            "stopsignal",
        ),
        ("[program:a]\ncommand=/bin/true\numask=999\n", 3, "umask"),
        (
            "[program:a]\ncommand=/bin/true\nnumprocs=2\n",
            3,
            "numprocs",
        ),
        (
            "[program:a]\ncommand=/bin/true\nuser=no-such-user-here\n",
            3,
            "no-such-user-here",
        ),
        (
            "[program:a]\ncommand=/bin/true\nenvironment=A=\"1\",B\n",
            3,
            "environment",
        ),
        ("[program:a]\ncommand=/bin/%(nope)s\n", 2, "nope"),
        ("[program:a]\nautostart=true\n", 1, "command"),
        (
            "[program:a]\ncommand=/bin/sh -c \"unbalanced\n",
            2,
            "command",
        ),
        (
            "[program:a]\ncommand=/bin/true\nstopasgroup=true\nkillasgroup=false\n",
            4,
            "killasgroup",
        ),
    ] {
        let err = read(&[("x.conf", body)]).unwrap_err().to_string();
        assert!(err.contains(&format!("x.conf:{line}:")), "{body:?}: {err}");
        assert!(err.contains(what), "{body:?}: {err}");
    }
}

#[test]
fn unknown_options_and_empty_includes_are_warnings() {
    let p = read(&[(
        "a.conf",
        "[program:a]\ncommand=/bin/true\nfrobnicate=yes\ngroup=root\nminfds=10\n[eventlistener:e]\ncommand=x\n",
    )])
    .unwrap();
    let w = p.warnings.join("\n");
    assert!(w.contains("a.conf:3:") && w.contains("frobnicate"), "{w}");
    assert!(!w.contains("\"group\"") && !w.contains("\"minfds\""), "{w}");
    assert!(w.contains("eventlistener:e"), "{w}");
    assert!(w.contains("no file matches"), "{w}");
    // A program's own minfds counts for nothing, as in supervisord.
    assert_eq!(p.programs[0].rlimits.get("nofile"), None);
}

/// `[supervisord] minfds` as supervisord treats it: a floor under the open-files limit
/// every program inherits (nothing to do when the limit is already that high); a per-
/// program `minfds` is ignored; supervisord's back-off for every program.
#[test]
fn minfds_and_backoff_as_supervisord_has_them() {
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let prog = [("a.conf", "[program:a]\ncommand=/bin/true\nminfds=5\n")];
    let with = |minfds: u64| {
        let head = HEAD.replace(
            "[supervisord]\n",
            &format!("[supervisord]\nminfds={minfds}\n"),
        );
        let (_d, root, conf) = root_with(&head, &prog);
        conf::read(&conf, &root, &Default::default()).unwrap()
    };
    let low = with(soft.min(1024));
    assert_eq!(low.programs[0].rlimits.get("nofile"), None);
    let b = &low.programs[0].backoff;
    assert_eq!(
        [1, 2, 3].map(|n| b.delay(n).as_secs()),
        [1, 2, 3],
        "supervisord's back-off"
    );
    if hard < u64::MAX / 2 {
        let high = with(hard + 1);
        assert_eq!(high.programs[0].rlimits.get("nofile"), Some(&hard));
        assert!(high.warnings.join("\n").contains("above the hard limit"));
    }
    if soft < hard {
        let mid = with(soft + 1);
        assert_eq!(mid.programs[0].rlimits.get("nofile"), Some(&(soft + 1)));
    }
}

#[test]
fn a_program_in_two_files_is_an_error_naming_both() {
    let e = read(&[
        ("a.conf", "[program:web]\ncommand=/bin/true\n"),
        ("b.conf", "[program:web]\ncommand=/bin/false\n"),
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("a.conf:1") && e.contains("b.conf:1"), "{e}");
    assert!(e.contains("[program:web] is defined twice"), "{e}");
}

#[test]
fn load_follows_the_config_and_overrides() {
    let (_d, root, _) = root_with(HEAD, &[("web.conf", "[program:web]\ncommand=/bin/true\n")]);
    let yaml = root.dir().join("cfy-init.yaml");
    std::fs::write(
        &yaml,
        "supervisord:\n  socket: /run/other.sock\n  overrides:\n    web:\n      required: true\n      depends_on: [db]\n      readiness: {check: {type: file, path: /run/web.ready}}\n",
    )
    .unwrap();
    let config = Config::load(Some(&yaml), &root).unwrap();
    let ctx = Context {
        config,
        root: root.clone(),
        config_path: Some(yaml),
    };
    let loaded = load(&ctx).unwrap();
    let web = &loaded.programs[0];
    assert!(web.required);
    assert_eq!(web.depends_on, ["db"]);
    let check = format!("{:?}", web.readiness.check);
    assert!(
        check.contains(&root.dir().display().to_string()),
        "re-rooted: {check}"
    );
    assert_eq!(
        loaded.server.unwrap().socket,
        root.path(Path::new("/run/other.sock"))
    );

    // No supervisord.conf at all: nothing to run, nothing to serve, no error.
    let empty = tempfile::tempdir().unwrap();
    let ctx = Context {
        config: Config::load(None, &Root::new(empty.path())).unwrap(),
        root: Root::new(empty.path()),
        config_path: None,
    };
    let loaded = load(&ctx).unwrap();
    assert!(loaded.programs.is_empty() && loaded.server.is_none());
}

#[test]
fn groups_and_order_follow_supervisord() {
    let p = read(&[(
        "a.conf",
        "[program:late]\ncommand=/bin/true\npriority=900\n[program:early]\ncommand=/bin/true\npriority=1\n\
         [group:g]\nprograms=m2,m1\n[program:m1]\ncommand=/bin/true\npriority=2\n[program:m2]\ncommand=/bin/true\npriority=3\n",
    )])
    .unwrap();
    let names: Vec<(&str, &str)> = p
        .programs
        .iter()
        .map(|s| (s.group_name(), s.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("early", "early"),
            ("late", "late"),
            ("g", "m1"),
            ("g", "m2")
        ]
    );
}

/// The embedded default serves Cloudify 6.x/7.x as well as 5.1: the socket comes from the
/// image's supervisord.conf (7.0's: /var/run/supervisord.sock, group cfyuser) and
/// postgresql-14 gets the same readiness check as 5.1's postgresql-9.5.
#[test]
fn embedded_default_covers_cloudify_7() {
    let main = "[supervisord]\nuser = root\n\n[unix_http_server]\nfile = /var/run/supervisord.sock\nchmod = 0770\n\n[supervisorctl]\nserverurl = unix:///var/run/supervisord.sock\n\n[include]\nfiles=/etc/supervisord.d/*.conf\n";
    let pg =
        "[program:postgresql-14]\ncommand=/var/lib/pgsql/postgresql_server_wrapper_script.sh\n";
    let (_d, root, conf) = root_with(main, &[("postgresql-14.cloudify.conf", pg)]);
    let cfg = Config::embedded();
    assert_eq!(cfg.supervisord.socket, None, "the file's socket is used");
    let p = conf::read(&conf, &root, &cfg.supervisord.overrides).unwrap();
    let server = p.server.unwrap();
    assert_eq!(
        server.socket,
        root.path(Path::new("/var/run/supervisord.sock"))
    );
    let check = format!("{:?}", p.programs[0].readiness.check);
    assert!(check.contains("127.0.0.1:5432"), "{check}");
}

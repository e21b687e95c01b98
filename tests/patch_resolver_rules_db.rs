//! scripts/load-resolver-rules.py against a real PostgreSQL holding a minimal
//! `provider_context` table shaped like the manager's (id, name, pickled context): the rules
//! of the patched config.yaml land first, stale ones are replaced, the REST restart command
//! runs only on a change, and bad input gives one line and exit 1.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Debian's Python, which has python3-yaml and python3-psycopg2.
const PYTHON: &str = "/usr/bin/python3";
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/scripts/load-resolver-rules.py"
);

/// A throwaway PostgreSQL cluster listening only on a unix socket in its own temp dir.
struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    server: Child,
}

fn pg_bin(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = glob::glob(&format!("/usr/lib/postgresql/*/bin/{name}"))
        .unwrap()
        .flatten()
        .collect();
    found.sort();
    found
        .pop()
        .expect("postgresql is installed (scripts/install-deps.sh)")
}

/// `cmd` run directly as the postgres user (no runuser in between, so that signals sent
/// to the child's pid reach the server itself).
fn as_postgres(cmd: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let user = nix::unistd::User::from_name("postgres")
        .unwrap()
        .expect("the postgres user exists (postgresql is installed)");
    let mut c = Command::new(cmd);
    c.uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .env("HOME", "/tmp");
    c
}

impl Postgres {
    fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::create_dir(base.join("data")).unwrap();
        std::fs::create_dir(base.join("sock")).unwrap();
        for p in [base, &base.join("data"), &base.join("sock")] {
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(p)
                .status()
                .unwrap();
        }
        let out = as_postgres(&pg_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(base.join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Unique per test process and instance; it only names the socket file.
        let port = 20000 + (std::process::id() % 20000) as u16;
        let server = as_postgres(&pg_bin("postgres"))
            .arg("-D")
            .arg(base.join("data"))
            .args(["-c", "listen_addresses=", "-p", &port.to_string(), "-k"])
            .arg(base.join("sock"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pg = Postgres { dir, port, server };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !pg.psql("SELECT 1").status.success() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(pg.psql("CREATE DATABASE cloudify_db").status.success());
        let out = pg.psql_db(
            "CREATE TABLE provider_context (id text PRIMARY KEY, name text NOT NULL, context bytea NOT NULL)",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg
    }

    fn psql_in(&self, db: &str, sql: &str) -> Output {
        Command::new(pg_bin("psql"))
            .arg("-h")
            .arg(self.dir.path().join("sock"))
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
            ])
            .arg("ON_ERROR_STOP=1")
            .args(["-c", sql])
            .output()
            .unwrap()
    }

    fn psql(&self, sql: &str) -> Output {
        self.psql_in("postgres", sql)
    }

    fn psql_db(&self, sql: &str) -> Output {
        self.psql_in("cloudify_db", sql)
    }

    fn dsn(&self) -> String {
        format!(
            "host={} port={} dbname=cloudify_db user=postgres",
            self.dir.path().join("sock").display(),
            self.port
        )
    }

    /// Run Python with psycopg2 against the database; `code` sees `conn` and `pickle`.
    fn python(&self, code: &str) -> String {
        let script = format!(
            "import json, pickle, psycopg2\nconn = psycopg2.connect({:?})\n{code}\nconn.commit()\n",
            self.dsn()
        );
        let out = Command::new(PYTHON).args(["-c", &script]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Store a provider context whose rules are `rules` (JSON list of one-entry objects).
    fn set_context(&self, rules: &serde_json::Value) {
        self.python(&format!(
            "ctx = {{'name': 'provider', 'context': None, 'cloudify': {{'import_resolver': \
             {{'parameters': {{'rules': json.loads({:?}), 'fallback': True}}}}}}}}\n\
             cur = conn.cursor()\ncur.execute('DELETE FROM provider_context')\n\
             cur.execute('INSERT INTO provider_context VALUES (%s, %s, %s)', \
             ('CONTEXT', 'provider', psycopg2.Binary(pickle.dumps(ctx, protocol=2))))",
            rules.to_string()
        ));
    }

    /// The rules and the rest of the stored context, as JSON.
    fn context(&self) -> serde_json::Value {
        let out = self.python(
            "cur = conn.cursor()\ncur.execute(\"SELECT context FROM provider_context WHERE id='CONTEXT'\")\n\
             print(json.dumps(pickle.loads(bytes(cur.fetchone()[0]))))",
        );
        serde_json::from_str(&out).unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Fast shutdown (SIGINT), then reap.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.server.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.server.wait();
    }
}

/// Two rules in the shape of ONAP's (the embedded default has none).
const TEST_CONFIG: &str = "patch:
  rules:
    - prefix: https://plugins.example.org/raw/content/org.onap.dcaegen2.platform.plugins/R6
      target_url: file:///opt/manager/resources/onapspec
    - prefix: https://plugins.example.org/raw/content/org.onap.ccsdk.platform.plugins
      target_url: file:///opt/manager/resources/onapspec
";

/// config.yaml as cfy-init's patch step leaves it (the 5.1.2 fixture, patched).
fn patched_config(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc/cloudify")).unwrap();
    let file = root.join("etc/cloudify/config.yaml");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/cloudify-config/config-5.1.2.yaml"
        ),
        &file,
    )
    .unwrap();
    let cfg = dir.join("cfy-init.yaml");
    std::fs::write(&cfg, TEST_CONFIG).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cfy-init"))
        .arg("--root")
        .arg(&root)
        .arg("--config")
        .arg(&cfg)
        .arg("patch")
        .env_remove("CFY_INIT_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    file
}

fn run_script(pg: &Postgres, config: &Path, restart_marker: &Path, extra: &[&str]) -> Output {
    Command::new(PYTHON)
        .arg(SCRIPT)
        .arg("--config")
        .arg(config)
        .args(["--backend", "sql", "--dsn", &pg.dsn(), "--restart"])
        .arg(format!("touch {}", restart_marker.display()))
        .args(extra)
        .output()
        .unwrap()
}

fn rule(p: &str, t: &str) -> serde_json::Value {
    serde_json::json!({ p: t })
}

#[test]
fn rules_reach_the_database_first_once_and_restart_the_rest_service() {
    let pg = Postgres::start();
    let work = tempfile::tempdir().unwrap();
    let config = patched_config(work.path());
    let onap = cfy_init::config::from_str(TEST_CONFIG, Path::new("test"))
        .unwrap()
        .patch
        .rules;
    let spec = "file:///opt/manager/resources/spec";
    // What the manager stored at install: Cloudify's own rules, one stale ONAP rule and one
    // rule added later through the API.
    pg.set_context(&serde_json::json!([
        rule("http://www.getcloudify.org/spec", spec),
        rule(&onap[0].prefix, "file:///stale"),
        rule("http://added.by.api/x", "file:///x"),
    ]));
    let restarted = work.path().join("restarted");

    let out = run_script(&pg, &config, &restarted, &["--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!restarted.exists(), "dry run restarts nothing");
    assert_eq!(
        pg.context()["cloudify"]["import_resolver"]["parameters"]["rules"][1][&onap[0].prefix],
        "file:///stale",
        "dry run writes nothing"
    );

    let out = run_script(&pg, &config, &restarted, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(restarted.exists(), "REST service restarted: {stdout}");

    let ctx = pg.context();
    let rules = ctx["cloudify"]["import_resolver"]["parameters"]["rules"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rules[0], rule(&onap[0].prefix, &onap[0].target_url));
    assert_eq!(rules[1], rule(&onap[1].prefix, &onap[1].target_url));
    // Then config.yaml's own rules (the eight Cloudify spec rules of 5.1.2), then the
    // API-added one; the stale ONAP rule is gone.
    assert_eq!(rules.len(), 2 + 8 + 1, "{rules:?}");
    assert_eq!(rules[2], rule("http://www.getcloudify.org/spec", spec));
    assert_eq!(rules[10], rule("http://added.by.api/x", "file:///x"));
    assert!(!ctx.to_string().contains("file:///stale"));
    // The rest of the context is kept.
    assert_eq!(ctx["name"], "provider");
    assert_eq!(
        ctx["cloudify"]["import_resolver"]["parameters"]["fallback"],
        true
    );

    // Second run: nothing to write, no restart.
    std::fs::remove_file(&restarted).unwrap();
    let out = run_script(&pg, &config, &restarted, &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("already has them"));
    assert!(!restarted.exists(), "no restart without a change");
    assert_eq!(pg.context(), ctx);

    // Bad input: one line on stderr, exit 1, database unchanged.
    let broken = work.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "provider_context:\n  import_resolver:\n    parameters:\n      rules: 7\n",
    )
    .unwrap();
    let out = run_script(&pg, &broken, &restarted, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("broken.yaml") && err.contains("not a list"),
        "{err}"
    );
    assert_eq!(pg.context(), ctx);

    assert!(pg.psql_db("DELETE FROM provider_context").status.success());
    let out = run_script(&pg, &config, &restarted, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("no provider context yet"), "{err}");

    let out = Command::new(PYTHON)
        .arg(SCRIPT)
        .arg("--config")
        .arg(&config)
        .args([
            "--backend",
            "sql",
            "--dsn",
            "host=/nonexistent port=1 dbname=x",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot connect to the manager database"),
        "{err}"
    );
    assert!(!restarted.exists());

    // Outside the manager's virtualenv the manager backend says where to run it.
    let out = Command::new(PYTHON)
        .arg(SCRIPT)
        .arg("--config")
        .arg(&config)
        .args(["--backend", "manager"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("/opt/manager/env/bin/python"), "{err}");
}

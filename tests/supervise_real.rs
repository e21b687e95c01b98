//! cfy-init as PID 1 supervising real PostgreSQL, nginx and RabbitMQ from Debian's
//! packages, each as its own user: dependency order and readiness, crash → restart with
//! data intact, back-off → FATAL of a required service, ordered and clean shutdown.

#[path = "common/services.rs"]
mod services;

use std::io::{Read, Write};

use services::{Init, Nginx, Postgres, Rabbit, Sandbox};

fn http_get(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn first(init: &Init, msg: &str, service: &str) -> usize {
    *init
        .find(msg, service)
        .first()
        .unwrap_or_else(|| panic!("no {msg:?} for {service}; log:\n{}", init.log_text()))
}

/// Lines PostgreSQL itself logged (its stderr, through cfy-init's log).
fn pg_lines(init: &Init, name: &str) -> Vec<String> {
    init.events()
        .iter()
        .filter(|e| e["service"] == name && e["stream"] == "stderr")
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn postgres_order_readiness_crash_restart_and_clean_shutdown() {
    let sb = Sandbox::new();
    let pg = Postgres::init(&sb, "pg");
    let web = Nginx::new(&sb, "nginx");
    let client =
        pg.psql_argv("CREATE TABLE IF NOT EXISTS t(v text); INSERT INTO t VALUES ('kept')");
    let probe = pg.psql_argv("SELECT 1");
    let config = format!(
        r#"
supervise:
  shutdown_deadline: 30s
  services:
{pg_spec}    - name: schema
      kind: oneshot
      command: {client}
      depends_on: [postgres]
      startretries: 0
      required: true
    - name: app
      command: [sh, -c, '"$@" && exec sleep 100000', sh, {probe_args}]
      depends_on: [schema]
      startretries: 0
      startsecs: 0s
      required: true
{web_spec}"#,
        pg_spec = pg.spec("postgres", "      required: true\n"),
        probe_args = &probe[1..probe.len() - 1],
        web_spec = web.spec("web", "      depends_on: [app]\n"),
    );
    let mut init = sb.start(&config, &[], "run1.log");
    init.wait_event("ready", "web", 1);

    // Order: the client ran only after PostgreSQL accepted connections, and succeeded.
    init.check(
        first(&init, "ready", "postgres") < first(&init, "started", "schema"),
        "schema started before postgres was ready",
    );
    init.check(
        !init.find("completed", "schema").is_empty(),
        "schema did not complete",
    );
    init.check(
        first(&init, "completed", "schema") < first(&init, "started", "app"),
        "app started before schema completed",
    );
    init.check(
        first(&init, "running and ready", "app") < first(&init, "started", "web"),
        "web started before app",
    );
    assert!(http_get(web.port).contains("cfy-init test"));
    assert_eq!(pg.psql("SELECT v FROM t").unwrap(), "kept");

    // kill -9 PostgreSQL: restarted, ready again, data intact.
    let data = pg.data.display().to_string();
    let pid = init
        .service_pid(&data)
        .expect("postgres is a child of cfy-init");
    // SAFETY: plain syscall on a pid we just found.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    init.wait_event("ready", "postgres", 2);
    // Restarted at once; a second attempt is allowed only for PostgreSQL's own refusal while
    // the killed postmaster's backends still hold its shared memory for a moment.
    let starts = init.find("started", "postgres").len();
    init.check(
        starts == 2
            || (starts == 3
                && pg_lines(&init, "postgres")
                    .iter()
                    .any(|l| l.contains("pre-existing shared memory block"))),
        &format!("postgres started {starts} times to recover from one kill"),
    );
    let again = init.service_pid(&data).unwrap();
    assert_ne!(again, pid);
    assert_eq!(pg.psql("SELECT v FROM t").unwrap(), "kept");

    // Ordered shutdown: web, then app, then postgres; everything exits cleanly.
    init.signal(libc::SIGTERM);
    let code = init.wait_exit().code().unwrap();
    init.check(code == 0, &format!("exit {code}, want 0"));
    init.check(
        first(&init, "stopped", "web") < first(&init, "stopping", "app")
            && first(&init, "stopped", "app") < first(&init, "stopping", "postgres"),
        "shutdown not in reverse dependency order",
    );
    let pg1 = pg_lines(&init, "postgres");
    init.check(
        pg1.iter()
            .any(|l| l.contains("database system is shut down")),
        "postgres did not finish its shutdown",
    );

    // The next start needs no crash recovery.
    let config2 = format!(
        "supervise:\n  shutdown_deadline: 30s\n  services:\n{}",
        pg.spec("postgres", "")
    );
    let mut init2 = sb.start(&config2, &[], "run2.log");
    init2.wait_event("ready", "postgres", 1);
    assert_eq!(pg.psql("SELECT v FROM t").unwrap(), "kept");
    init2.signal(libc::SIGTERM);
    assert_eq!(init2.wait_exit().code(), Some(0));
    let pg2 = pg_lines(&init2, "postgres");
    init2.check(
        pg2.iter()
            .any(|l| l.contains("database system was shut down at")),
        "postgres did not report a clean previous shutdown",
    );
    init2.check(
        !pg2.iter()
            .any(|l| l.contains("not properly shut down") || l.contains("automatic recovery")),
        "postgres needed crash recovery",
    );
}

#[test]
fn required_service_exiting_at_once_backs_off_then_fails_the_init() {
    let sb = Sandbox::new();
    let pg = Postgres::init(&sb, "pg");
    // A real PostgreSQL pointed at a data directory that does not exist exits at once.
    let broken = Postgres {
        data: sb.path("pg/missing"),
        sock: pg.sock.clone(),
        port: pg.port,
    };
    let config = format!(
        "supervise:\n  services:\n{}{}",
        broken.spec(
            "postgres",
            "      required: true\n      startretries: 2\n      backoff: {initial: 50ms, max: 1s}\n"
        ),
        "    - name: bystander\n      command: [sleep, '1000']\n      startsecs: 0s\n",
    );
    let mut init = sb.start(&config, &[], "fail.log");
    let code = init.wait_exit().code().unwrap();
    init.check(code == 1, &format!("exit {code}, want 1"));
    let events = init.events();
    let retries = events
        .iter()
        .filter(|e| e["service"] == "postgres")
        .filter(|e| e["message"].as_str().unwrap_or("").contains("retrying in"))
        .count();
    init.check(retries == 2, &format!("{retries} back-offs, want 2"));
    init.check(
        init.find("started", "postgres").len() == 3,
        "want 3 attempts",
    );
    init.check(
        events.iter().any(|e| {
            e["service"] == "postgres"
                && e["message"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("failed for good: Exited too quickly")
        }),
        "no FATAL",
    );
    init.check(
        !init.find("stopped", "bystander").is_empty(),
        "the other service was not stopped",
    );
    init.check(
        pg_lines(&init, "postgres")
            .iter()
            .any(|l| l.contains("No such file or directory") || l.contains("does not exist")),
        "postgres' own error not logged",
    );
}

#[test]
fn rabbitmq_slow_start_gates_its_dependent_and_stops_cleanly() {
    let sb = Sandbox::new();
    let mq = Rabbit::new(&sb, "mq");
    let web = Nginx::new(&sb, "nginx");
    let config = format!(
        "supervise:\n  shutdown_deadline: 60s\n  services:\n{}{}",
        mq.spec("rabbitmq", "      required: true\n"),
        web.spec("web", "      depends_on: [rabbitmq]\n"),
    );
    let mut init = sb.start(&config, &[], "mq.log");
    init.wait_event("ready", "web", 1);
    init.check(
        first(&init, "ready", "rabbitmq") < first(&init, "started", "web"),
        "nginx started before RabbitMQ accepted connections",
    );
    let mut amqp = std::net::TcpStream::connect(("127.0.0.1", mq.port)).unwrap();
    amqp.write_all(b"AMQP\x00\x00\x09\x01").unwrap();
    let mut frame = [0u8; 1];
    amqp.read_exact(&mut frame).unwrap();
    assert_eq!(
        frame[0], 1,
        "RabbitMQ answers the AMQP handshake with a method frame"
    );
    drop(amqp);
    init.signal(libc::SIGTERM);
    let code = init.wait_exit().code().unwrap();
    init.check(code == 0, &format!("exit {code}, want 0"));
    init.check(
        first(&init, "stopped", "web") < first(&init, "stopping", "rabbitmq"),
        "RabbitMQ stopped before its dependent",
    );
    let exit = init
        .events()
        .into_iter()
        .find(|e| e["message"] == "exited" && e["service"] == "rabbitmq")
        .unwrap();
    init.check(exit["code"] == 0, "RabbitMQ did not exit cleanly on TERM");
}

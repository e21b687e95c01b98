//! `cfy-init patch` and `patch::set_admin_password` on the real Cloudify config.yaml files of
//! 4.4, 4.5 and 5.1.2: rules first, idempotent, every other byte kept, confirmed by a second
//! YAML implementation (PyYAML); hostile passwords round-trip; bad input leaves the file alone.

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cfy_init::config::{Config, Context, Root};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/cloudify-config"
);
const RELEASES: &[&str] = &["4.4", "4.5", "5.1.2"];
const ONAP_TARGET: &str = "file:///opt/manager/resources/onapspec";
/// Two rules in the shape of ONAP's (the embedded default has none; see patch.yaml).
const TEST_RULES: &str = "  rules:
    - prefix: https://plugins.example.org/raw/content/org.onap.dcaegen2.platform.plugins/R6
      target_url: file:///opt/manager/resources/onapspec
    - prefix: https://plugins.example.org/raw/content/org.onap.ccsdk.platform.plugins
      target_url: file:///opt/manager/resources/onapspec
";

/// `cfy_init_config` with [`TEST_RULES`] added to its `patch:` section unless it sets rules.
fn with_test_rules(cfy_init_config: &str) -> String {
    if cfy_init_config.contains("rules:") {
        return cfy_init_config.to_string();
    }
    let body = cfy_init_config
        .strip_prefix("patch: {}\n")
        .or_else(|| cfy_init_config.strip_prefix("patch:\n"))
        .expect("test configs start with a patch: section");
    format!("patch:\n{TEST_RULES}{body}")
}

fn fixture(release: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/config-{release}.yaml")).unwrap()
}

/// A root holding `etc/cloudify/config.yaml` with `text`, and a cfy-init config file.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new(text: &str, cfy_init_config: &str) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/cloudify")).unwrap();
        std::fs::write(dir.path().join("etc/cloudify/config.yaml"), text).unwrap();
        std::fs::write(
            dir.path().join("cfy-init.yaml"),
            with_test_rules(cfy_init_config),
        )
        .unwrap();
        Sandbox { dir }
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("etc/cloudify/config.yaml")
    }

    fn read(&self) -> String {
        std::fs::read_to_string(self.file()).unwrap()
    }

    fn patch(&self) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cfy-init"))
            .arg("--root")
            .arg(self.dir.path())
            .arg("--config")
            .arg(self.dir.path().join("cfy-init.yaml"))
            .arg("patch")
            .env_remove("CFY_INIT_CONFIG")
            .env_remove("CFY_INIT_ROOT")
            .output()
            .unwrap()
    }

    fn context(&self) -> Context {
        let root = Root::new(self.dir.path());
        let cfg = self.dir.path().join("cfy-init.yaml");
        Context {
            config: Config::load(Some(&cfg), &root).unwrap(),
            root,
            config_path: Some(cfg),
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The test rules (as a list of [prefix, target]) read through the config loader.
fn default_rules() -> Vec<(String, String)> {
    let c =
        cfy_init::config::from_str(&format!("patch:\n{TEST_RULES}"), Path::new("test")).unwrap();
    assert_eq!(c.patch.rules.len(), 2);
    c.patch
        .rules
        .iter()
        .map(|r| (r.prefix.clone(), r.target_url.clone()))
        .collect()
}

/// Load `file` with PyYAML and print the rules list and the admin password as JSON.
fn pyyaml(file: &Path) -> serde_json::Value {
    pyyaml_many(&[file.to_path_buf()]).remove(0)
}

/// [`pyyaml`] for several files in one Python process.
fn pyyaml_many(files: &[PathBuf]) -> Vec<serde_json::Value> {
    let script = r#"
import json, sys, yaml
for f in sys.argv[1:]:
    d = yaml.safe_load(open(f, encoding='utf-8'))
    rules = d['provider_context']['import_resolver']['parameters']['rules']
    print(json.dumps({'rules': [list(r.items()) for r in rules],
                      'password': d['manager']['security']['admin_password'],
                      'service_management': d.get('service_management')}))
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .args(files)
        .output()
        .expect("Debian python3 with python3-yaml is installed");
    assert!(out.status.success(), "PyYAML failed: {}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), files.len());
    lines
}

fn rules_only_config() -> &'static str {
    "patch:\n  service_management: null\n"
}

#[test]
fn every_fixture_gets_the_rules_first_and_nothing_else_changes() {
    let rules = default_rules();
    for release in RELEASES {
        let original = fixture(release);
        let sb = Sandbox::new(&original, rules_only_config());
        let out = sb.patch();
        assert!(out.status.success(), "{release}: {}", stderr(&out));
        let once = sb.read();
        assert_ne!(once, original, "{release}: rules were added");

        // The line diff only inserts: removing the lines naming our prefixes gives back
        // the original, byte for byte.
        let inserted: Vec<&str> = once
            .lines()
            .filter(|l| rules.iter().any(|(p, _)| l.contains(p.as_str())))
            .collect();
        assert_eq!(inserted.len(), rules.len(), "{release}: one line per rule");
        let rest: Vec<&str> = once
            .lines()
            .filter(|l| !rules.iter().any(|(p, _)| l.contains(p.as_str())))
            .collect();
        assert_eq!(rest, original.lines().collect::<Vec<_>>(), "{release}");
        assert!(once.ends_with('\n') == original.ends_with('\n'));

        // New items follow the list's indentation and quoting.
        let first_old = original
            .lines()
            .find(|l| l.trim_start().starts_with("- {") && l.contains("/spec"))
            .unwrap();
        let indent = first_old.len() - first_old.trim_start().len();
        let quoted = first_old.trim_start().starts_with("- {'");
        for line in &inserted {
            assert_eq!(
                line.len() - line.trim_start().len(),
                indent,
                "{release}: {line}"
            );
            assert_eq!(
                line.trim_start().starts_with("- {'"),
                quoted,
                "{release}: {line}"
            );
        }

        // Rules first, in order, in a second YAML implementation.
        let py = pyyaml(&sb.file());
        let got = py["rules"].as_array().unwrap();
        for (i, (p, t)) in rules.iter().enumerate() {
            assert_eq!(got[i], serde_json::json!([[p, t]]), "{release}: rule {i}");
        }
        let old = pyyaml(&{
            let f = sb.dir.path().join("orig.yaml");
            std::fs::write(&f, &original).unwrap();
            f
        });
        assert_eq!(
            &got[rules.len()..],
            old["rules"].as_array().unwrap().as_slice(),
            "{release}: the original rules follow"
        );

        // Twice equals once; the backup is the original and is written once.
        let out = sb.patch();
        assert!(out.status.success(), "{release}: {}", stderr(&out));
        assert_eq!(sb.read(), once, "{release}: idempotent");
        let backup = sb.dir.path().join("etc/cloudify/config.yaml.cfy-init.orig");
        assert_eq!(std::fs::read_to_string(backup).unwrap(), original);
    }
}

#[test]
fn a_changed_rule_for_the_same_prefix_is_replaced_not_duplicated() {
    let rules = default_rules();
    let original = fixture("5.1.2");
    let (p0, _) = &rules[0];
    let stale = original.replacen(
        "      rules:\n",
        &format!("      rules:\n      - {{{p0}: file:///old/place}}\n"),
        1,
    );
    let sb = Sandbox::new(&stale, rules_only_config());
    assert!(sb.patch().status.success());
    let text = sb.read();
    assert_eq!(text.matches(p0.as_str()).count(), 1, "{text}");
    assert!(!text.contains("file:///old/place"));
    let py = pyyaml(&sb.file());
    assert_eq!(py["rules"][0], serde_json::json!([[p0, ONAP_TARGET]]));
}

#[test]
fn service_management_is_set_in_place_on_5_1() {
    let sb = Sandbox::new(&fixture("5.1.2"), "patch: {}\n");
    assert!(sb.patch().status.success());
    let text = sb.read();
    assert!(
        text.contains("\nservice_management: supervisord\n"),
        "replaced in place"
    );
    assert!(!text.contains("service_management: systemd"));
    assert!(text.contains("# Set this to supervisord to use supervisord."));
    assert_eq!(pyyaml(&sb.file())["service_management"], "supervisord");
}

/// Releases before 5.1 have no `service_management` key and run only under systemd: the key
/// is not added, and the boot says so in one line.
#[test]
fn service_management_is_left_alone_where_the_release_has_no_such_key() {
    for release in ["4.4", "4.5"] {
        let original = fixture(release);
        assert!(
            !original.contains("service_management"),
            "{release} fixture"
        );
        let sb = Sandbox::new(&original, "patch: {}\n");
        let out = sb.patch();
        assert!(out.status.success(), "{release}: {}", stderr(&out));
        assert!(
            !sb.read().contains("service_management"),
            "{release}: service_management was added"
        );
        assert_eq!(
            pyyaml(&sb.file())["service_management"],
            serde_json::Value::Null
        );
        let err = stderr(&out);
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("no service_management key"))
            .collect();
        assert_eq!(lines.len(), 1, "{release}: one line saying so:\n{err}");
        assert!(lines[0].contains("5.1"), "{release}: {}", lines[0]);
    }
}

#[test]
fn the_file_behind_the_persist_link_is_edited_and_the_link_kept() {
    let sb = Sandbox::new("", rules_only_config());
    let root = sb.dir.path();
    std::fs::remove_dir_all(root.join("etc/cloudify")).unwrap();
    std::fs::create_dir_all(root.join("cfy-persist/etc/cloudify")).unwrap();
    let stored = root.join("cfy-persist/etc/cloudify/config.yaml");
    std::fs::write(&stored, fixture("4.5")).unwrap();
    std::fs::set_permissions(&stored, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&stored, Some(1500), Some(1500)).unwrap();
    // Written as the container sees it (absolute, inside the root).
    symlink("/cfy-persist//etc/cloudify", root.join("etc/cloudify")).unwrap();
    let out = sb.patch();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::symlink_metadata(root.join("etc/cloudify"))
        .unwrap()
        .file_type()
        .is_symlink());
    let text = std::fs::read_to_string(&stored).unwrap();
    assert!(text.contains(ONAP_TARGET));
    let m = std::fs::metadata(&stored).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 1500, 1500));
}

/// Passwords that break naive quoting.
const HOSTILE: &[&str] = &[
    "it's",
    "say \"hi\"",
    "a # not a comment",
    "key: value",
    "- dash",
    "two\nlines",
    "  leading and trailing  ",
    "back\\slash",
    "ünïcødé ✓ 😀",
    "{flow}, [x]",
    "&anchor *alias !tag %pct @at `tick` |pipe >gt",
    "null",
    "true",
    "0o17",
    "tab\there",
    "cr\rlf",
    "\u{2028}line sep",
];

#[test]
fn hostile_admin_passwords_round_trip_exactly() {
    // Sandboxes kept alive until PyYAML has read them all in one process.
    let mut checked = Vec::new();
    for (i, pw) in HOSTILE.iter().enumerate() {
        for release in RELEASES {
            let sb = Sandbox::new(
                &fixture(release),
                "patch:\n  admin_password:\n    env: null\n",
            );
            let pw_file = sb.dir.path().join("opt/onap/cm-secrets/password");
            std::fs::create_dir_all(pw_file.parent().unwrap()).unwrap();
            // The file source drops trailing newlines, as the legacy `$(cat ...)` did.
            std::fs::write(&pw_file, format!("{pw}\n")).unwrap();
            let original = sb.read();
            let ctx = sb.context();
            cfy_init::patch::set_admin_password(&ctx).unwrap();
            let text = sb.read();

            let v: serde_norway::Value = serde_norway::from_str(&text).unwrap();
            assert_eq!(
                v["manager"]["security"]["admin_password"].as_str(),
                Some(*pw),
                "case {i} on {release}: serde_norway"
            );
            // Only the password line changed, and the value sits on one line.
            let changed: Vec<(&str, &str)> = original
                .lines()
                .zip(text.lines())
                .filter(|(a, b)| a != b)
                .collect();
            assert_eq!(changed.len(), 1, "case {i} on {release}");
            assert!(changed[0].0.trim_start().starts_with("admin_password: ''"));
            assert_eq!(original.lines().count(), text.lines().count());

            // Setting it again changes nothing.
            cfy_init::patch::set_admin_password(&ctx).unwrap();
            assert_eq!(sb.read(), text, "case {i} on {release}: idempotent");
            checked.push((i, *release, sb));
        }
    }
    let files: Vec<PathBuf> = checked.iter().map(|(_, _, sb)| sb.file()).collect();
    for ((i, release, _), py) in checked.iter().zip(pyyaml_many(&files)) {
        assert_eq!(
            py["password"].as_str(),
            Some(HOSTILE[*i]),
            "case {i} on {release}: PyYAML"
        );
    }
}

#[test]
fn password_sources_in_order_env_file_fallback() {
    use cfy_init::config::Secret;
    use cfy_init::patch::{resolve_password, PasswordSources};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    let var = format!("CFY_TEST_PW_{}", std::process::id());
    let src = PasswordSources {
        env: Some(var.clone()),
        file: Some(file.clone()),
        fallback: Secret::new("fallback-pw"),
        ..PasswordSources::default()
    };
    assert_eq!(resolve_password(&src).unwrap().0.expose(), "fallback-pw");
    std::fs::write(&file, "from-file\n\n").unwrap();
    assert_eq!(resolve_password(&src).unwrap().0.expose(), "from-file");
    std::env::set_var(&var, "");
    assert_eq!(
        resolve_password(&src).unwrap().1,
        "file",
        "empty env is unset"
    );
    std::env::set_var(&var, "from-env");
    assert_eq!(resolve_password(&src).unwrap().0.expose(), "from-env");
    std::env::remove_var(&var);
}

#[test]
fn the_password_never_reaches_logs_or_errors() {
    let secret = "s3cr3t-Pa55-\u{e9}";
    let sb = Sandbox::new("manager: [not, a, mapping]\n", "patch: {}\n");
    let pw_file = sb.dir.path().join("opt/onap/cm-secrets/password");
    std::fs::create_dir_all(pw_file.parent().unwrap()).unwrap();
    std::fs::write(&pw_file, secret).unwrap();
    let err = cfy_init::patch::set_admin_password(&sb.context()).unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(!msg.contains(secret), "{msg}");
    assert!(msg.contains("config.yaml"), "{msg}");
}

/// Runs `cfy-init patch` on bad input with `required` true and false: one clear error
/// naming the file, exit status by `required`, bytes unchanged.
fn bad_input(text: Option<&str>, extra_config: &str, setup: impl Fn(&Path), expect: &[&str]) {
    for required in [true, false] {
        let sb = Sandbox::new(
            text.unwrap_or(""),
            &format!("patch:\n  required: {required}\n{extra_config}"),
        );
        if text.is_none() {
            std::fs::remove_file(sb.file()).unwrap();
        }
        setup(&sb.file());
        let before = std::fs::read(sb.file()).ok();
        let out = sb.patch();
        let err = stderr(&out);
        assert_eq!(
            out.status.success(),
            !required,
            "required={required}: {err}"
        );
        for e in expect {
            let e = e.replace("{file}", &sb.file().display().to_string());
            assert!(err.contains(&e), "required={required}: want {e:?} in {err}");
        }
        assert_eq!(std::fs::read(sb.file()).ok(), before, "file untouched");
        let names: Vec<_> = std::fs::read_dir(sb.file().parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(names.len() <= 1, "no backup or temp file left: {names:?}");
    }
}

#[test]
fn missing_config_yaml_is_one_clear_error() {
    bad_input(None, "", |_| {}, &["{file}: cannot read Cloudify's config"]);
}

#[test]
fn unparsable_config_yaml_names_file_and_line() {
    let broken = fixture("4.4").replacen("  import_resolver:\n", "  import_resolver: [\n", 1);
    let line = broken
        .lines()
        .position(|l| l.contains("import_resolver: ["))
        .unwrap()
        + 1;
    bad_input(Some(&broken), "", |_| {}, &["{file}:", "not valid YAML"]);
    // The reported line is at or after the broken one.
    let sb = Sandbox::new(&broken, "patch:\n  required: true\n");
    let err = stderr(&sb.patch());
    let file = sb.file().display().to_string();
    let at = err.find(&format!("{file}:")).unwrap() + file.len() + 1;
    let reported: usize = err[at..].split(':').next().unwrap().parse().unwrap();
    assert!(
        reported >= line,
        "line {reported} vs broken line {line}: {err}"
    );
}

#[test]
fn rules_that_is_not_a_list_is_refused() {
    let text = fixture("5.1.2").replacen(
        "      rules:\n",
        "      rules: not-a-list\n      old_rules:\n",
        1,
    );
    bad_input(Some(&text), "", |_| {}, &["{file}:", "is not a list"]);
}

#[test]
fn read_only_config_yaml_is_refused() {
    bad_input(
        Some(&fixture("5.1.2")),
        "",
        |f| std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o444)).unwrap(),
        &["{file}: is read-only"],
    );
}

#[test]
fn a_rule_whose_target_is_not_a_file_url_is_refused_naming_the_config() {
    let sb = Sandbox::new(
        &fixture("5.1.2"),
        "patch:\n  rules:\n    - prefix: http://x/\n      target_url: http://elsewhere/\n",
    );
    let before = sb.read();
    let out = sb.patch();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("cfy-init.yaml"), "{err}");
    assert!(err.contains("not a file:// URL"), "{err}");
    assert_eq!(sb.read(), before);
}

#[test]
fn read_only_file_system_is_refused_with_one_line() {
    let sb = Sandbox::new(&fixture("5.1.2"), "patch:\n  required: true\n");
    std::fs::set_permissions(sb.file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = std::fs::read(sb.file()).unwrap();
    let etc = sb.dir.path().join("etc/cloudify");
    // A private mount namespace in which the directory is a read-only bind mount.
    let script = r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@""#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&etc)
        .arg(env!("CARGO_BIN_EXE_cfy-init"))
        .arg("--root")
        .arg(sb.dir.path())
        .arg("--config")
        .arg(sb.dir.path().join("cfy-init.yaml"))
        .arg("patch")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "{}: is read-only (read-only file system)",
            sb.file().display()
        )),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(std::fs::read(sb.file()).unwrap(), before);
}

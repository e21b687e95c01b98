//! `cfy-init secret` and the secret watcher on real file systems: the target links (or is
//! bind-mounted) to the source and never holds a copy; token rotation shows through; a tmpfs
//! mounted over the target's parent in a private mount namespace hides it and the watcher
//! restores it.

use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cfy_init::config::{Config, Context, Root};

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.never-print-me.sig";

/// A root with `/var/run -> /run` (as in the image) and the credentials at `/secret`.
fn sandbox() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    std::fs::create_dir_all(r.join("run")).unwrap();
    std::fs::create_dir_all(r.join("var")).unwrap();
    symlink("/run", r.join("var/run")).unwrap();
    std::fs::create_dir_all(r.join("secret")).unwrap();
    std::fs::write(r.join("secret/token"), TOKEN).unwrap();
    std::fs::write(r.join("secret/ca.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    std::fs::write(r.join("secret/namespace"), "onap").unwrap();
    dir
}

fn cfy_init(root: &Path, config: &str) -> Output {
    let cfg = root.join("cfy-init.yaml");
    std::fs::write(&cfg, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_cfy-init"))
        .arg("--root")
        .arg(root)
        .arg("--config")
        .arg(&cfg)
        .arg("secret")
        .env_remove("CFY_INIT_ROOT")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ino(p: &Path) -> (u64, u64) {
    let m = std::fs::metadata(p).unwrap();
    (m.dev(), m.ino())
}

/// Where the target really is: `/var/run` resolves to `/run` inside the root.
fn real_target(root: &Path) -> PathBuf {
    root.join("run/secrets/kubernetes.io/serviceaccount")
}

#[test]
fn missing_target_becomes_a_link_to_the_source_never_a_copy() {
    let dir = sandbox();
    let r = dir.path();
    let out = cfy_init(r, "secret: {}\n");
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("never-print-me"), "token printed");
    let t = real_target(r);
    let m = std::fs::symlink_metadata(&t).unwrap();
    assert!(
        m.file_type().is_symlink(),
        "a link, not a directory of copies"
    );
    assert_eq!(std::fs::read_link(&t).unwrap(), r.join("secret"));
    // Through the link (in the container, `/var/run/...` resolves to this path): the
    // very same file.
    let via = real_target(r).join("token");
    assert_eq!(ino(&via), ino(&r.join("secret/token")));
    // The image's /var/run link is kept.
    assert!(std::fs::symlink_metadata(r.join("var/run"))
        .unwrap()
        .file_type()
        .is_symlink());

    // Running again changes nothing.
    let before = std::fs::symlink_metadata(&t).unwrap().ino();
    assert!(cfy_init(r, "secret: {}\n").status.success());
    assert_eq!(std::fs::symlink_metadata(&t).unwrap().ino(), before);
}

#[test]
fn token_rotation_shows_through_without_any_action() {
    let dir = sandbox();
    let r = dir.path();
    // Kubernetes projects files through a `..data` link swapped atomically on rotation.
    let s = r.join("secret");
    std::fs::remove_file(s.join("token")).unwrap();
    std::fs::create_dir(s.join("..v1")).unwrap();
    std::fs::write(s.join("..v1/token"), "token-v1").unwrap();
    symlink("..v1", s.join("..data")).unwrap();
    symlink("..data/token", s.join("token")).unwrap();
    assert!(cfy_init(r, "secret: {}\n").status.success());
    let via = real_target(r).join("token");
    assert_eq!(std::fs::read_to_string(&via).unwrap(), "token-v1");

    // kubelet-style rotation: new dir, new link, renamed over `..data`.
    std::fs::create_dir(s.join("..v2")).unwrap();
    std::fs::write(s.join("..v2/token"), "token-v2").unwrap();
    symlink("..v2", s.join("..data_tmp")).unwrap();
    std::fs::rename(s.join("..data_tmp"), s.join("..data")).unwrap();
    assert_eq!(std::fs::read_to_string(&via).unwrap(), "token-v2");

    // A plain file replaced by rename in the source.
    std::fs::write(s.join("namespace.new"), "other").unwrap();
    std::fs::rename(s.join("namespace.new"), s.join("namespace")).unwrap();
    let ns = real_target(r).join("namespace");
    assert_eq!(std::fs::read_to_string(&ns).unwrap(), "other");
    assert_eq!(ino(&ns), ino(&s.join("namespace")));
}

#[test]
fn empty_directory_is_replaced_and_a_visible_kubernetes_mount_is_left_alone() {
    let dir = sandbox();
    let r = dir.path();
    std::fs::create_dir_all(real_target(r)).unwrap();
    assert!(cfy_init(r, "secret: {}\n").status.success());
    assert!(std::fs::symlink_metadata(real_target(r))
        .unwrap()
        .file_type()
        .is_symlink());

    let dir = sandbox();
    let r = dir.path();
    let t = real_target(r);
    std::fs::create_dir_all(&t).unwrap();
    for f in ["token", "ca.crt", "namespace"] {
        std::fs::write(t.join(f), "from kubernetes").unwrap();
    }
    let out = cfy_init(r, "secret: {}\n");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        std::fs::symlink_metadata(&t).unwrap().is_dir(),
        "left alone"
    );
    assert_eq!(
        std::fs::read_to_string(t.join("token")).unwrap(),
        "from kubernetes"
    );
}

#[test]
fn occupied_target_is_an_error_naming_it_and_is_not_touched() {
    for required in [false, true] {
        let dir = sandbox();
        let r = dir.path();
        let t = real_target(r);
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(t.join("unrelated"), "keep me").unwrap();
        let out = cfy_init(r, &format!("secret:\n  required: {required}\n"));
        assert_eq!(out.status.success(), !required, "{}", text(&out));
        let msg = text(&out);
        assert!(msg.contains(&t.display().to_string()), "{msg}");
        assert!(msg.contains("non-empty directory"), "{msg}");
        assert_eq!(
            std::fs::read_to_string(t.join("unrelated")).unwrap(),
            "keep me"
        );
    }
}

#[test]
fn missing_source_or_files_warn_or_fail_when_required() {
    let dir = sandbox();
    let r = dir.path();
    std::fs::remove_dir_all(r.join("secret")).unwrap();
    assert!(cfy_init(r, "secret: {}\n").status.success());
    assert!(
        std::fs::symlink_metadata(real_target(r)).is_err(),
        "nothing created"
    );
    let out = cfy_init(r, "secret:\n  required: true\n");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no service-account credentials"),
        "{}",
        text(&out)
    );

    let dir = sandbox();
    let r = dir.path();
    std::fs::remove_file(r.join("secret/namespace")).unwrap();
    let out = cfy_init(r, "secret: {}\n");
    assert!(out.status.success());
    assert!(text(&out).contains("missing namespace"), "{}", text(&out));
    assert!(
        std::fs::symlink_metadata(real_target(r)).is_ok(),
        "still linked"
    );
    let out = cfy_init(r, "secret:\n  required: true\n");
    assert!(!out.status.success());
    assert!(text(&out).contains("missing namespace"), "{}", text(&out));
}

// ---- hidden by a tmpfs, restored by the watcher (private mount namespace) ----

const NS_ROOT: &str = "CFY_SECRET_TEST_NS_ROOT";
const NS_MODE: &str = "CFY_SECRET_TEST_NS_MODE";

/// Run the ignored test `name` of this binary as a child in a new, private mount namespace.
fn in_mount_namespace(name: &str, mode: &str) {
    let dir = sandbox();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            name,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(NS_ROOT, dir.path())
        .env(NS_MODE, mode)
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("1 passed"), "the child test ran: {all}");
    assert!(all.contains("restored after hiding"), "{all}");
    assert!(!all.contains("never-print-me"), "token printed: {all}");
    // The namespace is gone: none of its mounts is visible here.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = dir.path().display().to_string();
    assert!(
        !mounts.contains(&root),
        "a mount leaked out of the namespace"
    );
}

#[test]
fn watcher_restores_a_link_hidden_by_a_tmpfs_over_run() {
    in_mount_namespace("hidden_child", "symlink");
}

#[test]
fn watcher_restores_a_bind_mount_hidden_by_a_tmpfs_over_run() {
    in_mount_namespace("hidden_child", "bind");
}

#[test]
fn empty_mount_point_on_the_target_gets_the_source_mounted_over_it() {
    in_mount_namespace("mount_point_child", "symlink");
}

/// Child of the test above: an empty tmpfs sits on the target itself, which therefore
/// cannot become a link; the source is bind-mounted over it instead.
#[test]
#[ignore = "run by empty_mount_point_on_the_target_gets_the_source_mounted_over_it"]
fn mount_point_child() {
    use nix::mount::{mount, umount, MsFlags};
    let root = PathBuf::from(std::env::var_os(NS_ROOT).expect("run by the parent test"));
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap();
    let t = real_target(&root);
    std::fs::create_dir_all(&t).unwrap();
    mount(
        Some("tmpfs"),
        &t,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let out = cfy_init(&root, "secret: {}\n");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ino(&t.join("token")), ino(&root.join("secret/token")));
    println!("restored after hiding (mount point)");
    umount(&t).unwrap();
    umount(&t).unwrap();
}

/// Child half of the two tests above; runs only inside the namespace they create.
#[test]
#[ignore = "run by the watcher_restores_* tests inside a private mount namespace"]
fn hidden_child() {
    use nix::mount::{mount, umount, MsFlags};
    let root = PathBuf::from(std::env::var_os(NS_ROOT).expect("run by the parent test"));
    let mode = std::env::var(NS_MODE).unwrap();
    // Belt and braces: nothing we mount here may reach the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap();

    let cfg = root.join("cfy-init.yaml");
    std::fs::write(
        &cfg,
        format!("secret:\n  mode: {mode}\n  recheck_interval: 50ms\n"),
    )
    .unwrap();
    let r = Root::new(&root);
    let ctx = Context {
        config: Config::load(Some(&cfg), &r).unwrap(),
        root: r,
        config_path: Some(cfg),
    };
    let report = cfy_init::secret::run(&ctx).unwrap();
    let via = real_target(&root).join("token");
    assert_eq!(ino(&via), ino(&root.join("secret/token")));
    let t = real_target(&root);
    if mode == "bind" {
        assert_eq!(report.state, cfy_init::secret::SecretState::Mounted);
        assert!(
            std::fs::symlink_metadata(&t).unwrap().is_dir(),
            "a mount point"
        );
    }

    // Something mounts a tmpfs over /run: the credentials are hidden.
    mount(
        Some("tmpfs"),
        &root.join("run"),
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    assert!(std::fs::metadata(&via).is_err(), "hidden");

    let before = cfy_init::secret::restore_count();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let watcher = tokio::spawn(cfy_init::secret::watch(ctx.clone()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&via).is_err() || cfy_init::secret::restore_count() == before {
            assert!(Instant::now() < deadline, "not restored within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        watcher.abort();
    });
    assert_eq!(ino(&via), ino(&root.join("secret/token")), "not a copy");
    assert_eq!(std::fs::read_to_string(&via).unwrap(), TOKEN);
    assert_eq!(cfy_init::secret::restore_count(), before + 1);
    println!("restored after hiding ({mode})");

    if mode == "bind" {
        umount(&t).unwrap();
    }
    umount(&root.join("run")).unwrap();
}

//! Bad input: disk full (a 2 MiB tmpfs), a read-only store, an unreadable image directory
//! (root without CAP_DAC_OVERRIDE), a regular file where a directory should be. Each gives
//! one error line naming the path and the fix, leaves the store as it was, and the next
//! boot (once the cause is gone) converges.

#[path = "common/persist.rs"]
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

/// The last stderr line (the error) of a failed run, checked to be the only error line.
fn error_line(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("cfy-init: "))
        .collect();
    assert_eq!(errors.len(), 1, "exactly one error line: {err}");
    errors[0].to_string()
}

/// Run a script in a private mount namespace; `$CFY` is the binary, `$R` the root.
fn in_mount_ns(root: &Path, script: &str) -> std::process::Output {
    std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .env("CFY", env!("CARGO_BIN_EXE_cfy-init"))
        .env("R", root)
        .env("NO_COLOR", "1")
        .env_remove("CFY_INIT_CONFIG")
        .env_remove("CFY_IMAGE_ID")
        .output()
        .unwrap()
}

#[test]
fn disk_full_fails_cleanly_and_the_next_boot_converges() {
    let tmp = tempdir();
    let root = tmp.path();
    generate(root, Spec::small(31));
    fs::write(root.join("var/lib/big"), vec![7u8; 3 << 20]).unwrap();
    fs::create_dir(root.join("cfy-persist")).unwrap();
    let image = snapshot_dirs(root);
    let out = in_mount_ns(
        root,
        r#"mount -t tmpfs -o size=2m tmpfs "$R/cfy-persist" || exit 99
           "$CFY" --root "$R" persist; echo "rc=$?"
           echo "meta: $(ls -A "$R/cfy-persist/.cfy-init" | tr '\n' ' ')"
           echo "store: $(ls -A "$R/cfy-persist" | tr '\n' ' ')"
           echo ---
           mount -o remount,size=64m "$R/cfy-persist"
           "$CFY" --root "$R" persist 2>/dev/null; echo "rc=$?"
           ls -A "$R/cfy-persist/.cfy-init"
           sha256sum "$R/var/lib/big" "$R/var/lib-initial/big""#,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (first, second) = stdout
        .split_once("---")
        .unwrap_or_else(|| panic!("{}", text(&out)));
    assert!(first.contains("rc=2"), "{}", text(&out));
    let line = error_line(&out);
    // All directories are copied at once, so the first to run out of space may be any.
    assert!(line.contains("/cfy-persist/.cfy-init/staging/"), "{line}");
    assert!(
        line.contains("No space left on device") && line.contains("free space on the volume"),
        "{line}"
    );
    // The failed copy left only the state file: no staging, no half directory.
    assert!(
        first.contains("meta: lock state.json \n"),
        "no staging left: {first}"
    );
    assert!(
        first.contains("store: .cfy-init \n"),
        "nothing but .cfy-init in the store: {first}"
    );
    assert!(second.contains("rc=0"), "{second}");
    let sums: Vec<&str> = second
        .lines()
        .filter(|l| l.contains("big"))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(sums.len(), 2, "{second}");
    assert_eq!(sums[0], sums[1]);
    // The store copy lived in the namespace's tmpfs; the image copy in -initial is intact.
    assert_eq!(snapshot(&root.join("var/lib-initial")), image["var/lib"]);
}

#[test]
fn a_read_only_store_fails_and_touches_nothing() {
    let tmp = tempdir();
    let root = tmp.path();
    generate(root, Spec::tiny(32));
    fs::create_dir(root.join("cfy-persist")).unwrap();
    let before = layout(root);
    let out = in_mount_ns(
        root,
        r#"mount --bind "$R/cfy-persist" "$R/cfy-persist" && mount -o remount,bind,ro "$R/cfy-persist" || exit 99
           "$CFY" --root "$R" persist"#,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let line = error_line(&out);
    assert!(
        line.contains("cfy-persist/.cfy-init") && line.contains("mount the volume read-write"),
        "{line}"
    );
    assert_eq!(layout(root), before, "nothing changed");
}

#[test]
fn an_unreadable_image_directory_fails_and_the_next_boot_converges() {
    let tmp = tempdir();
    let root = tmp.path();
    generate(root, Spec::small(33));
    fs::create_dir(root.join("cfy-persist")).unwrap();
    let hidden = root.join("var/lib/pgsql/9.5/data");
    let mode = fs::metadata(&hidden).unwrap().permissions().mode();
    fs::set_permissions(&hidden, fs::Permissions::from_mode(0o000)).unwrap();
    let image_side = layout(root);
    // Root without the capabilities that bypass file permissions.
    let out = std::process::Command::new("setpriv")
        .args([
            "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search",
        ])
        .arg(env!("CARGO_BIN_EXE_cfy-init"))
        .arg("--root")
        .arg(root)
        .arg("persist")
        .env_remove("CFY_INIT_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let line = error_line(&out);
    // Without DAC override, other private files and directories of the image are
    // unreadable too (all directories are checked, then copied at once); the error names
    // whichever the copy met first.
    assert!(
        line.contains(&format!("{}/", root.display()))
            && line.contains("cannot read image")
            && line.contains("Permission denied")
            && line.contains("fix the permissions"),
        "{line}"
    );
    assert!(
        !root.join("cfy-persist/var").exists(),
        "no half copy under a final name"
    );
    assert!(
        !root
            .join("cfy-persist/.cfy-init/staging/var%2Flib")
            .exists(),
        "staging removed"
    );
    let mut now = layout(root);
    now.retain(|p, _| !p.starts_with("cfy-persist"));
    let mut was = image_side.clone();
    was.retain(|p, _| !p.starts_with("cfy-persist"));
    assert_eq!(now, was, "image side untouched");
    fs::set_permissions(&hidden, fs::Permissions::from_mode(mode)).unwrap();
    let image = snapshot_dirs(root);
    let out = cfy_init(root, &["persist"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    verify_linked(root, &image).unwrap();
}

#[test]
fn a_regular_file_where_a_directory_should_be_is_named() {
    let tmp = tempdir();
    let root = tmp.path();
    generate(root, Spec::tiny(34));
    fs::remove_dir_all(root.join("opt/cfy")).unwrap();
    fs::write(root.join("opt/cfy"), "oops").unwrap();
    fs::create_dir(root.join("cfy-persist")).unwrap();
    let out = cfy_init(root, &["persist"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let line = error_line(&out);
    assert!(
        line.contains(&format!(
            "{}/opt/cfy: is a regular file where a directory should be",
            root.display()
        )),
        "{line}"
    );
    assert!(line.contains("move it away"), "{line}");
    assert!(!root.join("cfy-persist/opt/cfy").exists());
    // A file in the store where a directory copy belongs.
    fs::remove_file(root.join("opt/cfy")).unwrap();
    fs::create_dir(root.join("opt/cfy")).unwrap();
    fs::create_dir_all(root.join("cfy-persist/opt")).unwrap();
    fs::write(root.join("cfy-persist/opt/cloudify"), "not a dir").unwrap();
    let out = cfy_init(root, &["persist"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let line = error_line(&out);
    assert!(
        line.contains("cfy-persist/opt/cloudify: is a file where the store needs a directory"),
        "{line}"
    );
    assert_eq!(
        fs::read_to_string(root.join("cfy-persist/opt/cloudify")).unwrap(),
        "not a dir"
    );
}

//! A store shaped like a Cloudify Manager's, for the snapshot tests: a real Python venv
//! (interpreter an absolute link to the system's, a package installed from a wheel built
//! here), absolute, relative and dangling links, hard links, xattrs of every namespace, POSIX
//! ACLs, a sparse file, setuid/setgid/sticky modes, 0400 files of other owners, a FIFO, an
//! empty directory and a socket; and a listing of a tree with everything a restore must keep.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A wheel of the one-module package `cfyhello`, built by hand (a zip with a dist-info), so
/// that installing it needs no network and no build tools.
fn build_wheel(dir: &Path) -> std::path::PathBuf {
    let whl = dir.join("cfyhello-1.0-py3-none-any.whl");
    let script = r#"
import base64, hashlib, sys, zipfile
files = {
    "cfyhello/__init__.py": b"def hello():\n    return 'hello from cfyhello'\n",
    "cfyhello-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: cfyhello\nVersion: 1.0\n",
    "cfyhello-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: cfy-init-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for name, data in files.items():
        z.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("cfyhello-1.0.dist-info/RECORD,,")
    z.writestr("cfyhello-1.0.dist-info/RECORD", "\n".join(record) + "\n")
"#;
    run(Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(&whl));
    whl
}

/// `python3 -m venv` at `env` with the `cfyhello` wheel installed into it (by the venv's
/// pip when it has one, else unpacked into site-packages as pip would).
fn venv(env: &Path, scratch: &Path) {
    run(Command::new("/usr/bin/python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(env));
    let whl = build_wheel(scratch);
    let site = String::from_utf8(
        Command::new(env.join("bin/python3"))
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let unpack = "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])";
    run(Command::new(env.join("bin/python3"))
        .args(["-c", unpack])
        .arg(&whl)
        .arg(site.trim()));
}

/// Does the file system at `dir` take `user.*` xattrs?
pub fn has_xattrs(dir: &Path) -> bool {
    let p = dir.join(".xattr-probe");
    std::fs::write(&p, "").unwrap();
    let ok = xattr::set(&p, "user.probe", b"1").is_ok();
    std::fs::remove_file(&p).unwrap();
    ok
}

/// Build the manager-shaped tree in `store` (run as root). `scratch` is outside the store.
pub fn manager_store(store: &Path, scratch: &Path) {
    let p = |rel: &str| store.join(rel);
    let mkdir = |rel: &str| std::fs::create_dir_all(p(rel)).unwrap();
    let write = |rel: &str, data: &[u8], mode: u32, owner: (u32, u32)| {
        std::fs::write(p(rel), data).unwrap();
        std::os::unix::fs::chown(p(rel), Some(owner.0), Some(owner.1)).unwrap();
        std::fs::set_permissions(p(rel), std::fs::Permissions::from_mode(mode)).unwrap();
    };
    mkdir("opt/manager");
    venv(&p("opt/manager/env"), scratch);
    // Links: absolute (as /var/lib/dbus/machine-id and alternatives), relative, dangling.
    mkdir("var/lib/dbus");
    std::os::unix::fs::symlink("/etc/machine-id", p("var/lib/dbus/machine-id")).unwrap();
    mkdir("etc/alternatives");
    std::os::unix::fs::symlink("/usr/bin/no-such-editor", p("etc/alternatives/editor")).unwrap();
    std::os::unix::fs::symlink("../../no/such/file", p("etc/alternatives/dangling")).unwrap();
    std::os::unix::fs::symlink("../../../../outside", p("etc/alternatives/out")).unwrap();
    std::os::unix::fs::lchown(p("etc/alternatives/editor"), Some(1500), Some(1500)).unwrap();
    // Secrets of other owners.
    mkdir("var/lib/rabbitmq");
    write(
        "var/lib/rabbitmq/.erlang.cookie",
        b"COOKIE",
        0o400,
        (999, 999),
    );
    mkdir("var/lib/pgsql/9.5/data/base/1");
    write(
        "var/lib/pgsql/9.5/data/base/1/1259",
        &[7u8; 8192],
        0o600,
        (26, 26),
    );
    std::fs::set_permissions(
        p("var/lib/pgsql/9.5/data"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::os::unix::fs::chown(p("var/lib/pgsql/9.5/data"), Some(26), Some(26)).unwrap();
    mkdir("etc/cloudify/ssl");
    write(
        "etc/cloudify/ssl/cloudify_internal_key.pem",
        b"KEY",
        0o400,
        (1500, 1500),
    );
    write(
        "etc/cloudify/config.yaml",
        b"admin_password: secret\n",
        0o600,
        (1500, 1500),
    );
    // Hard links.
    mkdir("opt/manager/resources");
    write(
        "opt/manager/resources/blob",
        b"shared bytes",
        0o644,
        (1500, 1500),
    );
    std::fs::hard_link(
        p("opt/manager/resources/blob"),
        p("opt/manager/resources/blob2"),
    )
    .unwrap();
    std::fs::hard_link(p("opt/manager/resources/blob"), p("etc/blob3")).unwrap();
    // Modes: setuid, setgid directory, sticky directory.
    mkdir("opt/bin");
    write("opt/bin/suid", b"#!/bin/sh\n", 0o4755, (0, 0));
    write("opt/bin/sgid", b"#!/bin/sh\n", 0o2755, (0, 1500));
    mkdir("opt/shared");
    std::fs::set_permissions(p("opt/shared"), std::fs::Permissions::from_mode(0o2775)).unwrap();
    mkdir("opt/tmp");
    std::fs::set_permissions(p("opt/tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    // xattrs: user, trusted (root), a file capability (cap_net_bind_service, effective).
    write("opt/bin/capped", b"#!/bin/sh\n", 0o755, (0, 0));
    let cap: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    xattr::set(p("opt/bin/capped"), "security.capability", &cap).unwrap();
    xattr::set(p("etc/cloudify/config.yaml"), "user.cfy", b"tagged").unwrap();
    xattr::set(
        p("etc/cloudify/config.yaml"),
        "trusted.cfy",
        b"\x00\x01binary",
    )
    .unwrap();
    xattr::set(p("opt/shared"), "user.dir", b"on a directory").unwrap();
    // POSIX ACLs: an access ACL on a file, a default ACL on a directory.
    run(Command::new("setfacl")
        .args(["-m", "u:1500:r"])
        .arg(p("etc/cloudify/config.yaml")));
    run(Command::new("setfacl")
        .args(["-d", "-m", "u:1500:rx"])
        .arg(p("opt/shared")));
    // A sparse file: 8 MiB with 4 KiB of data in the middle.
    {
        let mut f = std::fs::File::create(p("var/lib/pgsql/9.5/data/sparse")).unwrap();
        f.set_len(8 << 20).unwrap();
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(4 << 20)).unwrap();
        f.write_all(&[9u8; 4096]).unwrap();
    }
    // A FIFO, an empty directory, and a socket (left out of a snapshot).
    nix::unistd::mkfifo(
        &p("var/lib/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    mkdir("var/empty");
    drop(std::os::unix::net::UnixListener::bind(p("var/lib/rabbitmq/sock")).unwrap());
    // Nanosecond mtimes, set last (creating entries changed the directories').
    let t = filetime::FileTime::from_unix_time(1_700_000_000, 123_456_789);
    filetime::set_file_mtime(p("etc/cloudify/config.yaml"), t).unwrap();
    filetime::set_file_mtime(p("var/empty"), t).unwrap();
    filetime::set_symlink_file_times(p("var/lib/dbus/machine-id"), t, t).unwrap();
}

/// Everything a restore must keep of each entry below `root` (sockets left out): kind,
/// link target, owner, mode, mtime to the ns, xattrs (ACLs included), content hash, which
/// other name a hard link shares its inode with, and whether a file has holes.
pub fn listing(root: &Path) -> BTreeMap<String, String> {
    use sha2::Digest;
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    fn walk(
        base: &Path,
        dir: &Path,
        out: &mut BTreeMap<String, String>,
        inodes: &mut BTreeMap<u64, String>,
    ) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if rel.starts_with(".cfy-snapshot-") {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            if ft.is_socket() {
                continue;
            }
            let what = if ft.is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                "dir".into()
            } else if ft.is_fifo() {
                "fifo".into()
            } else {
                let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
                let h = hex::encode(sha2::Sha256::digest(std::fs::read(&p).unwrap()));
                let sparse = m.blocks() * 512 < m.len();
                format!("file {} {h} first-name={first} sparse={sparse}", m.len())
            };
            let mut xattrs: Vec<String> = xattr::list(&p)
                .unwrap()
                .map(|n| {
                    let v = xattr::get(&p, &n).unwrap().unwrap_or_default();
                    format!("{}={}", n.to_string_lossy(), hex::encode(v))
                })
                .collect();
            xattrs.sort();
            out.insert(
                rel,
                format!(
                    "{what} {}:{} {:o} {}.{:09} [{}]",
                    m.uid(),
                    m.gid(),
                    m.mode() & 0o7777,
                    m.mtime(),
                    m.mtime_nsec(),
                    xattrs.join(",")
                ),
            );
            if ft.is_dir() {
                walk(base, &p, out, inodes);
            }
        }
    }
    walk(root, root, &mut out, &mut inodes);
    out
}

/// The `entries` of an archive's manifest.
pub fn manifest_entries(archive: &Path) -> serde_json::Value {
    use std::io::Read;
    let dec = zstd::stream::read::Decoder::new(std::fs::File::open(archive).unwrap()).unwrap();
    let mut tar = tar::Archive::new(dec);
    for m in tar.entries().unwrap() {
        let mut m = m.unwrap();
        if m.path_bytes().as_ref() == b"manifest.json" {
            let mut s = String::new();
            m.read_to_string(&mut s).unwrap();
            let v: serde_json::Value = serde_json::from_str(&s).unwrap();
            return v["entries"].clone();
        }
    }
    panic!("{}: no manifest", archive.display());
}

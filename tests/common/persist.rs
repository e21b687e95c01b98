//! Test helpers for the persist tests: a generator of Cloudify-shaped image trees (many
//! small files, deep directories, symlinks including dangling and absolute ones, hard links,
//! several owners, xattrs, sparse files, FIFOs, a socket) and a snapshot of a tree's content
//! and metadata to compare a store copy against its image.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use filetime::FileTime;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// The 2021 directory list, as generated under a root.
pub const DIRS: &[&str] = &[
    "var/lib",
    "etc/cloudify",
    "opt/cfy",
    "opt/cloudify",
    "opt/cloudify-stage",
    "opt/manager",
    "opt/mgmtworker",
    "opt/restservice",
];

/// Owners seen in a Cloudify image: root, postgres (26), rabbitmq, 4.x cfyuser, 5.x cfyuser.
const OWNERS: &[(u32, u32)] = &[(0, 0), (26, 26), (101, 101), (999, 999), (1500, 1500)];
const MODES: &[u32] = &[0o644, 0o600, 0o640, 0o755, 0o444, 0o4755];
const DIR_MODES: &[u32] = &[0o755, 0o700, 0o750, 0o2775, 0o1777];

/// How big a generated tree is.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Regular files spread over all directories.
    pub files: usize,
    /// Maximum size of a small file.
    pub max_small: usize,
    /// Large (1 MiB+) files, each of `large_size` bytes.
    pub large: usize,
    pub large_size: usize,
    /// Length of the sparse files, in 8 KiB blocks.
    pub sparse_blocks: u64,
    pub seed: u64,
}

impl Spec {
    pub fn small(seed: u64) -> Spec {
        Spec {
            files: 60,
            max_small: 3000,
            large: 0,
            large_size: 0,
            sparse_blocks: 100,
            seed,
        }
    }
    /// Small enough to seed hundreds of times (the crash tests).
    pub fn tiny(seed: u64) -> Spec {
        Spec {
            files: 20,
            max_small: 2000,
            large: 0,
            large_size: 0,
            sparse_blocks: 20,
            seed,
        }
    }
    pub fn medium(seed: u64) -> Spec {
        Spec {
            files: 2000,
            max_small: 20_000,
            large: 3,
            large_size: 3 << 20,
            sparse_blocks: 400,
            seed,
        }
    }
}

/// Generate the image directories (`DIRS`) under `root`. Deterministic for a given seed.
pub fn generate(root: &Path, spec: Spec) {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut all_dirs: Vec<PathBuf> = Vec::new();
    for top in DIRS {
        let top = root.join(top);
        fs::create_dir_all(&top).unwrap();
        all_dirs.push(top.clone());
        // Deep chains, like the virtualenvs under /opt/mgmtworker/env/lib/python3.6/...
        let mut at = top.clone();
        for depth in 0..rng.gen_range(2..9) {
            at = at.join(format!("d{depth}-{}", rng.gen_range(0..100)));
            fs::create_dir_all(&at).unwrap();
            all_dirs.push(at.clone());
        }
        for i in 0..3 {
            let side = top.join(format!("side{i}"));
            fs::create_dir_all(&side).unwrap();
            all_dirs.push(side);
        }
    }
    // The PostgreSQL data directory shape and an empty directory.
    let pg = root.join("var/lib/pgsql/9.5/data");
    fs::create_dir_all(pg.join("base/1")).unwrap();
    all_dirs.extend([
        pg.clone(),
        pg.join("base"),
        pg.join("base/1"),
        root.join("var/lib/pgsql"),
        root.join("var/lib/pgsql/9.5"),
    ]);
    fs::create_dir_all(root.join("opt/manager/empty")).unwrap();
    all_dirs.push(root.join("opt/manager/empty"));

    let mut files = Vec::new();
    for i in 0..spec.files {
        let dir = &all_dirs[rng.gen_range(0..all_dirs.len())];
        let path = dir.join(format!("f{i}.{}", ["py", "conf", "json", "pyc", ""][i % 5]));
        let size = if i % 17 == 0 {
            0
        } else {
            rng.gen_range(1..=spec.max_small)
        };
        let mut data = vec![0u8; size];
        rng.fill(&mut data[..]);
        fs::write(&path, &data).unwrap();
        files.push(path);
    }
    for i in 0..spec.large {
        let path = root.join(format!("opt/manager/resources-large{i}.tar"));
        let mut f = fs::File::create(&path).unwrap();
        let mut chunk = vec![0u8; 1 << 20];
        let mut left = spec.large_size;
        while left > 0 {
            rng.fill(&mut chunk[..]);
            let n = left.min(chunk.len());
            f.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        files.push(path);
    }
    // Sparse files: a PostgreSQL-like relation with holes, and one that is all hole.
    let sparse = pg.join("base/1/16384");
    {
        let mut f = fs::File::create(&sparse).unwrap();
        let n = spec.sparse_blocks;
        for block in [0, n / 5, n / 5 + 1, 3 * n / 5] {
            f.seek(SeekFrom::Start(block * 8192)).unwrap();
            f.write_all(&[0xAB; 8192]).unwrap();
        }
        f.set_len(n * 8192).unwrap();
    }
    fs::File::create(root.join("var/lib/hole-only"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    files.push(sparse);

    // Hard links inside one top directory (a link never crosses persisted directories).
    for (n, f) in files.iter().enumerate().filter(|(n, _)| n % 9 == 4) {
        let twin = f.with_file_name(format!("hl{n}-a"));
        fs::hard_link(f, &twin).unwrap();
        if n % 2 == 0 {
            let parent = f.parent().unwrap().parent().unwrap_or(f.parent().unwrap());
            let third = parent.join(format!("hl{n}-b"));
            if !third.exists() && DIRS.iter().any(|d| third.starts_with(root.join(d))) {
                fs::hard_link(f, third).unwrap();
            }
        }
    }
    // Symlinks: relative, absolute into the image, dangling, to a directory, a loop.
    symlink("../etc/cloudify", root.join("var/lib/rel-link")).unwrap();
    symlink(
        "/etc/cloudify/config.yaml",
        root.join("opt/manager/abs-link"),
    )
    .unwrap();
    symlink("/does/not/exist", root.join("opt/mgmtworker/dangling")).unwrap();
    symlink("side0", root.join("opt/cfy/dir-link")).unwrap();
    symlink("loop", root.join("opt/cloudify/loop")).unwrap();
    symlink("/etc/passwd", root.join("etc/cloudify/outside")).unwrap();
    fs::write(
        root.join("etc/cloudify/config.yaml"),
        "manager:\n  security:\n    admin_password: x\n",
    )
    .unwrap();
    // Special files.
    nix::unistd::mkfifo(
        &root.join("var/lib/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o620),
    )
    .unwrap();
    let sock = root.join("opt/manager/api.sock");
    std::os::unix::net::UnixListener::bind(&sock).unwrap();

    // Owners, modes, xattrs and times for everything, directories last (deepest first).
    let mut entries: Vec<PathBuf> = Vec::new();
    for top in DIRS {
        walk(&root.join(top), &mut entries);
    }
    entries.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in entries.iter().enumerate() {
        let m = fs::symlink_metadata(p).unwrap();
        let (uid, gid) = OWNERS[rng.gen_range(0..OWNERS.len())];
        std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
        if !m.file_type().is_symlink() {
            let mode = if m.is_dir() {
                DIR_MODES[rng.gen_range(0..DIR_MODES.len())]
            } else {
                MODES[rng.gen_range(0..MODES.len())]
            };
            fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
            if i % 5 == 0 && (m.is_file() || m.is_dir()) {
                xattr::set(p, "user.cloudify.origin", format!("gen-{i}").as_bytes()).unwrap();
            }
            if i % 11 == 0 {
                xattr::set(p, "trusted.overlay.test", b"\x00\x01binary").unwrap();
            }
        }
        let t = FileTime::from_unix_time(
            1_600_000_000 + rng.gen_range(0..50_000_000),
            rng.gen_range(0..1_000_000_000),
        );
        filetime::set_symlink_file_times(p, t, t).unwrap();
    }
    let pgm = fs::Permissions::from_mode(0o700);
    fs::set_permissions(&pg, pgm).unwrap();
    std::os::unix::fs::lchown(&pg, Some(26), Some(26)).unwrap();
    let t = FileTime::from_unix_time(1_650_000_000, 123_456_789);
    filetime::set_symlink_file_times(&pg, t, t).unwrap();
}

fn walk(p: &Path, out: &mut Vec<PathBuf>) {
    out.push(p.to_path_buf());
    if fs::symlink_metadata(p).unwrap().is_dir() {
        for e in fs::read_dir(p).unwrap() {
            walk(&e.unwrap().path(), out);
        }
    }
}

/// Content and metadata of one entry (access times are left out: reading changes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: u64,
    pub sha256: String,
    pub target: Option<PathBuf>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// For files with holes: true, and the copy must not allocate more than the original.
    pub sparse: bool,
    pub blocks: u64,
    /// For multiply-linked entries: the smallest path of the group, and the link count.
    pub link_group: Option<PathBuf>,
    pub nlink: u64,
    pub rdev: u64,
}

/// Every entry under `dir` (itself included, as ""), keyed by relative path.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut paths = Vec::new();
    walk(dir, &mut paths);
    let mut groups: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for p in &paths {
        let rel = p.strip_prefix(dir).unwrap().to_path_buf();
        let m = fs::symlink_metadata(p).unwrap();
        if m.nlink() > 1 && !m.is_dir() {
            let g = groups.entry((m.dev(), m.ino())).or_insert(rel.clone());
            if rel < *g {
                *g = rel.clone();
            }
        }
    }
    for p in &paths {
        let rel = p.strip_prefix(dir).unwrap().to_path_buf();
        let m = fs::symlink_metadata(p).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_socket() {
            "socket"
        } else {
            "device"
        };
        let sha256 = if ft.is_file() {
            hex::encode(Sha256::digest(fs::read(p).unwrap()))
        } else {
            String::new()
        };
        let mut xattrs = BTreeMap::new();
        if let Ok(names) = xattr::list(p) {
            for n in names {
                if let Ok(Some(v)) = xattr::get(p, &n) {
                    xattrs.insert(n.to_string_lossy().into_owned(), v);
                }
            }
        }
        out.insert(
            rel,
            Entry {
                kind,
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                size: if ft.is_dir() { 0 } else { m.size() },
                sha256,
                target: ft.is_symlink().then(|| fs::read_link(p).unwrap()),
                xattrs,
                sparse: ft.is_file() && m.blocks() * 512 < m.size(),
                blocks: m.blocks(),
                link_group: groups.get(&(m.dev(), m.ino())).cloned(),
                nlink: if ft.is_dir() { 0 } else { m.nlink() },
                rdev: m.rdev(),
            },
        );
    }
    out
}

/// Assert that `copy` holds exactly what `image` holds (sockets excepted, they are never
/// copied), with owner, mode, mtime, xattrs, hard-link identity, symlink targets and sparse
/// allocation kept. Returns a description of the first difference instead of panicking.
pub fn diff(image: &BTreeMap<PathBuf, Entry>, copy: &BTreeMap<PathBuf, Entry>) -> Option<String> {
    let expected: BTreeMap<_, _> = image.iter().filter(|(_, e)| e.kind != "socket").collect();
    for (p, e) in &expected {
        let Some(c) = copy.get(*p) else {
            return Some(format!("{}: missing in copy", p.display()));
        };
        let mut e2 = (*e).clone();
        let mut c2 = c.clone();
        if e.sparse && (!c.sparse || c.blocks > e.blocks) {
            return Some(format!(
                "{}: sparse file allocated {} blocks, image {}",
                p.display(),
                c.blocks,
                e.blocks
            ));
        }
        e2.blocks = 0;
        c2.blocks = 0;
        if e2 != c2 {
            return Some(format!(
                "{}: differs\n image: {e2:?}\n copy:  {c2:?}",
                p.display()
            ));
        }
    }
    for p in copy.keys() {
        if !expected.contains_key(p) {
            return Some(format!("{}: extra in copy", p.display()));
        }
    }
    None
}

/// Snapshots of every generated top directory under `root`.
pub fn snapshot_dirs(root: &Path) -> BTreeMap<&'static str, BTreeMap<PathBuf, Entry>> {
    DIRS.iter().map(|d| (*d, snapshot(&root.join(d)))).collect()
}

/// Run `cfy-init --root ROOT ARGS...` with a clean environment for the persist settings.
pub fn cfy_init(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = command(root, args, env);
    cmd.output().unwrap()
}

pub fn command(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cfy-init"));
    cmd.arg("--root").arg(root).args(args);
    for var in [
        "CFY_INIT_CONFIG",
        "CFY_IMAGE_ID",
        "CFY_INIT_FAULT_AT",
        "CFY_INIT_FAULT_COUNT",
        "CFY_INIT_LOG_FORMAT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CFY_INIT_LOG", "info").env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fresh temp dir on tmpfs when there is one (fast syncfs), else the default temp dir.
pub fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("cfy-persist-test")
            .tempdir_in(shm)
            .unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// Verify that every generated directory under `root` is linked to a store copy identical
/// to `image`, with the image kept at `<dir>-initial`.
pub fn verify_linked(
    root: &Path,
    image: &BTreeMap<&'static str, BTreeMap<PathBuf, Entry>>,
) -> Result<(), String> {
    let store = root.join("cfy-persist");
    for (d, snap) in image {
        let link = root.join(d);
        let target =
            fs::read_link(&link).map_err(|e| format!("{}: not a symlink: {e}", link.display()))?;
        let want = store.join(d);
        if target.as_os_str() != want.as_os_str() {
            return Err(format!(
                "{} -> {} instead of {}",
                link.display(),
                target.display(),
                want.display()
            ));
        }
        if let Some(why) = diff(snap, &snapshot(&want)) {
            return Err(format!("store copy of {d}: {why}"));
        }
        let initial = root.join(format!("{d}-initial"));
        let kept = snapshot(&initial);
        if &kept != snap {
            let why = diff(snap, &kept).unwrap_or_else(|| "sockets differ".into());
            return Err(format!("{d}-initial is not the untouched image: {why}"));
        }
    }
    let staging = store.join(".cfy-init/staging");
    if staging.exists() {
        return Err(format!("{} left behind", staging.display()));
    }
    Ok(())
}

/// The whole tree under `root`, for layout comparisons.
pub fn layout(root: &Path) -> BTreeMap<PathBuf, Entry> {
    snapshot(root)
}

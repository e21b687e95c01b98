//! Reading an archive for restore: every member is checked (path shape, reserved names,
//! type, sizes and limits, duplicates, nothing below a symlink or a non-directory, hard
//! links only to earlier files of the same archive) and extracted into a fresh staging
//! directory only, by directory file descriptors and never through a link ([`at`]); the
//! manifest is compared with the members as it streams in ([`check`]) and the whole file
//! with its checksum. Memory stays bounded whatever the archive declares ([`guard`]).
//!
//! Written by hand rather than with `tar::Archive::unpack` because unpack accepts what we
//! must refuse (device nodes, links out of the tree followed, duplicates) and does not
//! enforce size limits.

mod at;
mod check;
mod guard;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::archive::HashReader;
use super::manifest::{self, Entry, Kind, MANIFEST_NAME, STORE_PREFIX};
use super::{is_reserved, Limits, SnapshotError};
use at::Dirs;
use check::{Seen, Slot};

const MAX_MANIFEST_BYTES: u64 = 1 << 30;
/// Extended attributes of directories and links are applied last (a default ACL set
/// first would be inherited by everything extracted into the directory), so they are held
/// until then; at most this many bytes of them.
const MAX_DEFERRED_XATTR_BYTES: u64 = 16 << 20;
/// Holes are made again in files that had them, for runs of zeros of this size.
const HOLE_BLOCK: usize = 4096;

/// Extended attributes of one entry, name and value, sorted by name.
type Xattrs = Vec<(String, Vec<u8>)>;

/// What a verified extraction produced.
#[derive(Debug)]
pub struct Verified {
    /// Entries of the archive (every one checked against the manifest).
    pub entries: usize,
    /// Bytes of all files.
    pub total_bytes: u64,
    /// The manifest's creation time.
    pub created: String,
    pub sha256: String,
}

fn reject(msg: impl Into<String>) -> SnapshotError {
    SnapshotError::Rejected(msg.into())
}

/// Verify `archive` and extract it into `staging` (which must not exist). When
/// `expect_sha256` is given the whole file must hash to it. On error the caller removes
/// `staging`.
pub fn extract_verified(
    archive: &Path,
    staging: &Path,
    limits: &Limits,
    expect_sha256: Option<&str>,
    progress: &AtomicU64,
) -> Result<Verified, SnapshotError> {
    let file = File::open(archive).map_err(|e| SnapshotError::io(archive, e))?;
    let mut hashed = HashReader {
        inner: io::BufReader::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        progress: None,
    };
    fs::create_dir(staging).map_err(|e| SnapshotError::io(staging, e))?;
    fs::set_permissions(staging, fs::Permissions::from_mode(0o700))
        .map_err(|e| SnapshotError::io(staging, e))?;
    let mut dirs = Dirs::open(staging).map_err(|e| SnapshotError::io(staging, e))?;
    let root_fd = dirs
        .dir("", None)
        .map_err(|e| SnapshotError::io(staging, e))?;
    let mut x = Extractor {
        dirs,
        root_fd,
        staging,
        limits,
        progress,
        seen: Seen::new(),
        symlinks: Vec::new(),
        made: Vec::new(),
        deferred: Vec::new(),
        deferred_bytes: 0,
        total: 0,
    };
    let checked = {
        let dec = zstd::stream::read::Decoder::new(&mut hashed)
            .map_err(|e| reject(format!("not a zstd stream: {e}")))?;
        let mut tar = tar::Archive::new(guard::TarGuard::new(dec));
        let checked = x.members(&mut tar)?;
        // Read to the end so that zstd checks its frame checksum and trailing garbage fails.
        let mut dec = tar.into_inner().into_inner();
        io::copy(&mut dec, &mut io::sink())
            .map_err(|e| reject(format!("corrupt compressed data: {e}")))?;
        checked
    };
    // Anything after the zstd frame(s) has been consumed by the decoder already; hash the rest.
    io::copy(&mut hashed, &mut io::sink()).map_err(|e| SnapshotError::io(archive, e))?;
    let sha256 = hex::encode(hashed.hasher.finalize());
    if let Some(want) = expect_sha256 {
        if !want.eq_ignore_ascii_case(&sha256) {
            return Err(reject(format!(
                "checksum mismatch: archive is {sha256}, expected {want}"
            )));
        }
    }
    x.finish()?;
    Ok(Verified {
        entries: x.seen.len(),
        total_bytes: checked.total_bytes,
        created: checked.created,
        sha256,
    })
}

/// The state of one extraction.
struct Extractor<'a> {
    dirs: Dirs,
    /// The staging root's descriptor (owned by `dirs`).
    root_fd: i32,
    staging: &'a Path,
    limits: &'a Limits,
    progress: &'a AtomicU64,
    seen: Seen,
    /// Symlinks, made last so that nothing is ever written through one.
    symlinks: Vec<(String, String)>,
    /// Directories made because a member below them came first; each must turn up.
    made: Vec<String>,
    /// Extended attributes of directories and links, applied last.
    deferred: Vec<(String, Xattrs)>,
    deferred_bytes: u64,
    total: u64,
}

/// What the tar header and its PAX records say about a member.
struct Header {
    entry: Entry,
    xattrs: Xattrs,
}

/// `a/b/c` -> (`a/b`, `c`); `c` -> (``, `c`).
fn split(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    }
}

impl Extractor<'_> {
    /// An error of making `rel` in staging: out of space names what is needed; what bad
    /// input causes (a name that exists already, is too long, runs through a non-directory)
    /// is a rejection naming the entry.
    fn fs_err(&self, rel: &str, e: io::Error, needed: u64) -> SnapshotError {
        let path = self.staging.join(rel);
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                crate::snapshot::no_space_with(&path, at::free_space(self.root_fd), needed, 1)
            }
            Some(libc::EEXIST) => reject(format!("{rel:?}: replaces an entry already written")),
            Some(
                libc::ENAMETOOLONG | libc::ENOTDIR | libc::ELOOP | libc::EISDIR | libc::EINVAL,
            ) => reject(format!("{rel:?}: {e}")),
            _ => SnapshotError::io(&path, e),
        }
    }

    fn parent(&mut self, rel: &str) -> Result<i32, SnapshotError> {
        let (parent, _) = split(rel);
        let mut made = std::mem::take(&mut self.made);
        let fd = self.dirs.dir(parent, Some(&mut made));
        self.made = made;
        fd.map_err(|e| self.fs_err(parent, e, 0))
    }

    fn members<R: Read>(
        &mut self,
        tar: &mut tar::Archive<R>,
    ) -> Result<check::Checked, SnapshotError> {
        let mut checked = None;
        let iter = tar
            .entries()
            .map_err(|e| reject(format!("unreadable tar stream: {e}")))?;
        for member in iter {
            let mut member =
                member.map_err(|e| reject(format!("corrupt or truncated archive: {e}")))?;
            if checked.is_some() {
                return Err(reject("members after the manifest"));
            }
            let raw = member.path_bytes();
            let name = std::str::from_utf8(&raw)
                .map_err(|_| reject("member name is not UTF-8"))?
                .to_string();
            if name == MANIFEST_NAME {
                if member.size() > MAX_MANIFEST_BYTES {
                    return Err(reject("manifest too large"));
                }
                let r = (&mut member).take(MAX_MANIFEST_BYTES);
                checked = Some(check::check_manifest(r, &mut self.seen).map_err(reject)?);
                continue;
            }
            self.member(&name, &mut member)?;
        }
        checked.ok_or_else(|| reject("no manifest: truncated or not a cfy-init snapshot"))
    }

    fn member<R: Read>(
        &mut self,
        name: &str,
        member: &mut tar::Entry<R>,
    ) -> Result<(), SnapshotError> {
        let rel = name
            .strip_prefix(STORE_PREFIX)
            .ok_or_else(|| reject(format!("{name:?}: member outside store/")))?
            .trim_end_matches('/')
            .to_string();
        manifest::check_rel_path(&rel).map_err(reject)?;
        let top = rel.split('/').next().unwrap_or_default();
        if is_reserved(top.as_ref()) {
            return Err(reject(format!(
                "{rel:?}: a name reserved for cfy-init's own use at the top of the store"
            )));
        }
        if self.seen.contains_key(&rel) {
            return Err(reject(format!("{rel:?}: duplicate path")));
        }
        if self.seen.len() as u64 >= self.limits.max_entries {
            return Err(reject(format!(
                "more than {} entries",
                self.limits.max_entries
            )));
        }
        // Nothing may live below a link: that is how write-through-symlink attacks work.
        for anc in Path::new(&rel).ancestors().skip(1) {
            let a = anc.to_string_lossy();
            match self.seen.get(a.as_ref()).map(|s| s.entry.kind) {
                Some(Kind::Symlink) => {
                    return Err(reject(format!("{rel:?}: below the symlink {a:?}")))
                }
                Some(Kind::Dir) | None => {}
                Some(_) => return Err(reject(format!("{rel:?}: below the non-directory {a:?}"))),
            }
        }
        let Header { mut entry, xattrs } = header_of(&rel, member)?;
        // xattrs are sorted by name, as the manifest's map is.
        let hexed: Vec<(&str, String)> = xattrs
            .iter()
            .map(|(k, v)| (k.as_str(), hex::encode(v)))
            .collect();
        let digest = check::xattr_digest(hexed.iter().map(|(k, v)| (*k, v.as_str())));
        let (_, base) = split(&rel);
        let base = base.to_string();
        match member.header().entry_type() {
            tar::EntryType::Directory => {
                entry.kind = Kind::Dir;
                let fd = self.parent(&rel)?;
                match at::mkdir_at(fd, &base) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        // Made earlier for a member below it; any other entry is a clash.
                        let Some(i) = self.made.iter().position(|m| *m == rel) else {
                            return Err(self.fs_err(&rel, e, 0));
                        };
                        self.made.swap_remove(i);
                    }
                    Err(e) => return Err(self.fs_err(&rel, e, 0)),
                }
                self.defer(&rel, xattrs)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = member.size();
                if size > self.limits.max_file_bytes {
                    return Err(reject(format!(
                        "{rel:?}: {size} bytes is over the limit of {}",
                        self.limits.max_file_bytes
                    )));
                }
                self.total = self.total.saturating_add(size);
                if self.total > self.limits.max_total_bytes {
                    return Err(reject(format!(
                        "more than {} bytes in total (decompression bomb?)",
                        self.limits.max_total_bytes
                    )));
                }
                entry.size = size;
                let fd = self.parent(&rel)?;
                let f = at::create_file_at(fd, &base).map_err(|e| self.fs_err(&rel, e, size))?;
                entry.sha256 = Some(self.write_file(member, &f, &rel, &entry)?);
                self.apply_file(&f, &rel, &entry, &xattrs)?;
            }
            tar::EntryType::Symlink => {
                let link = member
                    .link_name_bytes()
                    .ok_or_else(|| reject(format!("{rel:?}: symlink without target")))?;
                let link = std::str::from_utf8(&link)
                    .map_err(|_| reject(format!("{rel:?}: link target not UTF-8")))?
                    .to_string();
                manifest::check_link_target(&rel, &link).map_err(reject)?;
                self.parent(&rel)?;
                entry.kind = Kind::Symlink;
                entry.link = Some(link.clone());
                self.symlinks.push((rel.clone(), link));
                self.defer(&rel, xattrs)?;
            }
            tar::EntryType::Link => {
                let link = member
                    .link_name_bytes()
                    .ok_or_else(|| reject(format!("{rel:?}: hard link without target")))?;
                let target = std::str::from_utf8(&link)
                    .ok()
                    .and_then(|t| t.strip_prefix(STORE_PREFIX))
                    .map(|t| t.trim_end_matches('/').to_string())
                    .ok_or_else(|| reject(format!("{rel:?}: hard link target outside store/")))?;
                manifest::check_rel_path(&target).map_err(reject)?;
                if self.seen.get(&target).map(|s| s.entry.kind) != Some(Kind::File) {
                    return Err(reject(format!(
                        "{rel:?}: hard link to {target:?}, which is not a regular file \
                         earlier in this archive"
                    )));
                }
                let (tparent, tbase) = split(&target);
                let old = self
                    .dirs
                    .open_dir(tparent)
                    .map_err(|e| self.fs_err(&target, e, 0))?;
                let fd = self.parent(&rel)?;
                at::link_at(old.as_raw_fd(), tbase, fd, &base)
                    .map_err(|e| self.fs_err(&rel, e, 0))?;
                entry.kind = Kind::Hardlink;
                entry.link = Some(target);
            }
            tar::EntryType::Fifo => {
                entry.kind = Kind::Fifo;
                let fd = self.parent(&rel)?;
                let made = at::mkfifo_at(fd, &base)
                    .and_then(|()| at::chown_at(fd, &base, entry.uid as u32, entry.gid as u32))
                    .and_then(|()| at::chmod_at(fd, &base, entry.mode))
                    .and_then(|()| {
                        xattrs
                            .iter()
                            .try_for_each(|(k, v)| tolerate(at::set_xattr_at(fd, &base, k, v)))
                    })
                    .and_then(|()| at::set_times_at(fd, &base, entry.mtime, entry.mtime_nsec));
                made.map_err(|e| self.fs_err(&rel, e, 0))?;
            }
            other => {
                return Err(reject(format!(
                    "{rel:?}: {other:?} members (devices, GNU sparse) are not allowed"
                )))
            }
        }

        entry.path = String::new();
        self.seen.insert(
            rel,
            Slot {
                entry,
                xattrs: digest,
                listed: false,
            },
        );
        Ok(())
    }

    fn defer(&mut self, rel: &str, xattrs: Xattrs) -> Result<(), SnapshotError> {
        if xattrs.is_empty() {
            return Ok(());
        }
        self.deferred_bytes += xattrs
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum::<u64>();
        if self.deferred_bytes > MAX_DEFERRED_XATTR_BYTES {
            return Err(reject(format!(
                "over {MAX_DEFERRED_XATTR_BYTES} bytes of extended attributes on directories \
                 and links"
            )));
        }
        self.deferred.push((rel.to_string(), xattrs));
        Ok(())
    }

    /// Stream one member into its new file, with holes where the file had them.
    fn write_file<R: Read>(
        &mut self,
        member: &mut tar::Entry<R>,
        f: &File,
        rel: &str,
        entry: &Entry,
    ) -> Result<String, SnapshotError> {
        let mut reader = HashReader {
            inner: member.take(entry.size),
            hasher: Sha256::new(),
            progress: Some(self.progress),
        };
        let mut buf = vec![0u8; 1 << 16];
        let mut pos = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(reject(format!("{rel:?}: corrupt or truncated data: {e}"))),
            };
            let data = &buf[..n];
            let written = if entry.sparse {
                write_sparse(f, data, pos)
            } else {
                f.write_all_at(data, pos)
            };
            written.map_err(|e| {
                let needed = self.progress.load(Ordering::Relaxed).max(pos) + entry.size - pos;
                self.fs_err(rel, e, needed)
            })?;
            pos += n as u64;
        }
        if pos != entry.size {
            return Err(reject(format!("{rel:?}: truncated")));
        }
        if entry.sparse {
            f.set_len(pos).map_err(|e| self.fs_err(rel, e, 0))?;
        }
        Ok(hex::encode(reader.hasher.finalize()))
    }

    /// Owner, mode (after the owner: chown clears setuid), xattrs (after both: they clear
    /// file capabilities), then times.
    fn apply_file(
        &self,
        f: &File,
        rel: &str,
        e: &Entry,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), SnapshotError> {
        let io_err = |err| SnapshotError::io(&self.staging.join(rel), err);
        std::os::unix::fs::fchown(f, Some(e.uid as u32), Some(e.gid as u32)).map_err(io_err)?;
        f.set_permissions(fs::Permissions::from_mode(e.mode))
            .map_err(io_err)?;
        for (k, v) in xattrs {
            tolerate(at::set_xattr(f, k, v)).map_err(io_err)?;
        }
        at::set_times(f, e.mtime, e.mtime_nsec).map_err(io_err)
    }

    /// After the manifest: make the symlinks, check that every directory made for a member
    /// below it was in the archive, and give directories their metadata, deepest first.
    fn finish(&mut self) -> Result<(), SnapshotError> {
        for (rel, target) in std::mem::take(&mut self.symlinks) {
            let (_, base) = split(&rel);
            let fd = self.parent(&rel)?;
            at::symlink_at(&target, fd, base).map_err(|e| self.fs_err(&rel, e, 0))?;
            let e = &self.seen[&rel].entry;
            let (uid, gid, mtime, nsec) = (e.uid as u32, e.gid as u32, e.mtime, e.mtime_nsec);
            at::chown_at(fd, base, uid, gid)
                .and_then(|()| at::set_times_at(fd, base, mtime, nsec))
                .map_err(|e| self.fs_err(&rel, e, 0))?;
        }
        if let Some(m) = self.made.first() {
            return Err(reject(format!(
                "{m:?}: a directory missing from the archive"
            )));
        }
        let deferred: std::collections::HashMap<String, Xattrs> =
            std::mem::take(&mut self.deferred).into_iter().collect();
        for (rel, x) in &deferred {
            if self.seen.get(rel).map(|s| s.entry.kind) == Some(Kind::Symlink) {
                let (_, base) = split(rel);
                let fd = self.parent(rel)?;
                for (k, v) in x {
                    tolerate(at::set_xattr_at(fd, base, k, v))
                        .map_err(|e| self.fs_err(rel, e, 0))?;
                }
            }
        }
        let mut dirs: Vec<&String> = self
            .seen
            .iter()
            .filter(|(_, s)| s.entry.kind == Kind::Dir)
            .map(|(p, _)| p)
            .collect();
        dirs.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
        for rel in dirs {
            let e = &self.seen[rel].entry;
            let io_err = |err| SnapshotError::io(&self.staging.join(rel), err);
            let f = self.dirs.open_dir(rel).map_err(io_err)?;
            std::os::unix::fs::fchown(&f, Some(e.uid as u32), Some(e.gid as u32))
                .map_err(io_err)?;
            f.set_permissions(fs::Permissions::from_mode(e.mode))
                .map_err(io_err)?;
            for (k, v) in deferred.get(rel).into_iter().flatten() {
                tolerate(at::set_xattr(&f, k, v)).map_err(io_err)?;
            }
            at::set_times(&f, e.mtime, e.mtime_nsec).map_err(io_err)?;
        }
        Ok(())
    }
}

/// An extended attribute the target file system cannot hold (no xattrs, or no `trusted.*`
/// without the capability) is left out with a warning rather than failing the restore.
fn tolerate(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {
            tracing::warn!(error = %e, "restore: an extended attribute was left out");
            Ok(())
        }
        other => other,
    }
}

/// Write `data` at `pos`, leaving aligned all-zero blocks as holes.
fn write_sparse(f: &File, data: &[u8], pos: u64) -> io::Result<()> {
    let mut off = 0usize;
    while off < data.len() {
        // Up to the next block boundary of the file.
        let to_boundary = HOLE_BLOCK - ((pos as usize + off) % HOLE_BLOCK);
        let end = (off + to_boundary).min(data.len());
        let block = &data[off..end];
        let whole = block.len() == HOLE_BLOCK;
        if !(whole && block.iter().all(|&b| b == 0)) {
            f.write_all_at(block, pos + off as u64)?;
        }
        off = end;
    }
    Ok(())
}

/// The record a member's tar header and PAX records describe (kind and data come later).
fn header_of<R: Read>(rel: &str, member: &mut tar::Entry<R>) -> Result<Header, SnapshotError> {
    let h = member.header();
    let field = |what: &str, e: io::Error| reject(format!("{rel:?}: {what}: {e}"));
    let mut entry = Entry {
        path: rel.to_string(),
        kind: Kind::File,
        mode: h.mode().map_err(|e| field("mode", e))? & 0o7777,
        uid: h.uid().map_err(|e| field("uid", e))?,
        gid: h.gid().map_err(|e| field("gid", e))?,
        size: 0,
        mtime: h.mtime().map_err(|e| field("mtime", e))?,
        mtime_nsec: 0,
        sha256: None,
        link: None,
        xattrs: BTreeMap::new(),
        sparse: false,
    };
    let mut xattrs = Vec::new();
    if let Some(pax) = member
        .pax_extensions()
        .map_err(|e| field("PAX records", e))?
    {
        for ext in pax {
            let ext = ext.map_err(|e| field("PAX records", e))?;
            let key = ext
                .key()
                .map_err(|_| reject(format!("{rel:?}: PAX key not UTF-8")))?;
            if key == "mtime" {
                let v = ext.value().unwrap_or_default();
                let (s, ns) = v.split_once('.').unwrap_or((v, ""));
                let bad = || reject(format!("{rel:?}: bad PAX mtime {v:?}"));
                entry.mtime = s.parse().map_err(|_| bad())?;
                if !ns.is_empty() {
                    if ns.len() > 9 || !ns.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(bad());
                    }
                    entry.mtime_nsec = format!("{ns:0<9}").parse().map_err(|_| bad())?;
                }
            } else if let Some(name) = key.strip_prefix(super::archive::PAX_XATTR) {
                xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
            } else if key == super::archive::PAX_SPARSE {
                entry.sparse = ext.value_bytes() == b"1";
            }
        }
    }
    xattrs.sort();
    if xattrs.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(reject(format!(
            "{rel:?}: an extended attribute given twice"
        )));
    }
    Ok(Header { entry, xattrs })
}

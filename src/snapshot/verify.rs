//! Reading an archive for restore: every member is checked (path shape, type, sizes and
//! limits, duplicates, links staying inside, nothing below a link) and extracted into a
//! fresh staging directory only; then the result is compared with the manifest and the
//! whole-file checksum. Nothing outside the staging directory is ever created.
//!
//! Written by hand rather than with `tar::Archive::unpack` because unpack accepts what we
//! must refuse (device nodes, absolute links, duplicates) and does not enforce size limits.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::AtomicU64;

use sha2::{Digest, Sha256};

use super::archive::HashReader;
use super::manifest::{self, Entry, Kind, Manifest, MANIFEST_NAME, STORE_PREFIX};
use super::{Limits, SnapshotError};

const MAX_MANIFEST_BYTES: u64 = 1 << 30;

/// What a verified extraction produced.
#[derive(Debug)]
pub struct Verified {
    pub manifest: Manifest,
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
    let (seen, manifest) = {
        let dec = zstd::stream::read::Decoder::new(&mut hashed)
            .map_err(|e| reject(format!("not a zstd stream: {e}")))?;
        let mut tar = tar::Archive::new(dec);
        let result = extract_members(&mut tar, staging, limits, progress)?;
        // Read to the end so that zstd checks its frame checksum and trailing garbage fails.
        let mut dec = tar.into_inner();
        io::copy(&mut dec, &mut io::sink())
            .map_err(|e| reject(format!("corrupt compressed data: {e}")))?;
        result
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
    compare_with_manifest(&seen, &manifest)?;
    apply_dir_metadata(staging, &manifest)?;
    Ok(Verified { manifest, sha256 })
}

type Seen = BTreeMap<String, Entry>;

fn extract_members<R: Read>(
    tar: &mut tar::Archive<R>,
    staging: &Path,
    limits: &Limits,
    progress: &AtomicU64,
) -> Result<(Seen, Manifest), SnapshotError> {
    let mut seen: Seen = BTreeMap::new();
    let mut links: HashSet<String> = HashSet::new();
    let mut pending_links: Vec<(String, String)> = Vec::new();
    let mut total: u64 = 0;
    let mut manifest: Option<Manifest> = None;
    let iter = tar
        .entries()
        .map_err(|e| reject(format!("unreadable tar stream: {e}")))?;
    for member in iter {
        let mut member =
            member.map_err(|e| reject(format!("corrupt or truncated archive: {e}")))?;
        if manifest.is_some() {
            return Err(reject("members after the manifest"));
        }
        let raw = member.path_bytes();
        let name = std::str::from_utf8(&raw)
            .map_err(|_| reject("member name is not UTF-8"))?
            .to_string();
        if name == MANIFEST_NAME {
            manifest = Some(read_manifest(&mut member)?);
            continue;
        }
        let rel = name
            .strip_prefix(STORE_PREFIX)
            .ok_or_else(|| reject(format!("{name:?}: member outside store/")))?
            .trim_end_matches('/')
            .to_string();
        manifest::check_rel_path(&rel).map_err(reject)?;
        if seen.contains_key(&rel) {
            return Err(reject(format!("{rel:?}: duplicate path")));
        }
        if seen.len() as u64 >= limits.max_entries {
            return Err(reject(format!("more than {} entries", limits.max_entries)));
        }
        // Nothing may live below a link: that is how write-through-symlink attacks work.
        for anc in Path::new(&rel).ancestors().skip(1) {
            let a = anc.to_string_lossy();
            if links.contains(a.as_ref()) {
                return Err(reject(format!("{rel:?}: below the symlink {a:?}")));
            }
            if !a.is_empty() && seen.get(a.as_ref()).is_some_and(|e| e.kind != Kind::Dir) {
                return Err(reject(format!("{rel:?}: below the non-directory {a:?}")));
            }
        }
        let h = member.header();
        let mut entry = Entry {
            path: rel.clone(),
            kind: Kind::File,
            mode: h
                .mode()
                .map_err(|e| reject(format!("{rel:?}: mode: {e}")))?
                & 0o7777,
            uid: h.uid().map_err(|e| reject(format!("{rel:?}: uid: {e}")))?,
            gid: h.gid().map_err(|e| reject(format!("{rel:?}: gid: {e}")))?,
            size: 0,
            mtime: h
                .mtime()
                .map_err(|e| reject(format!("{rel:?}: mtime: {e}")))?,
            sha256: None,
            link: None,
        };
        let target = staging.join(&rel);
        match h.entry_type() {
            tar::EntryType::Directory => {
                entry.kind = Kind::Dir;
                fs::create_dir_all(&target).map_err(|e| SnapshotError::io(&target, e))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = member.size();
                if size > limits.max_file_bytes {
                    return Err(reject(format!(
                        "{rel:?}: {size} bytes is over the limit of {}",
                        limits.max_file_bytes
                    )));
                }
                total = total.saturating_add(size);
                if total > limits.max_total_bytes {
                    return Err(reject(format!(
                        "more than {} bytes in total (decompression bomb?)",
                        limits.max_total_bytes
                    )));
                }
                entry.size = size;
                entry.sha256 = Some(write_file(&mut member, &target, &entry, progress)?);
            }
            tar::EntryType::Symlink => {
                let link = member
                    .link_name_bytes()
                    .ok_or_else(|| reject(format!("{rel:?}: symlink without target")))?;
                let link = std::str::from_utf8(&link)
                    .map_err(|_| reject(format!("{rel:?}: link target not UTF-8")))?
                    .to_string();
                manifest::check_link_target(&rel, &link).map_err(reject)?;
                entry.kind = Kind::Symlink;
                entry.link = Some(link.clone());
                links.insert(rel.clone());
                pending_links.push((rel.clone(), link));
            }
            other => {
                return Err(reject(format!(
                    "{rel:?}: {other:?} members (devices, FIFOs, hard links) are not allowed"
                )))
            }
        }
        seen.insert(rel, entry);
    }
    let manifest =
        manifest.ok_or_else(|| reject("no manifest: truncated or not a cfy-init snapshot"))?;
    // Links last, so no file was ever written through one.
    for (rel, link) in pending_links {
        let at = staging.join(&rel);
        if let Some(parent) = at.parent() {
            fs::create_dir_all(parent).map_err(|e| SnapshotError::io(parent, e))?;
        }
        std::os::unix::fs::symlink(&link, &at).map_err(|e| SnapshotError::io(&at, e))?;
        let e = &seen[&rel];
        let _ = std::os::unix::fs::lchown(&at, Some(e.uid as u32), Some(e.gid as u32));
        let t = filetime::FileTime::from_unix_time(e.mtime as i64, 0);
        let _ = filetime::set_symlink_file_times(&at, t, t);
    }
    Ok((seen, manifest))
}

fn read_manifest<R: Read>(member: &mut tar::Entry<R>) -> Result<Manifest, SnapshotError> {
    if member.size() > MAX_MANIFEST_BYTES {
        return Err(reject("manifest too large"));
    }
    let mut buf = Vec::with_capacity(member.size() as usize);
    member
        .take(MAX_MANIFEST_BYTES)
        .read_to_end(&mut buf)
        .map_err(|e| reject(format!("corrupt manifest: {e}")))?;
    let m: Manifest =
        serde_json::from_slice(&buf).map_err(|e| reject(format!("bad manifest: {e}")))?;
    if m.format != manifest::FORMAT {
        return Err(reject(format!("unknown archive format {}", m.format)));
    }
    Ok(m)
}

/// Stream one member into a new file under staging, never following links
/// (O_NOFOLLOW | O_EXCL), owned and moded as recorded.
fn write_file<R: Read>(
    member: &mut tar::Entry<R>,
    target: &Path,
    entry: &Entry,
    progress: &AtomicU64,
) -> Result<String, SnapshotError> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| SnapshotError::io(parent, e))?;
    }
    let io_err = |e| SnapshotError::io(target, e);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(target)
        .map_err(io_err)?;
    let mut reader = HashReader {
        inner: member.take(entry.size),
        hasher: Sha256::new(),
        progress: Some(progress),
    };
    let n = io::copy(&mut reader, &mut f)
        .map_err(|e| reject(format!("{:?}: corrupt or truncated data: {e}", entry.path)))?;
    if n != entry.size {
        return Err(reject(format!("{:?}: truncated", entry.path)));
    }
    f.flush().map_err(io_err)?;
    std::os::unix::fs::fchown(&f, Some(entry.uid as u32), Some(entry.gid as u32))
        .map_err(io_err)?;
    f.set_permissions(fs::Permissions::from_mode(entry.mode))
        .map_err(io_err)?;
    let t = filetime::FileTime::from_unix_time(entry.mtime as i64, 0);
    filetime::set_file_handle_times(&f, Some(t), Some(t)).map_err(io_err)?;
    Ok(hex::encode(reader.hasher.finalize()))
}

fn compare_with_manifest(seen: &Seen, manifest: &Manifest) -> Result<(), SnapshotError> {
    if manifest.entries.len() != seen.len() {
        return Err(reject(format!(
            "manifest lists {} entries, archive holds {}",
            manifest.entries.len(),
            seen.len()
        )));
    }
    for want in &manifest.entries {
        let got = seen.get(&want.path).ok_or_else(|| {
            reject(format!(
                "{:?}: in the manifest, not in the archive",
                want.path
            ))
        })?;
        if got != want {
            return Err(reject(format!(
                "{:?}: does not match the manifest (content, size, type, owner or mode)",
                want.path
            )));
        }
    }
    Ok(())
}

/// Directories get their recorded owner, mode and mtime last (deepest first), since
/// writing their children changed the mtime and a read-only mode would block them.
fn apply_dir_metadata(staging: &Path, manifest: &Manifest) -> Result<(), SnapshotError> {
    let mut dirs: Vec<&Entry> = manifest
        .entries
        .iter()
        .filter(|e| e.kind == Kind::Dir)
        .collect();
    dirs.sort_by_key(|e| std::cmp::Reverse(e.path.matches('/').count()));
    for e in dirs {
        let p = staging.join(&e.path);
        std::os::unix::fs::chown(&p, Some(e.uid as u32), Some(e.gid as u32))
            .map_err(|err| SnapshotError::io(&p, err))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(e.mode))
            .map_err(|err| SnapshotError::io(&p, err))?;
        let t = filetime::FileTime::from_unix_time(e.mtime as i64, 0);
        filetime::set_file_mtime(&p, t).map_err(|err| SnapshotError::io(&p, err))?;
    }
    Ok(())
}

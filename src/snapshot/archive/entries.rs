//! One member of an archive: its tar header, its manifest record, and its data read from
//! the store.

use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::walk::Found;
use crate::snapshot::manifest::{Entry, Kind, STORE_PREFIX};
use crate::snapshot::SnapshotError;

/// The manifest record of a found entry (the checksum comes when its data is read).
pub(super) fn entry_of(f: &Found) -> Entry {
    let m = &f.meta;
    let ft = m.file_type();
    let kind = if f.hard.is_some() {
        Kind::Hardlink
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::File
    };
    Entry {
        path: f.rel.clone(),
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid().into(),
        gid: m.gid().into(),
        size: f.file_size(),
        mtime: m.mtime().max(0) as u64,
        mtime_nsec: mtime_nsec(m),
        sha256: None,
        link: f.hard.clone().or_else(|| f.link.clone()),
        xattrs: f
            .xattrs
            .iter()
            .map(|(k, v)| (k.clone(), hex::encode(v)))
            .collect(),
        sparse: f.sparse(),
    }
}

/// Nanoseconds of the mtime (none for times before 1970, which are stored as 0).
fn mtime_nsec(m: &std::fs::Metadata) -> u32 {
    if m.mtime() < 0 {
        0
    } else {
        m.mtime_nsec().clamp(0, 999_999_999) as u32
    }
}

/// PAX record of a file that had holes (the restore makes them again). Readers that do not
/// know it ignore it.
pub const PAX_SPARSE: &str = "CFY.sparse";
/// PAX record prefix of an extended attribute, as GNU tar and bsdtar write them.
pub const PAX_XATTR: &str = "SCHILY.xattr.";

/// Append `len` bytes of the file at `path` from `offset` to `buf`, zero-filled past its
/// end (a live file may shrink under us; the pass marks it for reading again). Returns how
/// many bytes came from the file.
pub(super) fn read_into(
    path: &Path,
    offset: u64,
    len: u64,
    buf: &mut Vec<u8>,
) -> Result<u64, SnapshotError> {
    let start = buf.len();
    buf.resize(start + len as usize, 0);
    // Never through a link: a file replaced by one since the walk reads as gone, which
    // marks it for the next pass.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(0)
        }
        Err(e) => return Err(SnapshotError::io(path, e)),
    };
    let mut got = 0usize;
    while got < len as usize {
        match file.read_at(&mut buf[start + got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SnapshotError::io(path, e)),
        }
    }
    Ok(got as u64)
}

/// Zero-fill `buf` to the next 512-byte tar block.
pub(super) fn pad_block(buf: &mut Vec<u8>) {
    let rem = buf.len() % 512;
    if rem != 0 {
        buf.resize(buf.len() + 512 - rem, 0);
    }
}

/// The tar header block(s) of `f`: a PAX record first for a nanosecond mtime, xattrs
/// and holes, and a GNU long-name record when the name or link target needs one.
pub(super) fn append_header(buf: &mut Vec<u8>, f: &Found) -> Result<(), SnapshotError> {
    let m = &f.meta;
    let mut h = tar::Header::new_gnu();
    h.set_mode(m.mode() & 0o7777);
    h.set_uid(m.uid().into());
    h.set_gid(m.gid().into());
    h.set_mtime(m.mtime().max(0) as u64);
    let member = format!("{STORE_PREFIX}{}", f.rel);
    let io_err = |e| SnapshotError::io(&f.path, e);
    let mut b = tar::Builder::new(Vec::new());
    let nsec = mtime_nsec(m);
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    if nsec != 0 {
        let t = format!("{}.{nsec:09}", m.mtime().max(0));
        pax.push(("mtime".into(), t.into_bytes()));
    }
    for (k, v) in &f.xattrs {
        pax.push((format!("{PAX_XATTR}{k}"), v.clone()));
    }
    if f.sparse() {
        pax.push((PAX_SPARSE.into(), b"1".to_vec()));
    }
    if !pax.is_empty() {
        b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(io_err)?;
    }
    let ft = m.file_type();
    if let Some(first) = &f.hard {
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        b.append_link(&mut h, &member, format!("{STORE_PREFIX}{first}"))
            .map_err(io_err)?;
    } else if let Some(target) = &f.link {
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, &member, target).map_err(io_err)?;
    } else {
        h.set_entry_type(if ft.is_dir() {
            tar::EntryType::Directory
        } else if ft.is_fifo() {
            tar::EntryType::Fifo
        } else {
            tar::EntryType::Regular
        });
        h.set_size(f.file_size());
        // Header only: the data follows separately (tar pads nothing for an empty reader).
        b.append_data(&mut h, &member, io::empty())
            .map_err(io_err)?;
    }
    let mut bytes = b.into_inner().map_err(io_err)?;
    bytes.truncate(bytes.len() - 1024); // the end-of-archive blocks into_inner adds
    buf.extend_from_slice(&bytes);
    Ok(())
}

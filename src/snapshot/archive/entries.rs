//! One member of an archive: its tar header, its manifest record, and its data read from
//! the store.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use super::walk::Found;
use crate::snapshot::manifest::{Entry, Kind, STORE_PREFIX};
use crate::snapshot::SnapshotError;

/// The manifest record of a found entry (the checksum comes when its data is read).
pub(super) fn entry_of(f: &Found) -> Entry {
    let m = &f.meta;
    let kind = if m.is_dir() {
        Kind::Dir
    } else if m.file_type().is_symlink() {
        Kind::Symlink
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
        sha256: None,
        link: f.link.clone(),
    }
}

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
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
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

/// The tar header block(s) of `f` (with a GNU long-name record first when needed).
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
    if let Some(target) = &f.link {
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, &member, target).map_err(io_err)?;
    } else {
        let dir = m.is_dir();
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_size(if dir { 0 } else { m.len() });
        // Header only: the data follows separately (tar pads nothing for an empty reader).
        b.append_data(&mut h, &member, io::empty())
            .map_err(io_err)?;
    }
    let mut bytes = b.into_inner().map_err(io_err)?;
    bytes.truncate(bytes.len() - 1024); // the end-of-archive blocks into_inner adds
    buf.extend_from_slice(&bytes);
    Ok(())
}

//! Writing an archive: the staged copy of the store as a tar stream (`store/...` members,
//! then `manifest.json`), compressed by multi-threaded zstd with frame checksums, hashed
//! (sha256 of the whole file) while it is written.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::manifest::{self, Entry, Kind, Manifest, MANIFEST_NAME, STORE_PREFIX};
use super::{Compression, SnapshotError};

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    pub size: u64,
    pub sha256: String,
    pub entries: usize,
    pub total_bytes: u64,
}

/// Passes writes through and hashes / counts them.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Passes reads through, hashes them and reports progress.
pub struct HashReader<'a, R> {
    pub inner: R,
    pub hasher: Sha256,
    pub progress: Option<&'a AtomicU64>,
}

impl<R: Read> Read for HashReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        if let Some(p) = self.progress {
            p.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// Archive the tree `src` into the new file `out` (fsynced). On error the caller removes
/// `out`. `progress` counts uncompressed file bytes read.
pub fn write_archive(
    src: &Path,
    out: &Path,
    compression: &Compression,
    created: &str,
    progress: &AtomicU64,
) -> Result<Written, SnapshotError> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| SnapshotError::io(out, e))?;
    let sink = HashWriter {
        inner: io::BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        count: 0,
    };
    let io_err = |e| SnapshotError::io(out, e);
    let mut enc = zstd::stream::Encoder::new(sink, compression.level).map_err(io_err)?;
    let threads = match compression.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        n => n,
    };
    enc.multithread(threads).map_err(io_err)?;
    enc.include_checksum(true).map_err(io_err)?;
    // A large buffer in front of zstd: tar copies member data with io::copy, which then
    // reads straight into this buffer in big chunks instead of 8 KiB writes.
    let mut tar = tar::Builder::new(io::BufWriter::with_capacity(4 << 20, enc));
    let mut entries = Vec::new();
    add_dir(&mut tar, src, "", &mut entries, progress)?;
    let total_bytes = entries
        .iter()
        .filter(|e| e.kind == Kind::File)
        .map(|e| e.size)
        .sum();
    let count = entries.len();
    let manifest = Manifest {
        format: manifest::FORMAT,
        created: created.to_string(),
        entries,
        total_bytes,
    };
    let json = serde_json::to_vec(&manifest).expect("manifest serializes");
    let mut h = tar::Header::new_gnu();
    h.set_size(json.len() as u64);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, MANIFEST_NAME, json.as_slice())
        .map_err(io_err)?;
    let enc = tar
        .into_inner()
        .map_err(io_err)?
        .into_inner()
        .map_err(|e| io_err(e.into_error()))?;
    let mut sink = enc.finish().map_err(io_err)?;
    sink.flush().map_err(io_err)?;
    let size = sink.count;
    let sha256 = hex::encode(sink.hasher.finalize());
    let file = sink
        .inner
        .into_inner()
        .map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    Ok(Written {
        size,
        sha256,
        entries: count,
        total_bytes,
    })
}

fn add_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    rel: &str,
    entries: &mut Vec<Entry>,
    progress: &AtomicU64,
) -> Result<(), SnapshotError> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(|e| SnapshotError::io(dir, e))?
        .map(|r| r.map(|d| d.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| SnapshotError::io(dir, e))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let name = name.to_str().ok_or_else(|| {
            SnapshotError::Other(format!("{}: file name is not UTF-8", path.display()))
        })?;
        let rel = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(|e| SnapshotError::io(&path, e))?;
        let mut entry = Entry {
            path: rel.clone(),
            kind: Kind::File,
            mode: meta.mode() & 0o7777,
            uid: meta.uid().into(),
            gid: meta.gid().into(),
            size: 0,
            mtime: meta.mtime().max(0) as u64,
            sha256: None,
            link: None,
        };
        let mut h = tar::Header::new_gnu();
        h.set_mode(entry.mode);
        h.set_uid(entry.uid);
        h.set_gid(entry.gid);
        h.set_mtime(entry.mtime);
        let member = format!("{STORE_PREFIX}{rel}");
        let io_err = |e| SnapshotError::io(&path, e);
        let ft = meta.file_type();
        if ft.is_dir() {
            entry.kind = Kind::Dir;
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            tar.append_data(&mut h, &member, io::empty())
                .map_err(io_err)?;
            entries.push(entry);
            add_dir(tar, &path, &rel, entries, progress)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(io_err)?;
            let target = target.to_str().ok_or_else(|| {
                SnapshotError::Other(format!("{}: link target is not UTF-8", path.display()))
            })?;
            // Never produce an archive that restore would refuse.
            manifest::check_link_target(&rel, target).map_err(|m| {
                SnapshotError::Other(format!("cannot snapshot {m}: make the link relative"))
            })?;
            entry.kind = Kind::Symlink;
            entry.link = Some(target.to_string());
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, &member, target).map_err(io_err)?;
            entries.push(entry);
        } else if ft.is_file() {
            let f = File::open(&path).map_err(io_err)?;
            entry.size = meta.len();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(entry.size);
            let mut reader = HashReader {
                inner: f.take(entry.size),
                hasher: Sha256::new(),
                progress: Some(progress),
            };
            tar.append_data(&mut h, &member, &mut reader)
                .map_err(io_err)?;
            entry.sha256 = Some(hex::encode(reader.hasher.finalize()));
            entries.push(entry);
        }
    }
    Ok(())
}

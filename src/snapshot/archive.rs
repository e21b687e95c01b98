//! Writing an archive: the staged copy of the store as a tar stream (`store/...` members,
//! then `manifest.json`), compressed by multi-threaded zstd with frame checksums, hashed
//! (sha256 of the whole file) while it is written.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
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

/// The archive file. Every few MiB it asks the kernel to start writing what was written,
/// so the final fsync waits for the tail only, not for the whole archive at once.
struct EagerFile {
    file: File,
    written: u64,
    started: u64,
}

const WRITEBACK_STEP: u64 = 8 << 20;

impl Write for EagerFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_STEP {
            // SAFETY: plain syscall on an open fd. A hint only: errors surface at fsync.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.started as libc::off64_t,
                    (self.written - self.started) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.started = self.written;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
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
/// `out`. `progress` counts uncompressed file bytes read. Each file of `src` is deleted
/// once archived: `src` is a staged copy that goes away afterwards anyway, and dropping its
/// page cache early saves writing it back to disk.
pub fn write_archive(
    src: &Path,
    out: &Path,
    compression: &Compression,
    created: &str,
    progress: &AtomicU64,
) -> Result<Written, SnapshotError> {
    let (tx, rx) = crossbeam_channel::unbounded::<PathBuf>();
    std::thread::scope(|s| {
        // An unlink waits for writeback under way on that file; on its own thread the wait
        // overlaps compression instead of stalling it.
        s.spawn(move || {
            for path in rx {
                // Whatever is left over goes with the staging tree.
                let _ = fs::remove_file(path);
            }
        });
        let tx = tx;
        write_tar_zst(src, out, compression, created, progress, &tx)
    })
}

/// Files archived so far are sent here for deletion.
type Consumed<'a> = &'a crossbeam_channel::Sender<PathBuf>;

fn write_tar_zst(
    src: &Path,
    out: &Path,
    compression: &Compression,
    created: &str,
    progress: &AtomicU64,
    consumed: Consumed,
) -> Result<Written, SnapshotError> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| SnapshotError::io(out, e))?;
    let sink = HashWriter {
        inner: io::BufWriter::with_capacity(
            1 << 20,
            EagerFile {
                file,
                written: 0,
                started: 0,
            },
        ),
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
    add_dir(&mut tar, src, "", &mut entries, progress, consumed)?;
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
        .map_err(|e| io_err(e.into_error()))?
        .file;
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
    consumed: Consumed,
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
            add_dir(tar, &path, &rel, entries, progress, consumed)?;
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
            let _ = consumed.send(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{copy, verify, Limits};
    use std::os::unix::fs::PermissionsExt;

    /// A small store: nested directories, files of several sizes, a relative link, and
    /// modes and mtimes that must survive the copy.
    fn make_store(root: &Path) {
        fs::create_dir_all(root.join("a/b/c")).unwrap();
        for (i, rel) in ["f0", "a/f1", "a/b/f2", "a/b/c/f3", "a/b/c/f4"]
            .iter()
            .enumerate()
        {
            let p = root.join(rel);
            fs::write(&p, vec![b'x' + i as u8; 1000 * i * i + 7]).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600 + i as u32)).unwrap();
            let t = filetime::FileTime::from_unix_time(1_600_000_000 + i as i64, 0);
            filetime::set_file_mtime(&p, t).unwrap();
        }
        std::os::unix::fs::symlink("b/f2", root.join("a/link")).unwrap();
        fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
        let t = filetime::FileTime::from_unix_time(1_500_000_000, 0);
        filetime::set_file_mtime(root.join("a/b"), t).unwrap();
    }

    /// Regular files below `root` (links are left to the staging removal).
    fn files_under(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(root).unwrap() {
            let p = e.unwrap().path();
            let ft = fs::symlink_metadata(&p).unwrap().file_type();
            if ft.is_dir() {
                out.extend(files_under(&p));
            } else if ft.is_file() {
                out.push(p);
            }
        }
        out
    }

    /// Parallel copy, consuming archive, verified restore: what comes back is the store.
    #[test]
    fn staged_copy_archived_and_consumed_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        make_store(&store);
        let staged = tmp.path().join("staged");
        let bytes = AtomicU64::new(0);
        copy::copy_tree(&store, &staged, &bytes).unwrap();
        let want_bytes: u64 = (0..5u64).map(|i| 1000 * i * i + 7).sum();
        assert_eq!(bytes.load(Ordering::Relaxed), want_bytes);
        let meta_b = fs::metadata(staged.join("a/b")).unwrap();
        assert_eq!(meta_b.mode() & 0o7777, 0o750);
        assert_eq!(meta_b.mtime(), 1_500_000_000);

        let out = tmp.path().join("snap.tar.zst");
        let comp = Compression::default();
        let w = write_archive(&staged, &out, &comp, "t", &AtomicU64::new(0)).unwrap();
        assert_eq!(w.total_bytes, want_bytes);
        assert!(
            files_under(&staged).is_empty(),
            "every staged file was consumed"
        );

        let back = tmp.path().join("back");
        let v = verify::extract_verified(
            &out,
            &back,
            &Limits::default(),
            Some(&w.sha256),
            &AtomicU64::new(0),
        )
        .unwrap();
        assert_eq!(v.manifest.entries.len(), w.entries);
        for rel in ["f0", "a/f1", "a/b/f2", "a/b/c/f3", "a/b/c/f4"] {
            let (a, b) = (store.join(rel), back.join(rel));
            assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap(), "{rel}");
            let (ma, mb) = (fs::metadata(&a).unwrap(), fs::metadata(&b).unwrap());
            assert_eq!(ma.mode() & 0o7777, mb.mode() & 0o7777, "{rel}");
            assert_eq!(ma.mtime(), mb.mtime(), "{rel}");
        }
        assert_eq!(
            fs::read_link(back.join("a/link")).unwrap(),
            Path::new("b/f2")
        );
    }
}

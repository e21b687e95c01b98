//! Writing an archive: a tree as a tar stream (`store/...` members, then `manifest.json`),
//! cut into chunks of about [`CHUNK_BYTES`] that are compressed in parallel as independent
//! zstd frames (with frame checksums) and appended in order; sha256 of the whole file.
//!
//! An archive is built in passes so that it can be taken from the live store (see
//! `snapshot.precopy`). Every entry is recorded with the `lstat` it was read at. A later
//! pass walks the tree again and re-reads every entry that changed since (or that changed
//! too close to the walk for its timestamps to tell, as git's "racy clean" check); the
//! chunks holding the old versions are turned into zstd skippable frames in place, which
//! every zstd reader steps over, so the stream stays one valid tar with each path once. The
//! last pass runs while the writers are quiesced, so the archive is the store as it was then.

mod entries;
mod frames;
#[cfg(test)]
mod tests;
mod walk;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::manifest::{self, Entry, Kind, Manifest, MANIFEST_NAME};
use super::{Compression, SnapshotError};
use entries::entry_of;
pub use entries::{PAX_SPARSE, PAX_XATTR};
use frames::{frame_compressor, plan_chunks, skippable_header, Baton, ChunkWorker, Done, Item};
use walk::{racy_margin, walk_tree, Found, Stamp};

/// Uncompressed bytes per chunk: one zstd frame, and the unit that a later pass replaces.
/// Large enough for zstd's window (2 MiB at level 3) and for one worker's job, small enough
/// that one changed file costs little to re-read while services are paused.
pub const CHUNK_BYTES: u64 = 8 << 20;

/// The archive is rewritten without its skipped chunks when they are over 1/this of it.
const COMPACT_WHEN_DEAD_OVER: u64 = 8;

/// Writeback of the archive is started every this many bytes, so the final fsync waits for
/// the tail only.
const WRITEBACK_STEP: u64 = 8 << 20;

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    pub size: u64,
    pub sha256: String,
    pub entries: usize,
    pub total_bytes: u64,
}

/// What one pass read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pass {
    /// Entries (re)written by the pass.
    pub entries: usize,
    /// File bytes (re)written by the pass.
    pub bytes: u64,
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

/// Archive the tree `src` into the new file `out` (fsynced) in one pass. On error the
/// caller removes `out`. `progress` counts file bytes read. Each file of `src` is deleted
/// once archived: `src` is a staged copy that goes away afterwards anyway, and dropping its
/// page cache early saves writing it back to disk.
pub fn write_archive(
    src: &Path,
    out: &Path,
    compression: &Compression,
    created: &str,
    progress: &AtomicU64,
) -> Result<Written, SnapshotError> {
    let mut w = ArchiveWriter::create(src, out, compression, true)?;
    w.pass(progress)?;
    w.finish(created)
}

/// An entry the archive holds: its manifest record, the state it was read at, and the
/// chunks its member lives in.
struct Held {
    entry: Entry,
    stamp: Stamp,
    /// Re-read by the next pass whatever its stamp says (see [`RACY_MARGIN`]), or because
    /// it changed under the reader.
    racy: bool,
    /// It changed while it was read (shorter than its stamp said).
    unstable: bool,
    chunks: Range<usize>,
}

/// A compressed frame in the archive file.
struct Chunk {
    start: u64,
    len: u64,
    /// Store paths with (part of) their member in this chunk.
    members: Vec<String>,
    /// Replaced by a skippable frame.
    dead: bool,
}
/// Builds one archive file over one or more passes.
pub struct ArchiveWriter {
    root: PathBuf,
    out: PathBuf,
    file: File,
    level: i32,
    workers: usize,
    /// Delete each file of the tree once archived (a staged copy).
    consume: bool,
    held: HashMap<String, Held>,
    chunks: Vec<Chunk>,
    end: u64,
    /// sha256 of everything appended so far, and its state at the start of each chunk, so
    /// that after patching only the file from the first patched chunk on is hashed again.
    hasher: Sha256,
    states: Vec<Sha256>,
    first_patched: Option<usize>,
    writeback_from: u64,
    racy_margin: Duration,
    /// Store-relative prefixes whose files may change while read (see
    /// [`ArchiveWriter::allow_changes_under`]).
    live: Vec<String>,
}

impl ArchiveWriter {
    /// Start an archive of the tree `root` in the new file `out`.
    pub fn create(
        root: &Path,
        out: &Path,
        compression: &Compression,
        consume: bool,
    ) -> Result<ArchiveWriter, SnapshotError> {
        let file = fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .open(out)
            .map_err(|e| SnapshotError::create(out, e, 1))?;
        let workers = match compression.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        Ok(ArchiveWriter {
            root: root.to_path_buf(),
            out: out.to_path_buf(),
            file,
            level: compression.level,
            workers,
            consume,
            held: HashMap::new(),
            chunks: Vec::new(),
            end: 0,
            hasher: Sha256::new(),
            states: Vec::new(),
            first_patched: None,
            writeback_from: 0,
            racy_margin: racy_margin(),
            live: Vec::new(),
        })
    }

    /// Walk the tree and bring the archive up to date with it: every entry that is new,
    /// changed or racy is (re)written, every chunk holding a stale or deleted entry is
    /// skipped, together with the other entries in it, which are written again too.
    pub fn pass(&mut self, progress: &AtomicU64) -> Result<Pass, SnapshotError> {
        let started = SystemTime::now();
        let found = walk_tree(&self.root)?;
        let present: HashSet<&str> = found.iter().map(|f| f.rel.as_str()).collect();
        let mut redo: HashSet<String> = found
            .iter()
            .filter(|f| {
                self.held
                    .get(&f.rel)
                    .map_or(true, |h| h.racy || h.stamp != Stamp::of(&f.meta))
            })
            .map(|f| f.rel.clone())
            .collect();
        // Names of one multiply linked file are redone together, so that the member with
        // the data always comes before the links to it; a chunk dying takes its mates.
        let groups = link_groups(&found);
        let dead = loop {
            let stale: Vec<usize> = self
                .held
                .iter()
                .filter(|(rel, _)| redo.contains(*rel) || !present.contains(rel.as_str()))
                .flat_map(|(_, h)| h.chunks.clone())
                .collect();
            let dead = self.dead_closure(stale, &present, &mut redo);
            let before = redo.len();
            for names in groups.values() {
                if names.iter().any(|n| redo.contains(*n)) {
                    redo.extend(names.iter().map(|n| n.to_string()));
                }
            }
            if redo.len() == before {
                break dead;
            }
        };
        for &c in &dead {
            self.kill_chunk(c)?;
        }
        self.held
            .retain(|rel, _| present.contains(rel.as_str()) && !redo.contains(rel));
        let mut todo: Vec<Found> = found
            .into_iter()
            .filter(|f| redo.contains(&f.rel))
            .collect();
        // The first name of a file in this pass carries its data, later ones link to it.
        let mut first: HashMap<(u64, u64), String> = HashMap::new();
        for f in &mut todo {
            if let Some(ino) = f.inode() {
                match first.get(&ino) {
                    Some(name) => f.hard = Some(name.clone()),
                    None => {
                        first.insert(ino, f.rel.clone());
                    }
                }
            }
        }
        let pass = Pass {
            entries: todo.len(),
            bytes: todo.iter().map(Found::file_size).sum(),
        };
        let since = started.checked_sub(self.racy_margin).unwrap_or(started);
        self.emit(&todo, since, progress)?;
        Ok(pass)
    }

    /// The chunks that must go: those of `stale` entries, and every chunk of an entry that
    /// shares one of them (its member is written again whole, so all of it goes). Present
    /// entries in them are added to `redo`.
    fn dead_closure(
        &self,
        stale: Vec<usize>,
        present: &HashSet<&str>,
        redo: &mut HashSet<String>,
    ) -> BTreeSet<usize> {
        let mut dead: BTreeSet<usize> = stale.iter().copied().collect();
        let mut work = stale;
        while let Some(c) = work.pop() {
            for m in &self.chunks[c].members {
                if let Some(h) = self.held.get(m) {
                    for c2 in h.chunks.clone() {
                        if dead.insert(c2) {
                            work.push(c2);
                        }
                    }
                }
                if present.contains(m.as_str()) {
                    redo.insert(m.clone());
                }
            }
        }
        dead
    }

    /// Turn chunk `c` into skippable frame(s) and free its blocks.
    fn kill_chunk(&mut self, c: usize) -> Result<(), SnapshotError> {
        let chunk = &mut self.chunks[c];
        if chunk.dead {
            return Ok(());
        }
        chunk.dead = true;
        let (start, len) = (chunk.start, chunk.len);
        let header = skippable_header(len).map_err(|e| SnapshotError::io(&self.out, e))?;
        self.file
            .write_all_at(&header, start)
            .map_err(|e| self.write_err(e, 0))?;
        // SAFETY: plain syscall on an open fd. Space only: the skipped bytes are never read
        // as data, and on file systems without hole punching they simply stay.
        unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                (start + 8) as libc::off_t,
                (len - 8) as libc::off_t,
            );
        }
        self.first_patched = Some(self.first_patched.map_or(c, |f| f.min(c)));
        Ok(())
    }

    /// Write the members of `todo` (in tree order) as new chunks at the end of the file.
    fn emit(
        &mut self,
        todo: &[Found],
        since: SystemTime,
        progress: &AtomicU64,
    ) -> Result<(), SnapshotError> {
        let plans = plan_chunks(todo);
        let batons: HashMap<usize, Baton> = todo
            .iter()
            .enumerate()
            .filter(|(_, f)| f.file_size() > CHUNK_BYTES)
            .map(|(i, _)| (i, Baton::default()))
            .collect();
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let (tx, rx) = crossbeam_channel::unbounded::<(usize, Result<Done, SnapshotError>)>();
        let (del_tx, del_rx) = crossbeam_channel::unbounded::<PathBuf>();
        let level = self.level;
        std::thread::scope(|s| {
            // An unlink waits for writeback under way on that file; on its own thread the
            // wait overlaps compression instead of stalling it.
            s.spawn(move || {
                for path in del_rx {
                    let _ = fs::remove_file(path);
                }
            });
            for _ in 0..self.workers.min(plans.len()).max(1) {
                let (tx, plans, batons) = (tx.clone(), &plans, &batons);
                let (next, stop) = (&next, &stop);
                s.spawn(move || {
                    let mut worker = match ChunkWorker::new(level, todo, batons, progress) {
                        Ok(w) => w,
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            let _ = tx.send((usize::MAX, Err(e)));
                            return;
                        }
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(plan) = plans.get(i) else { break };
                        let done = worker.build(plan);
                        if done.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        if tx.send((i, done)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            let consume = self.consume.then_some(&del_tx);
            let result = self.append_in_order(&plans, todo, since, rx, consume);
            if result.is_err() {
                stop.store(true, Ordering::Relaxed);
                // Wake any worker waiting for a hash that will not come.
                for b in batons.values() {
                    b.abandon();
                }
            }
            drop(del_tx);
            result
        })
    }

    /// Receive the workers' chunks and append them in plan order.
    fn append_in_order(
        &mut self,
        plans: &[Vec<Item>],
        todo: &[Found],
        since: SystemTime,
        rx: crossbeam_channel::Receiver<(usize, Result<Done, SnapshotError>)>,
        consume: Option<&crossbeam_channel::Sender<PathBuf>>,
    ) -> Result<(), SnapshotError> {
        let mut pending: BTreeMap<usize, Done> = BTreeMap::new();
        let mut want = 0;
        for (i, done) in rx {
            pending.insert(i, done?);
            while let Some(done) = pending.remove(&want) {
                self.append_chunk(&plans[want], todo, done, since, consume)?;
                want += 1;
            }
        }
        if want < plans.len() {
            return Err(SnapshotError::Other("archive worker stopped early".into()));
        }
        Ok(())
    }

    fn append_chunk(
        &mut self,
        plan: &[Item],
        todo: &[Found],
        done: Done,
        since: SystemTime,
        consume: Option<&crossbeam_channel::Sender<PathBuf>>,
    ) -> Result<(), SnapshotError> {
        let c = self.chunks.len();
        let members = plan.iter().map(|it| todo[it.idx()].rel.clone()).collect();
        self.append_frame(&done.frame, members)?;
        for it in plan {
            let f = &todo[it.idx()];
            match *it {
                Item::Whole(_) | Item::Piece { offset: 0, .. } => {
                    let stamp = Stamp::of(&f.meta);
                    let held = Held {
                        entry: entry_of(f),
                        stamp,
                        racy: stamp.changed_since(since),
                        unstable: false,
                        chunks: c..c + 1,
                    };
                    self.held.insert(f.rel.clone(), held);
                }
                Item::Piece { .. } => {
                    let h = self.held.get_mut(&f.rel).expect("first piece came first");
                    h.chunks.end = c + 1;
                }
            }
        }
        for (idx, sha, short) in done.files {
            let f = &todo[idx];
            let h = self.held.get_mut(&f.rel).expect("file is held");
            h.entry.sha256 = Some(sha);
            if short {
                h.racy = true;
                h.unstable = true;
            }
            if let Some(del) = consume {
                let _ = del.send(f.path.clone());
            }
        }
        Ok(())
    }

    /// Append one compressed frame holding (parts of) `members`.
    fn append_frame(&mut self, frame: &[u8], members: Vec<String>) -> Result<(), SnapshotError> {
        self.states.push(self.hasher.clone());
        if let Err(e) = self.file.write_all(frame) {
            return Err(self.write_err(e, frame.len() as u64));
        }
        self.hasher.update(frame);
        self.chunks.push(Chunk {
            start: self.end,
            len: frame.len() as u64,
            members,
            dead: false,
        });
        self.end += frame.len() as u64;
        if self.end - self.writeback_from >= WRITEBACK_STEP {
            // SAFETY: plain syscall on an open fd. A hint only: errors surface at fsync.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.writeback_from as libc::off64_t,
                    (self.end - self.writeback_from) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.writeback_from = self.end;
        }
        Ok(())
    }

    /// Files below these store-relative directories belong to services that keep running
    /// through the snapshot: one that changes while the last pass reads it is archived as
    /// read (a crash-consistent copy) instead of failing [`finish`](Self::finish).
    pub fn allow_changes_under(&mut self, dirs: Vec<PathBuf>) {
        self.live = dirs
            .into_iter()
            .map(|d| d.to_string_lossy().trim_matches('/').to_string())
            .filter(|d| !d.is_empty())
            .collect();
    }

    fn is_live(&self, rel: &str) -> bool {
        self.live.iter().any(|d| {
            rel.strip_prefix(d.as_str())
                .is_some_and(|r| r.starts_with('/'))
        })
    }

    /// Paths that changed while the last pass read them (none after a quiesced pass, unless
    /// a writer was not quiesced).
    fn unstable(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .held
            .iter()
            .filter(|(rel, h)| h.unstable && !self.is_live(rel))
            .map(|(rel, _)| rel.as_str())
            .collect();
        v.sort_unstable();
        v
    }

    /// Append the manifest and the end of the tar stream, fsync, and hash the file.
    pub fn finish(mut self, created: &str) -> Result<Written, SnapshotError> {
        if let Some(rel) = self.unstable().first() {
            return Err(SnapshotError::Other(format!(
                "{}: changed while it was archived; add its writer to snapshot.quiesce",
                self.root.join(rel).display()
            )));
        }
        let out = self.out.clone();
        let io_err = |e| SnapshotError::io(&out, e);
        let mut entries: Vec<Entry> = self.held.drain().map(|(_, h)| h.entry).collect();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
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
        let mut tail = tar::Builder::new(Vec::new());
        tail.append_data(&mut h, MANIFEST_NAME, json.as_slice())
            .map_err(io_err)?;
        // into_inner ends the tar stream (two zero blocks).
        let tail = tail.into_inner().map_err(io_err)?;
        let frame = frame_compressor(self.level)
            .and_then(|mut c| c.compress(&tail))
            .map_err(io_err)?;
        self.append_frame(&frame, Vec::new())?;
        let dead: u64 = self.chunks.iter().filter(|c| c.dead).map(|c| c.len).sum();
        let (size, sha256) = if dead > self.end / COMPACT_WHEN_DEAD_OVER {
            self.compact()?
        } else {
            self.file.sync_all().map_err(|e| self.write_err(e, 0))?;
            (self.end, self.hash_in_place().map_err(io_err)?)
        };
        Ok(Written {
            size,
            sha256,
            entries: count,
            total_bytes,
        })
    }
}

impl ArchiveWriter {
    /// sha256 of the file as it is: the running hash, or, when chunks were patched, the
    /// hash state at the first patched chunk carried on over the rest of the file.
    fn hash_in_place(&self) -> io::Result<String> {
        let Some(c) = self.first_patched else {
            return Ok(hex::encode(self.hasher.clone().finalize()));
        };
        let mut hasher = self.states[c].clone();
        let mut rest = &self.file;
        rest.seek(io::SeekFrom::Start(self.chunks[c].start))?;
        io::copy(&mut rest, &mut hasher)?;
        Ok(hex::encode(hasher.finalize()))
    }

    /// Rewrite the archive without its skipped chunks (a busy store can leave most of the
    /// file skipped, which every download would carry): the live frames are copied in
    /// order to a new file, which is fsynced and renamed over the old one.
    fn compact(&self) -> Result<(u64, String), SnapshotError> {
        let tmp = self.out.with_extension("compact");
        let copy = || -> io::Result<(u64, String)> {
            let mut dst = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            let (mut hasher, mut size, mut buf) = (Sha256::new(), 0u64, Vec::new());
            for c in self.chunks.iter().filter(|c| !c.dead) {
                buf.resize(c.len as usize, 0);
                self.file.read_exact_at(&mut buf, c.start)?;
                hasher.update(&buf);
                dst.write_all(&buf)?;
                size += c.len;
            }
            dst.sync_all()?;
            fs::rename(&tmp, &self.out)?;
            Ok((size, hex::encode(hasher.finalize())))
        };
        copy().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            // Room for the live frames twice: the old file holds them until the rename.
            self.write_err(e, self.live_bytes())
        })
    }

    /// Bytes of the frames that are not skipped: what the file needs on disk.
    fn live_bytes(&self) -> u64 {
        self.chunks.iter().filter(|c| !c.dead).map(|c| c.len).sum()
    }

    /// An error of writing the archive file; out of space names what the archive needs at
    /// least: the frames it holds and `more`, the write that failed.
    fn write_err(&self, e: io::Error, more: u64) -> SnapshotError {
        SnapshotError::write(&self.out, e, self.live_bytes() + more)
    }
}

/// The names of every multiply linked file in `found`, by (device, inode).
fn link_groups(found: &[Found]) -> HashMap<(u64, u64), Vec<&str>> {
    let mut groups: HashMap<(u64, u64), Vec<&str>> = HashMap::new();
    for f in found {
        if let Some(ino) = f.inode() {
            groups.entry(ino).or_default().push(f.rel.as_str());
        }
    }
    groups.retain(|_, names| names.len() > 1);
    groups
}

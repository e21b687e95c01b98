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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::manifest::{self, Entry, Kind, Manifest, MANIFEST_NAME, STORE_PREFIX};
use super::{is_reserved, Compression, SnapshotError};

/// Uncompressed bytes per chunk: one zstd frame, and the unit that a later pass replaces.
/// Large enough for zstd's window (2 MiB at level 3) and for one worker's job, small enough
/// that one changed file costs little to re-read while services are paused.
pub const CHUNK_BYTES: u64 = 8 << 20;

/// A file whose ctime is this close to (or after) the start of the walk that read it is
/// re-read by the next pass: the kernel stamps files from a clock that advances once per
/// tick, and a write within the tick of the last stamp leaves the stamp as it was. Four
/// ticks of that clock, and never less than this floor.
const RACY_MARGIN_FLOOR: Duration = Duration::from_millis(50);

/// See [`RACY_MARGIN_FLOOR`].
fn racy_margin() -> Duration {
    let mut res = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_getres writes one timespec into `res`.
    let tick = if unsafe { libc::clock_getres(libc::CLOCK_REALTIME_COARSE, &mut res) } == 0 {
        Duration::new(
            res.tv_sec.max(0) as u64,
            res.tv_nsec.clamp(0, 999_999_999) as u32,
        )
    } else {
        Duration::from_secs(1)
    };
    (tick * 4).max(RACY_MARGIN_FLOOR)
}

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

/// The file state an entry was read at; any change to the entry changes it (a write sets
/// mtime and ctime, chmod/chown/rename set ctime, a replacement changes the inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    mode: u32,
    uid: u32,
    gid: u32,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
        }
    }

    /// Changed at or after `t` (by the ctime, which no program can set back).
    fn changed_since(&self, t: SystemTime) -> bool {
        let t = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let (s, ns) = self.ctime;
        (s, ns) >= (t.as_secs() as i64, i64::from(t.subsec_nanos()))
    }
}

/// One entry found by a walk of the tree.
struct Found {
    rel: String,
    path: PathBuf,
    meta: fs::Metadata,
    link: Option<String>,
}

impl Found {
    fn file_size(&self) -> u64 {
        if self.meta.is_file() {
            self.meta.len()
        } else {
            0
        }
    }
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

/// A part of a chunk's plan: a whole member, or a slice of a large file's member.
#[derive(Clone, Copy)]
enum Item {
    Whole(usize),
    Piece {
        idx: usize,
        offset: u64,
        len: u64,
        last: bool,
    },
}

/// A compressed chunk from a worker, and the checksum of every file it completed.
struct Done {
    frame: Vec<u8>,
    files: Vec<(usize, String, bool)>,
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
            .open(out)
            .map_err(|e| SnapshotError::io(out, e))?;
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
        let stale: Vec<usize> = self
            .held
            .iter()
            .filter(|(rel, _)| redo.contains(*rel) || !present.contains(rel.as_str()))
            .flat_map(|(_, h)| h.chunks.clone())
            .collect();
        let dead = self.dead_closure(stale, &present, &mut redo);
        for &c in &dead {
            self.kill_chunk(c)?;
        }
        self.held
            .retain(|rel, _| present.contains(rel.as_str()) && !redo.contains(rel));
        let todo: Vec<Found> = found
            .into_iter()
            .filter(|f| redo.contains(&f.rel))
            .collect();
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
        let io_err = |e| SnapshotError::io(&self.out, e);
        let header = skippable_header(len).map_err(io_err)?;
        self.file.write_all_at(&header, start).map_err(io_err)?;
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
        let io_err = |e| SnapshotError::io(&self.out, e);
        self.states.push(self.hasher.clone());
        self.file.write_all(frame).map_err(io_err)?;
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

    /// Paths that changed while the last pass read them (none after a quiesced pass, unless
    /// a writer was not quiesced).
    fn unstable(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .held
            .iter()
            .filter(|(_, h)| h.unstable)
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
            self.file.sync_all().map_err(io_err)?;
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
            SnapshotError::io(&self.out, e)
        })
    }
}

impl Item {
    fn idx(&self) -> usize {
        match *self {
            Item::Whole(i) | Item::Piece { idx: i, .. } => i,
        }
    }
}

/// Group members into chunks of about [`CHUNK_BYTES`]: small members together, a large
/// file alone in chunks of its own (so that a change elsewhere never re-reads it).
fn plan_chunks(todo: &[Found]) -> Vec<Vec<Item>> {
    let mut plans = Vec::new();
    let mut cur = Vec::new();
    let mut cur_bytes = 0u64;
    for (i, f) in todo.iter().enumerate() {
        let size = f.file_size();
        if size <= CHUNK_BYTES {
            cur.push(Item::Whole(i));
            cur_bytes += size + 512;
            if cur_bytes >= CHUNK_BYTES {
                plans.push(std::mem::take(&mut cur));
                cur_bytes = 0;
            }
            continue;
        }
        if !cur.is_empty() {
            plans.push(std::mem::take(&mut cur));
            cur_bytes = 0;
        }
        let mut offset = 0;
        while offset < size {
            let len = CHUNK_BYTES.min(size - offset);
            plans.push(vec![Item::Piece {
                idx: i,
                offset,
                len,
                last: offset + len == size,
            }]);
            offset += len;
        }
    }
    if !cur.is_empty() {
        plans.push(cur);
    }
    plans
}

/// The header of zstd skippable frame(s) covering exactly `len` bytes.
fn skippable_header(len: u64) -> io::Result<[u8; 8]> {
    let body = len
        .checked_sub(8)
        .and_then(|b| u32::try_from(b).ok())
        .ok_or_else(|| io::Error::other(format!("chunk of {len} bytes cannot be skipped")))?;
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&0x184D_2A50u32.to_le_bytes());
    h[4..].copy_from_slice(&body.to_le_bytes());
    Ok(h)
}

/// A compressor for independent frames at `level`, each with its content checksum.
fn frame_compressor(level: i32) -> io::Result<zstd::bulk::Compressor<'static>> {
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true))?;
    Ok(c)
}

/// The manifest record of a found entry (the checksum comes when its data is read).
fn entry_of(f: &Found) -> Entry {
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

/// The sha256 of a large file, whose pieces are read by several workers: each piece is
/// hashed in order, so a worker waits here for the one before its piece.
#[derive(Default)]
struct Baton {
    state: Mutex<BatonState>,
    turn: Condvar,
}

#[derive(Default)]
struct BatonState {
    next_offset: u64,
    hasher: Sha256,
    short: bool,
    abandoned: bool,
}

impl Baton {
    /// Hash `data`, the piece at `offset`, after every piece before it.
    fn hash_piece(&self, offset: u64, data: &[u8], short: bool) -> Result<(), SnapshotError> {
        let mut st = self.state.lock().unwrap();
        while st.next_offset != offset && !st.abandoned {
            st = self.turn.wait(st).unwrap();
        }
        if st.abandoned {
            return Err(SnapshotError::Other("archive stopped".into()));
        }
        st.hasher.update(data);
        st.short |= short;
        st.next_offset += data.len() as u64;
        drop(st);
        self.turn.notify_all();
        Ok(())
    }

    /// The file's checksum, and whether any piece came up short.
    fn finish(&self) -> (String, bool) {
        let st = std::mem::take(&mut *self.state.lock().unwrap());
        (hex::encode(st.hasher.finalize()), st.short)
    }

    fn abandon(&self) {
        self.state.lock().unwrap().abandoned = true;
        self.turn.notify_all();
    }
}

/// One compression thread: builds a chunk's tar bytes and compresses them.
struct ChunkWorker<'a> {
    compressor: zstd::bulk::Compressor<'static>,
    todo: &'a [Found],
    batons: &'a HashMap<usize, Baton>,
    progress: &'a AtomicU64,
    buf: Vec<u8>,
}

impl<'a> ChunkWorker<'a> {
    fn new(
        level: i32,
        todo: &'a [Found],
        batons: &'a HashMap<usize, Baton>,
        progress: &'a AtomicU64,
    ) -> Result<Self, SnapshotError> {
        let compressor =
            frame_compressor(level).map_err(|e| SnapshotError::Other(format!("zstd: {e}")))?;
        Ok(ChunkWorker {
            compressor,
            todo,
            batons,
            progress,
            buf: Vec::with_capacity((CHUNK_BYTES + (1 << 20)) as usize),
        })
    }

    fn build(&mut self, plan: &[Item]) -> Result<Done, SnapshotError> {
        self.buf.clear();
        let mut files = Vec::new();
        for it in plan {
            match *it {
                Item::Whole(i) => {
                    let todo = self.todo;
                    if let Some((sha, short)) = self.whole(&todo[i])? {
                        files.push((i, sha, short));
                    }
                }
                Item::Piece {
                    idx,
                    offset,
                    len,
                    last,
                } => {
                    self.piece(idx, offset, len)?;
                    if last {
                        pad_block(&mut self.buf);
                        let (sha, short) = self.batons[&idx].finish();
                        files.push((idx, sha, short));
                    }
                }
            }
        }
        let frame = self
            .compressor
            .compress(&self.buf)
            .map_err(|e| SnapshotError::Other(format!("zstd: {e}")))?;
        Ok(Done { frame, files })
    }

    /// A whole member; for a regular file, its checksum and whether it came up short.
    fn whole(&mut self, f: &Found) -> Result<Option<(String, bool)>, SnapshotError> {
        append_header(&mut self.buf, f)?;
        if !f.meta.is_file() {
            return Ok(None);
        }
        let size = f.meta.len();
        let start = self.buf.len();
        let got = read_into(&f.path, 0, size, &mut self.buf)?;
        self.progress.fetch_add(got, Ordering::Relaxed);
        let sha = hex::encode(Sha256::digest(&self.buf[start..]));
        pad_block(&mut self.buf);
        Ok(Some((sha, got < size)))
    }

    /// A slice of a large file (with the member header before the first).
    fn piece(&mut self, idx: usize, offset: u64, len: u64) -> Result<(), SnapshotError> {
        let f = &self.todo[idx];
        if offset == 0 {
            append_header(&mut self.buf, f)?;
        }
        let start = self.buf.len();
        let got = read_into(&f.path, offset, len, &mut self.buf)?;
        self.progress.fetch_add(got, Ordering::Relaxed);
        self.batons[&idx].hash_piece(offset, &self.buf[start..], got < len)
    }
}

/// Append `len` bytes of the file at `path` from `offset` to `buf`, zero-filled past its
/// end (a live file may shrink under us; the pass marks it for reading again). Returns how
/// many bytes came from the file.
fn read_into(path: &Path, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<u64, SnapshotError> {
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
fn pad_block(buf: &mut Vec<u8>) {
    let rem = buf.len() % 512;
    if rem != 0 {
        buf.resize(buf.len() + 512 - rem, 0);
    }
}

/// The tar header block(s) of `f` (with a GNU long-name record first when needed).
fn append_header(buf: &mut Vec<u8>, f: &Found) -> Result<(), SnapshotError> {
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

/// Every entry below `root` in tree order (sorted names, a directory before its contents);
/// the snapshot machinery's own top-level names are left out. Entries that vanish while
/// the walk runs (a live store) are skipped; the next pass sees what is there then.
fn walk_tree(root: &Path) -> Result<Vec<Found>, SnapshotError> {
    let mut out = Vec::new();
    walk_dir(root, "", &mut out)?;
    Ok(out)
}

fn walk_dir(dir: &Path, rel: &str, out: &mut Vec<Found>) -> Result<(), SnapshotError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !rel.is_empty() => return Ok(()),
        Err(e) => return Err(SnapshotError::io(dir, e)),
    };
    let mut names: Vec<_> = rd
        .map(|r| r.map(|d| d.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| SnapshotError::io(dir, e))?;
    names.sort();
    for name in names {
        if rel.is_empty() && is_reserved(&name) {
            continue;
        }
        let path = dir.join(&name);
        let name = name.to_str().ok_or_else(|| {
            SnapshotError::Other(format!("{}: file name is not UTF-8", path.display()))
        })?;
        let rel = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(SnapshotError::io(&path, e)),
        };
        let ft = meta.file_type();
        let link = if ft.is_symlink() {
            Some(link_target(&path, &rel)?)
        } else if ft.is_dir() || ft.is_file() {
            None
        } else {
            // Sockets, FIFOs and device nodes are runtime objects, not data.
            tracing::warn!(path = %path.display(), "snapshot: skipping special file");
            continue;
        };
        let is_dir = ft.is_dir();
        out.push(Found {
            rel: rel.clone(),
            path: path.clone(),
            meta,
            link,
        });
        if is_dir {
            walk_dir(&path, &rel, out)?;
        }
    }
    Ok(())
}

/// A symlink's target, refused when restore would refuse it.
fn link_target(path: &Path, rel: &str) -> Result<String, SnapshotError> {
    let target = fs::read_link(path).map_err(|e| SnapshotError::io(path, e))?;
    let target = target.to_str().ok_or_else(|| {
        SnapshotError::Other(format!("{}: link target is not UTF-8", path.display()))
    })?;
    manifest::check_link_target(rel, target).map_err(|m| {
        SnapshotError::Other(format!("cannot snapshot {m}: make the link relative"))
    })?;
    Ok(target.to_string())
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

    /// Everything below `root` as (path, mode, content or link target), for comparisons.
    fn tree(root: &Path) -> Vec<(String, u32, Vec<u8>)> {
        walk_tree(root)
            .unwrap()
            .into_iter()
            .map(|f| {
                let data = match &f.link {
                    Some(t) => t.clone().into_bytes(),
                    None if f.meta.is_file() => fs::read(&f.path).unwrap(),
                    None => Vec::new(),
                };
                (f.rel, f.meta.mode() & 0o7777, data)
            })
            .collect()
    }

    fn extract(out: &Path, to: &Path, sha: &str) {
        verify::extract_verified(out, to, &Limits::default(), Some(sha), &AtomicU64::new(0))
            .unwrap();
    }

    /// A second pass re-reads exactly what changed (and the chunk-mates of what changed),
    /// the stale chunks become skippable frames, and the archive is the tree at the
    /// second pass: changed, deleted, new and re-moded entries, and a large file in pieces.
    #[test]
    fn a_later_pass_replaces_what_changed_since_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        make_store(&store);
        let big: Vec<u8> = (0..(2 * CHUNK_BYTES + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        fs::write(store.join("big"), &big).unwrap();
        fs::create_dir(store.join("gone")).unwrap();
        fs::write(store.join("gone/x"), b"x").unwrap();
        let out = tmp.path().join("a.tar.zst");
        let comp = Compression::default();
        let mut w = ArchiveWriter::create(&store, &out, &comp, false).unwrap();
        w.racy_margin = Duration::ZERO; // nothing here changes within a timestamp tick
        let first = w.pass(&AtomicU64::new(0)).unwrap();
        assert_eq!(first.entries, tree(&store).len());
        assert_eq!(
            w.pass(&AtomicU64::new(0)).unwrap().entries,
            0,
            "nothing changed"
        );

        // Only the large file changes: only it is read again.
        let mut big2 = big.clone();
        big2[CHUNK_BYTES as usize + 7] ^= 0xff;
        fs::write(store.join("big"), &big2).unwrap();
        let p = w.pass(&AtomicU64::new(0)).unwrap();
        assert_eq!((p.entries, p.bytes), (1, big.len() as u64));

        // Small changes: the large file is not read again.
        fs::write(store.join("a/f1"), b"changed").unwrap();
        fs::remove_dir_all(store.join("gone")).unwrap();
        fs::write(store.join("a/b/new"), b"new file").unwrap();
        fs::set_permissions(store.join("a/b/c"), fs::Permissions::from_mode(0o700)).unwrap();
        let p = w.pass(&AtomicU64::new(0)).unwrap();
        assert!(p.entries >= 3 && p.bytes < big.len() as u64, "{p:?}");
        assert!(w.first_patched.is_some());
        let written = w.finish("t").unwrap();
        // The first copy of the large file was most of the file: it was compacted away.
        assert!(!frame_magics(&out).iter().any(|m| is_skippable(*m)));
        assert_eq!(fs::metadata(&out).unwrap().len(), written.size);
        assert_eq!(written.entries, tree(&store).len());

        let back = tmp.path().join("back");
        extract(&out, &back, &written.sha256);
        assert_eq!(tree(&back), tree(&store));
        let whole = hex::encode(Sha256::digest(fs::read(&out).unwrap()));
        assert_eq!(whole, written.sha256);
    }

    /// The magic number of every zstd frame in `path`, in order.
    fn frame_magics(path: &Path) -> Vec<u32> {
        let data = fs::read(path).unwrap();
        let mut out = Vec::new();
        let mut off = 0;
        while off < data.len() {
            out.push(u32::from_le_bytes(data[off..off + 4].try_into().unwrap()));
            off += zstd::zstd_safe::find_frame_compressed_size(&data[off..]).unwrap();
        }
        out
    }

    fn is_skippable(magic: u32) -> bool {
        magic & 0xFFFF_FFF0 == 0x184D_2A50
    }

    /// A small change in a large archive is left as a skippable frame (not worth a
    /// rewrite), which the verifier steps over; the checksum covers the patched file.
    #[test]
    fn a_small_change_leaves_a_skipped_frame_that_readers_step_over() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        make_store(&store);
        // Incompressible, so that the small chunk is a small part of the archive.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..CHUNK_BYTES + 4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        fs::write(store.join("noise"), &noise).unwrap();
        let out = tmp.path().join("a.tar.zst");
        let mut w = ArchiveWriter::create(&store, &out, &Compression::default(), false).unwrap();
        w.racy_margin = Duration::ZERO;
        w.pass(&AtomicU64::new(0)).unwrap();
        fs::write(store.join("a/b/f2"), b"changed").unwrap();
        let p = w.pass(&AtomicU64::new(0)).unwrap();
        assert!(p.bytes < 1 << 20, "{p:?}");
        let written = w.finish("t").unwrap();
        assert_eq!(
            frame_magics(&out)
                .iter()
                .filter(|m| is_skippable(**m))
                .count(),
            1
        );
        let back = tmp.path().join("back");
        extract(&out, &back, &written.sha256);
        assert_eq!(tree(&back), tree(&store));
        let whole = hex::encode(Sha256::digest(fs::read(&out).unwrap()));
        assert_eq!(whole, written.sha256);
    }

    /// Entries changed within the racy margin before a walk are read again by the next
    /// pass even when their stamp looks the same.
    #[test]
    fn recently_changed_entries_are_read_again() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        make_store(&store);
        let out = tmp.path().join("a.tar.zst");
        let mut w = ArchiveWriter::create(&store, &out, &Compression::default(), false).unwrap();
        w.racy_margin = Duration::from_secs(3600);
        let n = w.pass(&AtomicU64::new(0)).unwrap().entries;
        assert_eq!(w.pass(&AtomicU64::new(0)).unwrap().entries, n);
        let written = w.finish("t").unwrap();
        assert!(!frame_magics(&out).iter().any(|m| is_skippable(*m)));
        let back = tmp.path().join("back");
        extract(&out, &back, &written.sha256);
        assert_eq!(tree(&back), tree(&store));
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

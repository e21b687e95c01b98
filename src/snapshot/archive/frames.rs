//! The chunks of an archive: how members are grouped into chunks, the workers that build
//! and compress them as independent zstd frames, the ordered hash of a large file read in
//! pieces, and the skippable frames that replace stale chunks.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use sha2::{Digest, Sha256};

use super::entries::{append_header, pad_block, read_into};
use super::walk::Found;
use super::CHUNK_BYTES;
use crate::snapshot::SnapshotError;

/// A part of a chunk's plan: a whole member, or a slice of a large file's member.
#[derive(Clone, Copy)]
pub(super) enum Item {
    Whole(usize),
    Piece {
        idx: usize,
        offset: u64,
        len: u64,
        last: bool,
    },
}

/// A compressed chunk from a worker, and the checksum of every file it completed.
pub(super) struct Done {
    pub(super) frame: Vec<u8>,
    pub(super) files: Vec<(usize, String, bool)>,
}

impl Item {
    pub(super) fn idx(&self) -> usize {
        match *self {
            Item::Whole(i) | Item::Piece { idx: i, .. } => i,
        }
    }
}

/// Group members into chunks of about [`CHUNK_BYTES`]: small members together, a large
/// file alone in chunks of its own (so that a change elsewhere never re-reads it).
pub(super) fn plan_chunks(todo: &[Found]) -> Vec<Vec<Item>> {
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
pub(super) fn skippable_header(len: u64) -> io::Result<[u8; 8]> {
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
pub(super) fn frame_compressor(level: i32) -> io::Result<zstd::bulk::Compressor<'static>> {
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true))?;
    Ok(c)
}

/// The sha256 of a large file, whose pieces are read by several workers: each piece is
/// hashed in order, so a worker waits here for the one before its piece.
#[derive(Default)]
pub(super) struct Baton {
    state: Mutex<BatonState>,
    turn: Condvar,
}

#[derive(Default)]
pub(super) struct BatonState {
    next_offset: u64,
    hasher: Sha256,
    short: bool,
    abandoned: bool,
}

impl Baton {
    /// Hash `data`, the piece at `offset`, after every piece before it.
    pub(super) fn hash_piece(
        &self,
        offset: u64,
        data: &[u8],
        short: bool,
    ) -> Result<(), SnapshotError> {
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
    pub(super) fn finish(&self) -> (String, bool) {
        let st = std::mem::take(&mut *self.state.lock().unwrap());
        (hex::encode(st.hasher.finalize()), st.short)
    }

    pub(super) fn abandon(&self) {
        self.state.lock().unwrap().abandoned = true;
        self.turn.notify_all();
    }
}

/// One compression thread: builds a chunk's tar bytes and compresses them.
pub(super) struct ChunkWorker<'a> {
    compressor: zstd::bulk::Compressor<'static>,
    todo: &'a [Found],
    batons: &'a HashMap<usize, Baton>,
    progress: &'a AtomicU64,
    buf: Vec<u8>,
}

impl<'a> ChunkWorker<'a> {
    pub(super) fn new(
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

    pub(super) fn build(&mut self, plan: &[Item]) -> Result<Done, SnapshotError> {
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
        if !f.has_data() {
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

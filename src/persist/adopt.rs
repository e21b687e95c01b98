//! The persist step's decisions: find the store, read or create its state (adopting a
//! legacy store when there is no state file), then per directory seed, adopt, keep or add
//! what a new image brought, and finally link every directory into the store.

use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::copy::{self, CopyOptions, CopyOutcome};
use super::state::{self, Origin, State, Store};
use super::{
    fault, image, link, DirConfig, DirOutcome, DirReport, LinkOutcome, OnNewImage, PersistError,
    PersistReport,
};
use crate::config::Context;
use crate::fsutil;

/// One configured directory, as seen in the container and on the host.
struct Dir<'a> {
    cfg: &'a DirConfig,
    /// The path inside the container, e.g. `/var/lib`.
    container: PathBuf,
    /// The image directory on the host (re-rooted).
    host: PathBuf,
}

pub fn run(ctx: &Context) -> Result<PersistReport, PersistError> {
    let cfg = &ctx.config.persist;
    let dirs: Vec<Dir> = cfg
        .directories
        .iter()
        .map(|d| Dir {
            cfg: d,
            container: ctx.root.unroot(&d.path).unwrap_or_else(|| d.path.clone()),
            host: d.path.clone(),
        })
        .collect();
    let mut report = PersistReport {
        store: cfg.store.clone(),
        image_id: image::identify(&cfg.image_id, &ctx.root),
        ..PersistReport::default()
    };
    if !fs::metadata(&cfg.store).is_ok_and(|m| m.is_dir()) {
        if cfg.required {
            return Err(PersistError::StoreMissing {
                path: cfg.store.clone(),
            });
        }
        tracing::warn!(store = %cfg.store.display(), "no persistent storage available: continuing without persistence");
        report.directories = dirs
            .iter()
            .map(|d| dir_report(d, DirOutcome::NotPersisted))
            .collect();
        fault::finish();
        return Ok(report);
    }
    report.store_found = true;
    let store = Store::new(&cfg.store);
    let _lock = store.lock()?;
    let mut state = open_state(&store, &mut report)?;
    report.staging_cleaned = store.clean_staging()?;
    if report.staging_cleaned {
        tracing::info!(store = %cfg.store.display(), "removed the leftovers of an interrupted copy; copying again");
    }
    let opts = |label: &Path| CopyOptions {
        workers: cfg.workers,
        progress_interval: cfg.progress_interval,
        label: label.display().to_string(),
    };
    // Directories to seed: their index in the report, and where the image has them.
    let mut to_seed = Vec::new();
    for d in &dirs {
        let (r, seed_from) =
            settle_dir(&store, &mut state, d, &report.image_id, &opts(&d.container))?;
        if let Some(src) = seed_from {
            to_seed.push((report.directories.len(), d, src));
        }
        report.directories.push(r);
    }
    let staged: Vec<&Dir> = to_seed.iter().map(|(_, d, _)| *d).collect();
    if !to_seed.is_empty() {
        let label = staged
            .iter()
            .map(|d| d.container.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let sources: Vec<(&Dir, &Path)> = to_seed
            .iter()
            .map(|(_, d, src)| (*d, src.as_path()))
            .collect();
        let outs = stage(&store, &sources, &opts(Path::new(&label)))?;
        for ((i, _, _), out) in to_seed.iter().zip(outs) {
            let r = &mut report.directories[*i];
            r.outcome = DirOutcome::Seeded;
            fill(r, out);
        }
    }
    publish(&store, &mut state, &staged, &report.image_id)?;
    report.first_seed = state.first_seed_pending;
    store.remove_empty_staging()?;
    let store_shown = ctx
        .root
        .unroot(&store.root)
        .unwrap_or_else(|| store.root.clone());
    for (d, r) in dirs.iter().zip(report.directories.iter_mut()) {
        if r.outcome == DirOutcome::NotPersisted {
            continue;
        }
        let copy = store.copy_of(&d.container);
        let legacy_target = super::under(&store_shown, &d.container);
        let (outcome, notes) = link::link(cfg.link, &d.host, &copy, &legacy_target)?;
        r.link = outcome;
        r.notes.extend(notes);
    }
    tracing::info!(
        store = %cfg.store.display(),
        first_seed = report.first_seed,
        legacy_adopted = report.legacy_adopted,
        "persistent store ready"
    );
    fault::finish();
    Ok(report)
}

fn dir_report(d: &Dir, outcome: DirOutcome) -> DirReport {
    DirReport {
        path: d.container.clone(),
        outcome,
        files_copied: 0,
        bytes_copied: 0,
        link: LinkOutcome::None,
        notes: Vec::new(),
    }
}

/// The state file; created when missing: a fresh store (nothing but `lost+found`) is
/// marked for a first seed, anything else is a legacy store to adopt.
fn open_state(store: &Store, report: &mut PersistReport) -> Result<State, PersistError> {
    if let Some(state) = store.load()? {
        return Ok(state);
    }
    let state = if store.is_empty()? {
        tracing::info!(store = %store.root.display(), "empty store: seeding it from the image");
        State::new(false, true)
    } else {
        tracing::info!(store = %store.root.display(), "store without a state file: adopting what the legacy start-up left");
        report.legacy_adopted = true;
        State::new(true, false)
    };
    store.save(&state)?;
    Ok(state)
}

/// Bring one directory's copy in the store up to date and say how, or say where the image
/// has it when it is still to be seeded (copied into staging, then published).
fn settle_dir(
    store: &Store,
    state: &mut State,
    d: &Dir,
    image_id: &str,
    opts: &CopyOptions,
) -> Result<(DirReport, Option<PathBuf>), PersistError> {
    let copy_path = store.copy_of(&d.container);
    let present = copy_present(store, &copy_path)?;
    let recorded = state.directories.get(&d.container).cloned();
    let mut r = dir_report(d, DirOutcome::AlreadyPresent);
    match (recorded, present) {
        (Some(rec), true) => {
            if rec.image_id != image_id && image_id != image::UNKNOWN {
                match d.cfg.on_new_image {
                    OnNewImage::Keep => tracing::info!(
                        dir = %d.container.display(),
                        "store copy comes from another image; keeping it as it is (on_new_image: keep)"
                    ),
                    OnNewImage::AddMissing => {
                        let out = add_missing(store, d, &copy_path, opts)?;
                        r.outcome = DirOutcome::AddedMissing;
                        fill(&mut r, out);
                        state.record(&d.container, rec.origin, image_id);
                        store.save(state)?;
                    }
                }
            }
        }
        (Some(_), false) => {
            return Err(PersistError::Layout {
                path: copy_path,
                problem: "is recorded in the state file but missing from the store".into(),
                fix: format!(
                    "restore it from a backup, or delete its entry from {} to seed it again from the image",
                    store.state_path().display()
                ),
            })
        }
        (None, true) => {
            // Either the legacy script put it there, or an earlier boot renamed a complete
            // copy into place and died before recording it: complete either way.
            let origin = if state.legacy { Origin::Adopted } else { Origin::Seeded };
            if origin == Origin::Adopted {
                tracing::info!(dir = %d.container.display(), copy = %copy_path.display(), "adopted legacy store copy as seeded, unchanged");
                r.outcome = DirOutcome::Adopted;
            } else {
                r.outcome = DirOutcome::Seeded;
            }
            state.record(&d.container, origin, image_id);
            store.save(state)?;
        }
        (None, false) => {
            let Some(src) = image_source(&d.host)? else {
                tracing::warn!(dir = %d.container.display(), "the image has no such directory: not persisted");
                r.outcome = DirOutcome::NotPersisted;
                r.notes.push("missing in the image".into());
                return Ok((r, None));
            };
            return Ok((r, Some(src)));
        }
    }
    Ok((r, None))
}

fn fill(r: &mut DirReport, out: CopyOutcome) {
    r.files_copied = out.files;
    r.bytes_copied = out.bytes;
    r.notes.extend(out.notes);
}

/// Whether the store holds a copy of a directory; symlinks and files there are refused
/// (a symlink in the store is never followed).
fn copy_present(store: &Store, copy_path: &Path) -> Result<bool, PersistError> {
    // Every component between the store and the copy must be a real directory.
    let rel = copy_path.strip_prefix(&store.root).unwrap_or(copy_path);
    let mut at = store.root.clone();
    for c in rel.components() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                let kind = if m.file_type().is_symlink() {
                    "a symlink"
                } else {
                    "a file"
                };
                return Err(PersistError::Layout {
                    path: at,
                    problem: format!("is {kind} where the store needs a directory"),
                    fix:
                        "move it out of the store; cfy-init never follows symlinks inside the store"
                            .into(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(PersistError::io(&at, "cannot inspect the store", e)),
        }
    }
    Ok(true)
}

/// The image's copy of a directory: the directory itself when it is a real one, else its
/// `-initial` copy (moved aside by an earlier link step).
pub(crate) fn image_source(host: &Path) -> Result<Option<PathBuf>, PersistError> {
    for candidate in [host.to_path_buf(), link::initial_of(host)] {
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.is_dir() => return Ok(Some(candidate)),
            Ok(m) if m.file_type().is_symlink() => continue,
            Ok(_) => {
                return Err(PersistError::Layout {
                    path: candidate,
                    problem: "is a regular file where a directory should be".into(),
                    fix: "move it away so the image directory can be persisted".into(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(PersistError::io(
                    &candidate,
                    "cannot inspect image directory",
                    e,
                ))
            }
        }
    }
    Ok(None)
}

/// Copy the image directories into staging (not yet durable, not yet in place), all with
/// one pool of copy workers; one outcome per directory.
fn stage(
    store: &Store,
    sources: &[(&Dir, &Path)],
    opts: &CopyOptions,
) -> Result<Vec<CopyOutcome>, PersistError> {
    // Fail on an unreadable image before anything is written.
    for (_, src) in sources {
        fs::read_dir(src).map_err(|e| PersistError::io(src, "cannot read image directory", e))?;
    }
    state::ensure_real_dir(&store.staging_dir(), 0o700)?;
    let pairs: Vec<[(PathBuf, PathBuf); 1]> = sources
        .iter()
        .map(|(d, src)| {
            tracing::info!(dir = %d.container.display(), from = %src.display(), "seeding the store");
            [(src.to_path_buf(), store.staging_for(&d.container))]
        })
        .collect();
    let groups: Vec<&[(PathBuf, PathBuf)]> = pairs.iter().map(|p| p.as_slice()).collect();
    let started = Instant::now();
    let outs = copy::copy_groups(&groups, opts).map_err(|e| {
        // Best effort, so the store looks as it did; the next boot removes what is left.
        let _ = state::remove_any(&store.staging_dir());
        let _ = fsutil::fsync_dir(&store.meta_dir());
        PersistError::from(e)
    })?;
    let secs = started.elapsed().as_secs_f64();
    for ((d, _), out) in sources.iter().zip(&outs) {
        tracing::info!(
            dir = %d.container.display(),
            files = out.files,
            bytes = out.bytes,
            "copied"
        );
    }
    tracing::info!(
        dirs = outs.len(),
        secs = (secs * 100.0).round() / 100.0,
        "copies staged"
    );
    Ok(outs)
}

/// Make every staged copy durable with one `syncfs` (one flush for all directories,
/// instead of one per file or per directory), rename each into its final place with
/// RENAME_NOREPLACE, and record them all in the state file.
fn publish(
    store: &Store,
    state: &mut State,
    staged: &[&Dir],
    image_id: &str,
) -> Result<(), PersistError> {
    if staged.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    fault::point("before syncfs");
    copy::sync_filesystem(&store.root)
        .map_err(|e| PersistError::io(&store.root, "cannot sync the store", e))?;
    for d in staged {
        let copy_path = store.copy_of(&d.container);
        let parent = fsutil::parent_of(&copy_path);
        state::ensure_real_dir(parent, 0o755)?;
        fault::point("before rename");
        let moved = copy::rename_noreplace(&store.staging_for(&d.container), &copy_path)
            .map_err(|e| PersistError::io(&copy_path, "cannot move the copy into place", e))?;
        if !moved {
            return Err(PersistError::Layout {
                path: copy_path,
                problem: "appeared while it was being seeded".into(),
                fix: "make sure nothing else writes into the store during the boot".into(),
            });
        }
        fsutil::fsync_dir(parent).map_err(|e| PersistError::io(parent, "cannot sync", e))?;
        fault::point("after rename");
        state.record(&d.container, Origin::Seeded, image_id);
    }
    store.save(state)?;
    tracing::info!(
        dirs = staged.len(),
        secs = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        "seeded copies synced and moved into place"
    );
    Ok(())
}

/// Copy into the store copy what the image has and the store lacks, never overwriting.
/// Each missing entry is copied to staging, synced, then renamed in with RENAME_NOREPLACE;
/// a crash leaves the image id unrecorded, so the next boot does it again.
fn add_missing(
    store: &Store,
    d: &Dir,
    copy_path: &Path,
    opts: &CopyOptions,
) -> Result<CopyOutcome, PersistError> {
    let Some(src) = image_source(&d.host)? else {
        return Ok(CopyOutcome::default());
    };
    let mut missing = Vec::new();
    find_missing(&src, copy_path, &mut missing)?;
    if missing.is_empty() {
        return Ok(CopyOutcome::default());
    }
    tracing::info!(dir = %d.container.display(), entries = missing.len(), "new image: adding what the store lacks");
    state::ensure_real_dir(&store.staging_dir(), 0o700)?;
    let staged: Vec<(PathBuf, PathBuf)> = missing
        .iter()
        .enumerate()
        .map(|(i, (s, _))| (s.clone(), store.staging_dir().join(format!("add-{i}"))))
        .collect();
    let out = copy::copy(&staged, opts).map_err(|e| {
        let _ = state::remove_any(&store.staging_dir());
        PersistError::from(e)
    })?;
    copy::sync_filesystem(&store.root)
        .map_err(|e| PersistError::io(&store.root, "cannot sync the store", e))?;
    for ((_, staged), (_, dst)) in staged.iter().zip(&missing) {
        fault::point("add-missing rename");
        if !copy::rename_noreplace(staged, dst)
            .map_err(|e| PersistError::io(dst, "cannot move the copy into place", e))?
        {
            state::remove_any(staged).map_err(|e| PersistError::io(staged, "cannot remove", e))?;
        }
        let parent = fsutil::parent_of(dst);
        fsutil::fsync_dir(parent).map_err(|e| PersistError::io(parent, "cannot sync", e))?;
    }
    Ok(out)
}

/// Entries of `src` absent from `dst`, recursing where both are real directories.
fn find_missing(
    src: &Path,
    dst: &Path,
    out: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<(), PersistError> {
    let entries =
        fs::read_dir(src).map_err(|e| PersistError::io(src, "cannot read image directory", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| PersistError::io(src, "cannot read image directory", e))?;
        let s = entry.path();
        let d = dst.join(entry.file_name());
        match fs::symlink_metadata(&d) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Sockets are never copied (their servers recreate them).
                if !entry.file_type().is_ok_and(|t| t.is_socket()) {
                    out.push((s, d));
                }
            }
            Err(e) => return Err(PersistError::io(&d, "cannot inspect the store", e)),
            Ok(m) => {
                let src_is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if m.is_dir() && src_is_dir {
                    find_missing(&s, &d, out)?;
                }
            }
        }
    }
    Ok(())
}

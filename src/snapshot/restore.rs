//! Swapping a verified staging tree into the store and back. The store may be a mount
//! point, which cannot be renamed, so the swap moves its *contents*: every top-level entry
//! goes into the rollback directory inside the store, then every entry of the staging tree
//! comes in. All moves are renames inside one file system. A journal file marks a swap in
//! progress; [`recover_interrupted`] (run at boot) puts the old store back if the init died
//! before the restored services were confirmed ready.

use std::fs;
use std::path::{Path, PathBuf};

use super::copy::remove_tree;
use super::{is_reserved, KeepRollback, SnapshotError, RESERVED_PREFIX};
use crate::fsutil;

pub fn rollback_dir(store: &Path) -> PathBuf {
    store.join(format!("{RESERVED_PREFIX}rollback"))
}

fn journal(store: &Path) -> PathBuf {
    store.join(format!("{RESERVED_PREFIX}journal"))
}

/// Move every (non-reserved) top-level entry of `from` into `to`.
fn move_contents(from: &Path, to: &Path, skip_reserved: bool) -> Result<(), SnapshotError> {
    for item in fs::read_dir(from).map_err(|e| SnapshotError::io(from, e))? {
        let item = item.map_err(|e| SnapshotError::io(from, e))?;
        if skip_reserved && is_reserved(&item.file_name()) {
            continue;
        }
        let dst = to.join(item.file_name());
        crate::persist::fault::point("snapshot-move");
        fs::rename(item.path(), &dst).map_err(|e| SnapshotError::io(&dst, e))?;
    }
    fsutil::fsync_dir(from).map_err(|e| SnapshotError::io(from, e))?;
    fsutil::fsync_dir(to).map_err(|e| SnapshotError::io(to, e))
}

/// Put the contents of `staging` (inside the store) in place of the store's contents,
/// which go to the rollback directory. On failure the old contents are put back.
pub fn swap_in(store: &Path, staging: &Path) -> Result<(), SnapshotError> {
    let rollback = rollback_dir(store);
    remove_tree(&rollback);
    fs::create_dir(&rollback).map_err(|e| SnapshotError::io(&rollback, e))?;
    let j = journal(store);
    // Phase "out": old entries are moving to the rollback dir, the store holds only old
    // ones. Phase "in": the store holds only new ones. Recovery depends on which.
    fsutil::write_atomic(&j, b"out\n", 0o600).map_err(|e| SnapshotError::io(&j, e))?;
    let result = move_contents(store, &rollback, true)
        .and_then(|()| {
            fsutil::write_atomic(&j, b"in\n", 0o600).map_err(|e| SnapshotError::io(&j, e))
        })
        .and_then(|()| move_contents(staging, store, false))
        .and_then(|()| fs::remove_dir(staging).map_err(|e| SnapshotError::io(staging, e)));
    if let Err(e) = result {
        tracing::error!(error = %e, "restore: swap failed, putting the old store back");
        swap_back(store)?;
        return Err(e);
    }
    Ok(())
}

/// Put the rollback copy back in place of the store's current contents (which are deleted).
/// Safe to run again when cut short: the journal's phase says what is done. "out": the
/// store holds only old entries, the rest are in the rollback directory. "in": the store
/// holds (part of) the restored tree, which is first moved aside, then the phase becomes
/// "back": what is left in the rollback directory goes back into the store.
pub fn swap_back(store: &Path) -> Result<(), SnapshotError> {
    let rollback = rollback_dir(store);
    let failed = failed_dir(store);
    let j = journal(store);
    let phase = fs::read_to_string(&j).map_err(|e| SnapshotError::io(&j, e))?;
    if phase.trim() == "in" {
        // The restored tree (or what of it came in) goes aside; a half-done earlier try
        // left only restored entries in `failed`, which go too.
        remove_tree(&failed);
        fs::create_dir(&failed).map_err(|e| SnapshotError::io(&failed, e))?;
        move_contents(store, &failed, true)?;
        fsutil::write_atomic(&j, b"back\n", 0o600).map_err(|e| SnapshotError::io(&j, e))?;
    }
    move_contents(&rollback, store, false)?;
    fs::remove_file(&j).map_err(|e| SnapshotError::io(&j, e))?;
    fsutil::fsync_dir(store).map_err(|e| SnapshotError::io(store, e))?;
    remove_tree(&failed);
    remove_tree(&rollback);
    tracing::warn!(store = %store.display(), "restore: previous store put back");
    Ok(())
}

fn failed_dir(store: &Path) -> PathBuf {
    store.join(format!("{RESERVED_PREFIX}failed"))
}

/// The restored store is good: drop the journal; drop the rollback copy if so configured.
pub fn commit(store: &Path, keep: KeepRollback) -> Result<(), SnapshotError> {
    let j = journal(store);
    fs::remove_file(&j).map_err(|e| SnapshotError::io(&j, e))?;
    fsutil::fsync_dir(store).map_err(|e| SnapshotError::io(store, e))?;
    if keep == KeepRollback::Never {
        remove_tree(&rollback_dir(store));
    }
    Ok(())
}

/// At boot: a journal left behind means the init died during a restore before it was
/// confirmed; put the old store back. Leftover staging directories are removed.
/// Returns true when a rollback happened.
pub fn recover_interrupted(store: &Path) -> Result<bool, SnapshotError> {
    if !store.is_dir() {
        return Ok(false);
    }
    for item in fs::read_dir(store).map_err(|e| SnapshotError::io(store, e))? {
        let item = item.map_err(|e| SnapshotError::io(store, e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        let stale = [
            format!("{RESERVED_PREFIX}copy-"),
            format!("{RESERVED_PREFIX}restore-"),
        ];
        if stale.iter().any(|p| name.starts_with(p)) {
            remove_tree(&item.path());
        }
    }
    if journal(store).exists() {
        swap_back(store).map_err(|e| {
            SnapshotError::Other(format!(
                "{}: a restore was cut short and putting the previous store back failed ({e}); \
                 the previous store's entries are in {}: move them back into the store by hand, \
                 delete {} and {}, then start again",
                store.display(),
                rollback_dir(store).display(),
                journal(store).display(),
                failed_dir(store).display()
            ))
        })?;
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A store with old entries `a`, `b` and a verified staging tree with `x`, `y`.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("store");
        let staging = store.join(format!("{RESERVED_PREFIX}restore-1"));
        fs::create_dir_all(&staging).unwrap();
        for n in ["a", "b"] {
            fs::write(store.join(n), n).unwrap();
        }
        for n in ["x", "y"] {
            fs::write(staging.join(n), n).unwrap();
        }
        (d, store, staging)
    }

    #[test]
    fn swap_in_then_back() {
        let (_d, store, staging) = setup();
        swap_in(&store, &staging).unwrap();
        assert_eq!(
            names(&store),
            [".cfy-snapshot-journal", ".cfy-snapshot-rollback", "x", "y"]
        );
        swap_back(&store).unwrap();
        assert_eq!(names(&store), ["a", "b"]);
    }

    #[test]
    fn commit_keeps_or_drops_the_rollback_copy() {
        let (_d, store, staging) = setup();
        swap_in(&store, &staging).unwrap();
        commit(&store, KeepRollback::UntilNextSnapshot).unwrap();
        assert_eq!(names(&store), [".cfy-snapshot-rollback", "x", "y"]);
        assert!(
            !recover_interrupted(&store).unwrap(),
            "nothing to recover after commit"
        );
        let (_d, store, staging) = setup();
        swap_in(&store, &staging).unwrap();
        commit(&store, KeepRollback::Never).unwrap();
        assert_eq!(names(&store), ["x", "y"]);
    }

    #[test]
    fn crash_while_moving_out_recovers_the_old_store() {
        let (_d, store, staging) = setup();
        let rb = rollback_dir(&store);
        fs::create_dir(&rb).unwrap();
        fsutil::write_atomic(&journal(&store), b"out\n", 0o600).unwrap();
        fs::rename(store.join("a"), rb.join("a")).unwrap(); // crash here
        assert!(recover_interrupted(&store).unwrap());
        assert_eq!(names(&store), ["a", "b"]);
        assert!(!staging.exists());
    }

    #[test]
    fn crash_while_moving_in_recovers_the_old_store() {
        let (_d, store, staging) = setup();
        let rb = rollback_dir(&store);
        fs::create_dir(&rb).unwrap();
        fsutil::write_atomic(&journal(&store), b"out\n", 0o600).unwrap();
        move_contents(&store, &rb, true).unwrap();
        fsutil::write_atomic(&journal(&store), b"in\n", 0o600).unwrap();
        fs::rename(staging.join("x"), store.join("x")).unwrap(); // crash here
        assert!(recover_interrupted(&store).unwrap());
        assert_eq!(names(&store), ["a", "b"]);
        assert_eq!(fs::read_to_string(store.join("a")).unwrap(), "a");
    }

    /// A rollback cut short half-way (the restored tree moved aside, part of the old store
    /// moved back) is completed by the next boot, and the old store comes back whole.
    #[test]
    fn rollback_cut_short_half_way_is_completed_at_boot() {
        let (_d, store, staging) = setup();
        swap_in(&store, &staging).unwrap();
        // What swap_back does, stopped after the first old entry came back.
        let failed = failed_dir(&store);
        fs::create_dir(&failed).unwrap();
        move_contents(&store, &failed, true).unwrap();
        fsutil::write_atomic(&journal(&store), b"back\n", 0o600).unwrap();
        fs::rename(rollback_dir(&store).join("a"), store.join("a")).unwrap(); // cut here
        assert!(recover_interrupted(&store).unwrap());
        assert_eq!(names(&store), ["a", "b"]);
        assert_eq!(fs::read_to_string(store.join("b")).unwrap(), "b");
        // A rollback cut short before the restored tree was all moved aside, too.
        let (_d, store, staging) = setup();
        swap_in(&store, &staging).unwrap();
        fs::create_dir(failed_dir(&store)).unwrap();
        fs::rename(store.join("x"), failed_dir(&store).join("x")).unwrap(); // cut here
        assert!(recover_interrupted(&store).unwrap());
        assert_eq!(names(&store), ["a", "b"]);
    }

    /// A rollback that cannot be completed stops the boot with one line naming the
    /// directory that holds the old store and what to do.
    #[test]
    fn a_rollback_that_cannot_complete_names_the_fix() {
        let (_d, store, staging) = setup();
        swap_in(&store, &staging).unwrap();
        fsutil::write_atomic(&journal(&store), b"back\n", 0o600).unwrap();
        // Something in the store that is in the way of an old entry coming back.
        fs::create_dir(store.join("a")).unwrap();
        fs::write(store.join("a/in-the-way"), "x").unwrap();
        fs::remove_file(rollback_dir(&store).join("a")).unwrap();
        fs::create_dir(rollback_dir(&store).join("a")).unwrap();
        fs::write(rollback_dir(&store).join("a/old"), "x").unwrap();
        let err = recover_interrupted(&store).unwrap_err().to_string();
        assert!(!err.contains('\n'), "{err}");
        assert!(
            err.contains(".cfy-snapshot-rollback") && err.contains("by hand"),
            "{err}"
        );
    }
}

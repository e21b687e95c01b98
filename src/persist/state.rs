//! The store's layout and its state file (`<store>/.cfy-init/state.json`): which directories
//! were seeded or adopted, from which image, and whether the first-boot actions are due.
//! The state file is only ever replaced with `fsutil::write_atomic`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::PersistError;
use crate::fsutil;

/// cfy-init's own directory inside the store.
pub const META_DIR: &str = ".cfy-init";
const STATE_FILE: &str = "state.json";
const STAGING_DIR: &str = "staging";
const LOCK_FILE: &str = "lock";
/// What a freshly formatted ext4 volume holds; it does not make a store non-empty.
const LOST_FOUND: &str = "lost+found";
const STATE_VERSION: u32 = 1;

/// The state file's contents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    /// `cfy-init <version>` that created the file.
    pub created_by: String,
    /// RFC 3339 time of creation.
    pub created_at: String,
    /// The store was found filled by the legacy script and adopted.
    pub legacy: bool,
    /// The store was seeded from nothing and the first-boot actions are not confirmed yet.
    pub first_seed_pending: bool,
    /// Directories in the store, keyed by their path in the container.
    pub directories: BTreeMap<PathBuf, DirState>,
}

/// One directory recorded in the state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DirState {
    pub origin: Origin,
    /// Identity of the image the directory was last filled from.
    pub image_id: String,
    /// RFC 3339 time it was recorded or last updated.
    pub at: String,
}

/// How a directory entered the store.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    Seeded,
    Adopted,
}

impl State {
    pub fn new(legacy: bool, first_seed_pending: bool) -> State {
        State {
            version: STATE_VERSION,
            created_by: format!("cfy-init {}", env!("CARGO_PKG_VERSION")),
            created_at: now(),
            legacy,
            first_seed_pending,
            directories: BTreeMap::new(),
        }
    }

    pub fn record(&mut self, dir: &Path, origin: Origin, image_id: &str) {
        self.directories.insert(
            dir.to_path_buf(),
            DirState {
                origin,
                image_id: image_id.to_string(),
                at: now(),
            },
        );
    }
}

pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The store on the host (already re-rooted).
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

impl Store {
    pub fn new(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
        }
    }

    pub fn meta_dir(&self) -> PathBuf {
        self.root.join(META_DIR)
    }

    pub fn state_path(&self) -> PathBuf {
        self.meta_dir().join(STATE_FILE)
    }

    pub fn staging_dir(&self) -> PathBuf {
        self.meta_dir().join(STAGING_DIR)
    }

    /// Where the copy of container directory `dir` lives.
    pub fn copy_of(&self, dir: &Path) -> PathBuf {
        super::under(&self.root, dir)
    }

    /// The staging place for a copy of `dir`: one flat name per directory.
    pub fn staging_for(&self, dir: &Path) -> PathBuf {
        let flat = dir
            .to_string_lossy()
            .trim_start_matches('/')
            .replace('%', "%25")
            .replace('/', "%2F");
        self.staging_dir().join(flat)
    }

    /// True when the store holds nothing but `lost+found` (and cfy-init's own directory
    /// without a state file, left by a boot that died before writing it).
    pub fn is_empty(&self) -> Result<bool, PersistError> {
        let entries = fs::read_dir(&self.root)
            .map_err(|e| PersistError::io(&self.root, "cannot list the store", e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| PersistError::io(&self.root, "cannot list the store", e))?;
            let name = entry.file_name();
            if name != LOST_FOUND && name != META_DIR {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The state file, when there is one.
    pub fn load(&self) -> Result<Option<State>, PersistError> {
        let path = self.state_path();
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(PersistError::io(&path, "cannot read the state file", e)),
        };
        let state: State = serde_json::from_slice(&text).map_err(|e| PersistError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if state.version != STATE_VERSION {
            return Err(PersistError::State {
                path,
                reason: format!("version {} is not {STATE_VERSION}", state.version),
            });
        }
        Ok(Some(state))
    }

    /// Replace the state file atomically.
    pub fn save(&self, state: &State) -> Result<(), PersistError> {
        self.ensure_meta_dir()?;
        let path = self.state_path();
        let mut text = serde_json::to_vec_pretty(state).expect("state serializes");
        text.push(b'\n');
        super::fault::point("before state write");
        fsutil::write_atomic(&path, &text, 0o644)
            .map_err(|e| PersistError::io(&path, "cannot write the state file", e))?;
        super::fault::point("after state write");
        Ok(())
    }

    /// Create `.cfy-init` (a real directory, never a symlink) and make it durable.
    pub fn ensure_meta_dir(&self) -> Result<(), PersistError> {
        ensure_real_dir(&self.meta_dir(), 0o755)
    }

    /// Hold the store's lock for as long as the returned guard lives, so that two cfy-init
    /// processes sharing a volume (e.g. a ReadWriteMany claim) never copy at the same time.
    pub fn lock(&self) -> Result<nix::fcntl::Flock<fs::File>, PersistError> {
        use nix::fcntl::{Flock, FlockArg};
        self.ensure_meta_dir()?;
        let path = self.meta_dir().join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| PersistError::io(&path, "cannot open the store lock", e))?;
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(guard) => return Ok(guard),
            Err((file, _)) => file,
        };
        tracing::warn!(lock = %path.display(), "another cfy-init is working on this store; waiting for it");
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| PersistError::io(&path, "cannot lock the store", io::Error::from(e)))
    }

    /// Remove what an interrupted copy left in staging. Returns whether anything was there.
    pub fn clean_staging(&self) -> Result<bool, PersistError> {
        let staging = self.staging_dir();
        match fs::symlink_metadata(&staging) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(PersistError::io(&staging, "cannot inspect staging", e)),
            Ok(_) => {}
        }
        let had_entries = fs::read_dir(&staging)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true);
        remove_any(&staging)
            .map_err(|e| PersistError::io(&staging, "cannot remove staging leftovers", e))?;
        fsutil::fsync_dir(&self.meta_dir())
            .map_err(|e| PersistError::io(&self.meta_dir(), "cannot sync", e))?;
        Ok(had_entries)
    }
}

impl Store {
    /// Remove the (empty) staging directory a completed copy leaves, so that every boot
    /// ends in the same layout.
    pub fn remove_empty_staging(&self) -> Result<(), PersistError> {
        let staging = self.staging_dir();
        match fs::remove_dir(&staging) {
            Ok(()) => fsutil::fsync_dir(&self.meta_dir())
                .map_err(|e| PersistError::io(&self.meta_dir(), "cannot sync", e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(PersistError::io(
                &staging,
                "cannot remove the empty staging directory",
                e,
            )),
        }
    }
}

/// Remove a file, symlink or whole tree without following symlinks.
pub fn remove_any(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        // remove_dir_all does not follow symlinks inside the tree.
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// Make `path` exist as a real directory (creating missing parents with `mode`), refusing
/// symlinks and files on the way, and fsync every directory it created in its parent.
pub fn ensure_real_dir(path: &Path, mode: u32) -> Result<(), PersistError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(m) => {
            let kind = if m.file_type().is_symlink() {
                "a symlink"
            } else {
                "not a directory"
            };
            return Err(PersistError::Layout {
                path: path.to_path_buf(),
                problem: format!("is {kind} where a directory is expected"),
                fix: "move it away; cfy-init never follows symlinks inside the store".into(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(PersistError::io(path, "cannot inspect", e)),
    }
    let parent = fsutil::parent_of(path);
    ensure_real_dir(parent, mode)?;
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return ensure_real_dir(path, mode),
        Err(e) => return Err(PersistError::io(path, "cannot create directory", e)),
    }
    fsutil::fsync_dir(parent).map_err(|e| PersistError::io(parent, "cannot sync", e))
}

/// Record that the first-boot actions are done.
pub fn confirm_first_seed(store_root: &Path) -> Result<(), PersistError> {
    let store = Store::new(store_root);
    match store.load()? {
        Some(mut state) if state.first_seed_pending => {
            state.first_seed_pending = false;
            store.save(&state)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_are_flat_and_distinct() {
        let s = Store::new(Path::new("/s"));
        assert_eq!(
            s.staging_for(Path::new("/var/lib")),
            PathBuf::from("/s/.cfy-init/staging/var%2Flib")
        );
        assert_ne!(
            s.staging_for(Path::new("/a/b%2Fc")),
            s.staging_for(Path::new("/a/b/c"))
        );
    }

    #[test]
    fn lost_and_found_and_an_unfinished_meta_dir_count_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path());
        assert!(s.is_empty().unwrap());
        fs::create_dir(dir.path().join(LOST_FOUND)).unwrap();
        fs::create_dir(dir.path().join(META_DIR)).unwrap();
        assert!(s.is_empty().unwrap());
        fs::write(dir.path().join("x"), "").unwrap();
        assert!(!s.is_empty().unwrap());
    }

    #[test]
    fn state_round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path());
        assert_eq!(s.load().unwrap(), None);
        let mut st = State::new(false, true);
        st.record(Path::new("/var/lib"), Origin::Seeded, "sha256:x");
        s.save(&st).unwrap();
        assert_eq!(s.load().unwrap(), Some(st));
        confirm_first_seed(dir.path()).unwrap();
        assert!(!s.load().unwrap().unwrap().first_seed_pending);
        fs::write(s.state_path(), "{not json").unwrap();
        let err = s.load().unwrap_err().to_string();
        assert!(err.contains("state.json: corrupt state file"), "{err}");
    }
}

//! Following symlinks the way the container sees them while running under `--root`: an
//! absolute link target (`/var/run -> /run`, `/etc/cloudify -> /cfy-persist/etc/cloudify`)
//! means a path inside the root, not on the host.

use std::path::{Component, Path, PathBuf};

use crate::config::Root;

/// Symlinks followed before giving up (the kernel's limit).
const MAX_LINKS: usize = 40;

/// `host_path` (already re-rooted) with every symlink along it followed inside `root`.
/// Components that do not exist yet are kept as written, so the result names where a
/// missing file or directory would be created. Paths outside the root come back unchanged.
pub fn resolve_in_root(root: &Root, host_path: &Path) -> PathBuf {
    let Some(inner) = root.unroot(host_path) else {
        return host_path.to_path_buf();
    };
    root.path(&resolve_inner(root, &inner))
}

/// The container-side path `inner` with symlinks followed (see [`resolve_in_root`]).
fn resolve_inner(root: &Root, inner: &Path) -> PathBuf {
    let mut done = PathBuf::from("/");
    let mut todo: Vec<PathBuf> = components_rev(inner);
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part.as_os_str() == ".." {
            done.pop();
            continue;
        }
        let next = done.join(&part);
        let host = root.path(&next);
        let target = match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() && links < MAX_LINKS => {
                std::fs::read_link(&host).ok()
            }
            Ok(_) => None,
            Err(_) => {
                // Missing: the rest cannot contain links; keep it as written.
                done = next;
                while let Some(p) = todo.pop() {
                    if p.as_os_str() == ".." {
                        done.pop();
                    } else {
                        done.push(p);
                    }
                }
                return done;
            }
        };
        match target {
            Some(t) => {
                links += 1;
                let t = if t.is_absolute() {
                    // A link written with the host path of the root (by a tool run with
                    // --root) is taken as the path inside the root.
                    let t = root.unroot(&t).filter(|_| !root.is_real()).unwrap_or(t);
                    done = PathBuf::from("/");
                    t
                } else {
                    t
                };
                todo.extend(components_rev(&t));
            }
            None => done = next,
        }
    }
    done
}

/// The normal and `..` components of `p`, last first (a stack to pop from).
fn components_rev(p: &Path) -> Vec<PathBuf> {
    let mut parts: Vec<PathBuf> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(PathBuf::from(s)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    parts.reverse();
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_and_relative_links_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        std::fs::create_dir_all(dir.path().join("var")).unwrap();
        symlink("/run", dir.path().join("var/run")).unwrap();
        let got = resolve_in_root(&root, &root.path(Path::new("/var/run/secrets/x")));
        assert_eq!(got, dir.path().join("run/secrets/x"));

        std::fs::create_dir_all(dir.path().join("store/etc/c")).unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        symlink("../store/etc/c", dir.path().join("etc/c")).unwrap();
        let got = resolve_in_root(&root, &root.path(Path::new("/etc/c/config.yaml")));
        assert_eq!(got, dir.path().join("store/etc/c/config.yaml"));
    }

    #[test]
    fn link_written_with_the_host_root_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        std::fs::create_dir_all(dir.path().join("p/etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        symlink(dir.path().join("p/etc"), dir.path().join("etc/c")).unwrap();
        let got = resolve_in_root(&root, &root.path(Path::new("/etc/c/f")));
        assert_eq!(got, dir.path().join("p/etc/f"));
    }

    #[test]
    fn link_loop_ends() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        symlink("/b", dir.path().join("a")).unwrap();
        symlink("/a", dir.path().join("b")).unwrap();
        let got = resolve_in_root(&root, &root.path(Path::new("/a/x")));
        assert!(got.starts_with(dir.path()));
    }
}

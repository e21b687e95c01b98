//! A service's whole process tree, found again after `setsid` and double forks: every
//! process a service starts inherits `CFY_INIT_SERVICE=<name>:<token>` in its environment
//! (the token tells one start of the service from the next), and a scan of
//! `/proc/*/environ` finds them all. Scans run only on events (a stop, an exit, a
//! deadline), never on a timer, so an idle init stays without wake-ups.

use std::fs;

/// The environment variable every process of a service inherits.
pub const MARKER_VAR: &str = "CFY_INIT_SERVICE";

/// The marker value of one start of a service: `<name>:<init pid>.<generation>`.
pub fn marker(name: &str, gen: u64) -> String {
    format!("{name}:{}.{gen}", std::process::id())
}

/// Pids (in cfy-init's PID namespace) whose environment holds `CFY_INIT_SERVICE=<marker>`.
/// A process that changed its environment after exec still shows the one it started with,
/// which is what is wanted here.
pub fn members(marker: &str) -> Vec<i32> {
    let want = format!("{MARKER_VAR}={marker}\0");
    let me = std::process::id() as i32;
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me && *pid > 1)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.windows(want.len()).any(|w| w == want.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// How many processes each marker has, in one scan of `/proc` (for `status`).
pub fn counts(markers: &[String]) -> Vec<usize> {
    let wants: Vec<Vec<u8>> = markers
        .iter()
        .map(|m| format!("{MARKER_VAR}={m}\0").into_bytes())
        .collect();
    let mut out = vec![0; markers.len()];
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    let me = std::process::id() as i32;
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        if pid == me || pid <= 1 {
            continue;
        }
        let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        for (i, want) in wants.iter().enumerate() {
            if env.windows(want.len()).any(|w| w == want.as_slice()) {
                out[i] += 1;
                break;
            }
        }
    }
    out
}

/// Send `sig` to every process of `marker` but `except`; how many got it.
pub fn signal(marker: &str, sig: i32, except: Option<i32>) -> usize {
    let mut n = 0;
    for pid in members(marker) {
        if Some(pid) != except {
            crate::pid1::kill_pid(pid, sig);
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_child_is_found_and_an_unmarked_one_is_not() {
        let m = marker("tree-unit", 7);
        let mut marked = std::process::Command::new("sleep")
            .arg("30")
            .env(MARKER_VAR, &m)
            .spawn()
            .unwrap();
        let mut plain = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let found = members(&m);
        assert!(found.contains(&(marked.id() as i32)), "{found:?}");
        assert!(!found.contains(&(plain.id() as i32)), "{found:?}");
        for c in [&mut marked, &mut plain] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

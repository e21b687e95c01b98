//! `run -- CMD` on a real terminal: a command reading and writing the tty (dumb-init's
//! `tac` scenario, driven through `script`), and job control from an interactive bash in
//! tmux: Ctrl-Z stops the job and gives the prompt back, `fg` resumes it with the
//! terminal, Ctrl-C ends it (exit 130), as without an init, in the default mode and in
//! process-group mode.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cfy-init");
const PATIENCE: Duration = Duration::from_secs(30);

#[test]
fn a_command_reads_and_writes_the_terminal() {
    use std::io::Write;
    let root = tempfile::tempdir().unwrap();
    let run = format!("{BIN} --root {} run", root.path().display());
    for line in [
        format!("{run} -- tac"),
        format!("{run} --group -- tac"),
        format!("unshare --pid --fork --mount-proc {run} -- tac"),
        format!("unshare --pid --fork --mount-proc {run} --group -- tac"),
    ] {
        let mut child = Command::new("script")
            .args(["-qfec", &line, "/dev/null"])
            .env("CFY_INIT_LOG", "off")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Three lines, then end-of-file (Ctrl-D at the start of a line).
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"1\n2\n3\n\x04\x04")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        assert!(out.status.success(), "{line}: {text}");
        // The terminal echoes the input; tac's output follows it.
        assert!(text.ends_with("1\n2\n3\n3\n2\n1\n"), "{line}: {text:?}");
    }
}

struct Tmux {
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let t = Tmux { socket, _dir: dir };
        t.run(&[
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
            "env CFY_INIT_LOG=off PS1='$ ' bash --norc --noprofile -i",
        ]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux (scripts/install-deps.sh installs it)");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut a = vec!["send-keys"];
        a.extend(keys);
        self.run(&a);
    }

    fn poll(&self, what: &str, mut f: impl FnMut() -> Option<()>) {
        let start = Instant::now();
        while f().is_none() {
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for {what}; screen:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-S", "-200"])
    }

    /// Wait until the screen has `n` lines equal to `line`.
    fn wait_line(&self, line: &str, n: usize) {
        let what = format!("{n}× {line:?} on the terminal");
        self.poll(&what, || {
            let s = self.screen();
            (s.lines().filter(|l| l.trim_end() == line).count() >= n).then_some(())
        });
    }

    fn wait_contains(&self, text: &str, n: usize) {
        let what = format!("{n}× {text:?} on the terminal");
        self.poll(&what, || {
            (self.screen().matches(text).count() >= n).then_some(())
        });
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .status();
    }
}

#[test]
fn ctrl_z_fg_and_ctrl_c_work_as_without_an_init() {
    let root = tempfile::tempdir().unwrap();
    let t = Tmux::new();
    t.wait_line("$", 1);
    for (n, mode) in ["", "--group"].into_iter().enumerate() {
        let n = n + 1;
        let cmd = format!(
            "{BIN} --root {} run {mode} -- sh -c 'echo started; while read l; do echo \"got $l\"; done'",
            root.path().display()
        );
        t.keys(&[&cmd, "Enter"]);
        t.wait_line("started", n);
        // The command has the terminal: what is typed reaches it.
        t.keys(&["one", "Enter"]);
        t.wait_line("got one", n);
        // Ctrl-Z: the job stops and bash gets the terminal back.
        t.keys(&["C-z"]);
        t.wait_contains("Stopped", n);
        t.keys(&["echo prompt-$((40+2))", "Enter"]);
        t.wait_line("prompt-42", n);
        // fg: the command runs again, with the terminal.
        t.keys(&["fg", "Enter"]);
        t.poll("the job to run again", || {
            let all = job(root.path());
            (all.len() >= 2 && all.iter().all(|p| state(*p).is_some_and(|c| c != 'T')))
                .then_some(())
        });
        t.keys(&["two", "Enter"]);
        t.wait_line("got two", n);
        // Ctrl-C ends it; cfy-init exits with 128 + SIGINT.
        t.keys(&["C-c"]);
        // Ctrl-C flushes the terminal's input: type on once the job is gone.
        t.poll("the job to end", || {
            job(root.path()).is_empty().then_some(())
        });
        t.keys(&["echo rc=$?", "Enter"]);
        t.wait_line("rc=130", n);
    }
}

/// cfy-init (found by its unique `--root`) and its children.
fn job(root: &std::path::Path) -> Vec<i32> {
    let out = Command::new("pgrep")
        .args(["-f", &format!("{} run", root.display())])
        .output()
        .unwrap()
        .stdout;
    let mut all: Vec<i32> = String::from_utf8_lossy(&out)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let children: Vec<i32> = all
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    all.extend(children);
    all
}

/// The state letter of a pid (`T` stopped), None when gone.
fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

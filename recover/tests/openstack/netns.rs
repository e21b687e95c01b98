//! A network namespace of the test's own for one process (`unshare --net`): its only ways
//! out are the forwarders the test opens inside it (listeners bound in the namespace,
//! connecting out from the test's own). So the test decides, at any moment, whether that
//! process reaches Keystone, Nova, Neutron, Cinder or the manager: [`Netns::cut`] turns
//! every forwarder into a black hole (connections accepted and never answered, the live
//! ones shut), as a dropped route looks from inside; [`Netns::heal`] opens them again.
//! The catalog's endpoints (127.0.0.1:PORT) need no change: inside the namespace those
//! addresses are the forwarders.

use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Shared {
    cut: AtomicBool,
    stop: AtomicBool,
    /// Live forwarded connections (both sides), shut at a cut.
    live: Mutex<Vec<TcpStream>>,
    /// Connections accepted during a cut: held open, never answered.
    held: Mutex<Vec<TcpStream>>,
}

pub struct Netns {
    pub child: Child,
    ns: File,
    stdin: Option<ChildStdin>,
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn net_ns_inode(pid: &str) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

impl Netns {
    /// `cmd` (its program, arguments, environment and directory) in a new network namespace
    /// with only `lo`; it is held before `exec` until [`Netns::release`].
    pub fn spawn(cmd: &Command, stderr: Stdio) -> Netns {
        let mut c = Command::new("unshare");
        c.args(["--net", "--", "sh", "-c", "read _ && exec \"$@\"", "sh"])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            c.current_dir(d);
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("unshare --net");
        let stdin = child.stdin.take();
        let pid = child.id().to_string();
        let ours = net_ns_inode("self").unwrap();
        // unshare(2) happens just after the spawn: wait until the process is in its own.
        super::until("the new network namespace", Duration::from_secs(10), || {
            net_ns_inode(&pid).filter(|&i| i != ours).map(|_| ())
        });
        let ns = File::open(format!("/proc/{pid}/ns/net")).unwrap();
        let n = Netns {
            child,
            ns,
            stdin,
            shared: Arc::new(Shared {
                cut: AtomicBool::new(false),
                stop: AtomicBool::new(false),
                live: Mutex::new(Vec::new()),
                held: Mutex::new(Vec::new()),
            }),
            threads: Vec::new(),
        };
        n.ip(&["link", "set", "lo", "up"]);
        n
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) {
        let out = Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", self.child.id()))
            .arg("ip")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip {args:?} in the namespace: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Inside the namespace, `listen` leads to `target` outside (while not cut).
    pub fn forward(&mut self, listen: SocketAddr, target: SocketAddr) {
        if !listen.ip().is_loopback() {
            self.ip(&["addr", "add", &format!("{}/32", listen.ip()), "dev", "lo"]);
        }
        // A socket belongs to the namespace of the thread that creates it: this thread
        // enters the process's namespace, binds, and ends; accepting and connecting out
        // happen in a thread of the test's own namespace.
        let ns = self.ns.try_clone().unwrap();
        let listener = std::thread::spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            TcpListener::bind(listen)
                .unwrap_or_else(|e| panic!("bind {listen} in the namespace: {e}"))
        })
        .join()
        .unwrap();
        listener.set_nonblocking(true).unwrap();
        let shared = self.shared.clone();
        self.threads.push(std::thread::spawn(move || {
            while !shared.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        if shared.cut.load(Ordering::SeqCst) {
                            shared.held.lock().unwrap().push(s);
                            continue;
                        }
                        let shared = shared.clone();
                        std::thread::spawn(move || pipe(s, target, &shared));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
    }

    /// The held process runs now (`exec`).
    pub fn release(&mut self) {
        let mut stdin = self.stdin.take().expect("released once");
        stdin.write_all(b"go\n").unwrap();
    }

    /// Every route out is dropped: new connections hang, live ones are shut.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        for s in self.shared.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// The routes are back (held connections are closed: their callers time out or retry).
    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
        for s in self.shared.held.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn pipe(inside: TcpStream, target: SocketAddr, shared: &Shared) {
    let Ok(outside) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
        return; // dropping `inside`: the caller sees the refusal as a reset
    };
    if shared.cut.load(Ordering::SeqCst) {
        shared.held.lock().unwrap().push(inside);
        return;
    }
    {
        let mut live = shared.live.lock().unwrap();
        live.push(inside.try_clone().unwrap());
        live.push(outside.try_clone().unwrap());
    }
    let (mut a, mut b) = (inside.try_clone().unwrap(), outside.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b);
        let _ = b.shutdown(std::net::Shutdown::Write);
    });
    let (mut a, mut b) = (outside, inside);
    let _ = std::io::copy(&mut a, &mut b);
    let _ = b.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Only the process this world started, by its own pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.shared.stop.store(true, Ordering::SeqCst);
        self.heal();
        self.cut();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

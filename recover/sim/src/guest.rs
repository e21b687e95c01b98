//! The simulated VM's software: a small manager image (`/opt/manager`, persisted into the
//! volume) run by cfy-init with its hooks API on the VM's fixed IP and one supervised web
//! service serving `/opt/manager/resources`, so data written through one VM can be read
//! back through the next.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::{GuestEnv, GuestLauncher};

/// Where the guest's services listen and how it is authenticated.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// cfy-init (or a binary taking the same `--root R --config C`).
    pub program: PathBuf,
    /// Arguments after `--root R --config C` (`run` for cfy-init).
    pub args: Vec<String>,
    pub hooks_port: u16,
    pub web_port: u16,
    /// The hooks API bearer token written into each VM.
    pub token: String,
}

/// The cfy-init config of one VM.
pub fn config(spec: &GuestSpec, env: &GuestEnv) -> String {
    let resources = env.root.join("opt/manager/resources");
    format!(
        r#"persist:
  store: /cfy-persist
  required: true
  directories:
    - {{ path: /opt/manager, on_new_image: keep }}
  image_id:
    env: CFY_IMAGE_ID
    files: []
hooks:
  socket: /run/cfy-init/control.sock
  listen: "{ip}:{hooks}"
  token_file: /etc/cfy-init/token
snapshot:
  store: /cfy-persist
  archive_dir: /var/lib/cfy-snapshots
  quiesce:
    services: [web]
  ready_timeout: 30s
supervise:
  services:
    - name: web
      command: [/usr/bin/python3, -m, http.server, --bind, "{ip}", --directory, "{res}", "{web}"]
      required: true
      readiness:
        check: {{ type: tcp, address: "{ip}:{web}" }}
"#,
        ip = env.ip,
        hooks = spec.hooks_port,
        web = spec.web_port,
        res = resources.display(),
    )
}

/// Lay out the VM image and its config under `root`.
fn prepare(spec: &GuestSpec, env: &GuestEnv) -> std::io::Result<PathBuf> {
    let root = &env.root;
    std::fs::create_dir_all(root.join("opt/manager/resources"))?;
    std::fs::write(
        root.join("opt/manager/resources/image.txt"),
        "from the image\n",
    )?;
    std::fs::create_dir_all(root.join("etc/cfy-init"))?;
    std::fs::create_dir_all(root.join("var/lib/cfy-snapshots"))?;
    std::fs::write(root.join("etc/cfy-init/token"), format!("{}\n", spec.token))?;
    let cfg = root.join("etc/cfy-init/config.yaml");
    std::fs::write(&cfg, config(spec, env))?;
    Ok(cfg)
}

/// A launcher running `spec.program` in each VM, its output in `ROOT/guest.log`.
pub fn launcher(spec: GuestSpec) -> GuestLauncher {
    Arc::new(move |env: &GuestEnv| {
        let mut c = Command::new(&spec.program);
        let cfg = match prepare(&spec, env) {
            Ok(cfg) => cfg,
            Err(e) => {
                tracing::error!(root = %env.root.display(), error = %e, "cannot lay out the VM");
                return c;
            }
        };
        c.arg("--root")
            .arg(&env.root)
            .arg("--config")
            .arg(cfg)
            .args(&spec.args)
            .env("CFY_IMAGE_ID", "cfy-5.1.2-sim");
        if let Ok(log) = std::fs::File::create(env.root.join("guest.log")) {
            if let Ok(l2) = log.try_clone() {
                c.stdout(l2);
            }
            c.stderr(log);
        }
        c
    })
}

/// The cfy-init binary next to `exe` (same target directory), if built.
pub fn sibling_cfy_init(exe: &Path) -> Option<PathBuf> {
    let p = exe.parent()?.join("cfy-init");
    p.exists().then_some(p)
}

//! The entry point that runs the supervisor as the init: a current-thread tokio runtime
//! with the reaper, the signal listeners, the event loop, and any extra tasks the
//! integrator adds (hooks HTTP server, supervisord XML-RPC, periodic checks), which all
//! share one [`SupervisorHandle`].

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;

use super::engine::{self, Msg};
use super::spawn::Attach;
use super::{Origin, ReadinessCheck, RestartPolicy, ServiceKind, ServiceSpec, SupervisorHandle};
use crate::config::{Config, Context};
use crate::pid1::{self, SignalAction};

/// A task run next to the supervisor on its (single-threaded) runtime; need not be `Send`.
pub type Task = Pin<Box<dyn Future<Output = ()>>>;

type TaskFactory<'a> = Box<dyn FnOnce(SupervisorHandle) -> Task + 'a>;

/// Why the supervisor could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot create the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Builds and runs the supervisor:
///
/// ```no_run
/// # use cfy_init::supervise::{Runner, Origin};
/// # fn f(ctx: &cfy_init::config::Context) -> Result<(), cfy_init::supervise::RunError> {
/// let code = Runner::new(ctx)
///     .services(vec![/* supervisord programs */], Origin::Supervisord)
///     .task(|handle| Box::pin(async move { let _ = handle.status().await; }))
///     .run()?;
/// # Ok(()) }
/// ```
pub struct Runner<'a> {
    ctx: &'a Context,
    main: Vec<String>,
    extra: Vec<(Arc<ServiceSpec>, Origin)>,
    tasks: Vec<TaskFactory<'a>>,
}

impl<'a> Runner<'a> {
    /// Supervisor mode with `ctx.config.supervise.services`.
    pub fn new(ctx: &'a Context) -> Self {
        Runner {
            ctx,
            main: Vec::new(),
            extra: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// `run -- CMD ARGS...`: supervise only this command (plus `services` added
    /// explicitly) and exit with its status. An empty `argv` keeps supervisor mode.
    pub fn main(mut self, argv: Vec<String>) -> Self {
        self.main = argv;
        self
    }

    /// Extra service definitions (for example supervisord programs), added before start.
    pub fn services(mut self, specs: Vec<Arc<ServiceSpec>>, origin: Origin) -> Self {
        self.extra.extend(specs.into_iter().map(|s| (s, origin)));
        self
    }

    /// A task to run on the supervisor's runtime once it is up; it is dropped when the
    /// supervisor has shut down.
    pub fn task(mut self, make: impl FnOnce(SupervisorHandle) -> Task + 'a) -> Self {
        self.tasks.push(Box::new(make));
        self
    }

    /// Run until shutdown. Supervisor mode: exit 0 after a clean shutdown, 1 when a
    /// required service failed for good. Main mode: the command's exit code or 128+signal.
    pub fn run(self) -> Result<ExitCode, RunError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RunError::Runtime)?;
        let local = tokio::task::LocalSet::new();
        let code = local.block_on(&rt, self.run_async())?;
        // Extra tasks (servers) may still hold resources; do not wait for them.
        rt.shutdown_background();
        Ok(ExitCode::from(code.clamp(0, 255) as u8))
    }

    async fn run_async(self) -> Result<i32, RunError> {
        if let Err(e) = pid1::become_subreaper() {
            tracing::warn!("cannot become child subreaper: {e}");
        }
        let (sig_tx, sig_rx) = tokio::sync::mpsc::unbounded_channel();
        pid1::listen_all(sig_tx).map_err(RunError::Signals)?;

        let cfg = &self.ctx.config.supervise;
        let (shared, rx) = engine::new(cfg);
        {
            let mut st = shared.lock();
            if self.main.is_empty() {
                for spec in &cfg.services {
                    st.insert_unordered(spec.clone(), Origin::Native, Attach::Service);
                }
            } else {
                let spec = main_spec(self.main.clone(), cfg.shutdown_deadline);
                st.main = Some(spec.name.clone());
                st.insert(spec, Origin::Native, Attach::Foreground);
            }
            for (spec, origin) in self.extra {
                if st.services.contains_key(&spec.name) {
                    return Err(RunError::Invalid(format!(
                        "service {:?} is defined twice (in {} and {})",
                        spec.name,
                        st.services[&spec.name]
                            .spec
                            .source
                            .as_deref()
                            .unwrap_or("config"),
                        spec.source.as_deref().unwrap_or("config"),
                    )));
                }
                st.insert_unordered(spec, origin, Attach::Service);
            }
            st.reorder();
        }
        let handle = SupervisorHandle::new(shared.clone());
        tokio::task::spawn_local(dispatch_signals(
            sig_rx,
            handle.clone(),
            shared.tx.clone(),
            self.ctx.clone(),
            !self.main.is_empty(),
        ));
        for make in self.tasks {
            tokio::task::spawn_local(make(handle.clone()));
        }
        engine::run(shared.clone(), rx).await;
        // Every service has exited: let the pumps read what is left in the pipes (bounded,
        // since an orphaned grandchild may keep a pipe open).
        let pumps = std::mem::take(&mut shared.lock().pumps);
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            futures_util::future::join_all(pumps),
        )
        .await;
        // ...and the writer thread write them out before the last line and the exit.
        super::logs::flush(std::time::Duration::from_secs(2));
        let (code, ended_by) = {
            let st = shared.lock();
            (st.exit_code(), st.ended_by.clone())
        };
        let reaper = pid1::reaper();
        // The last line says what ended the run: a required service and why, else a clean
        // shutdown.
        match ended_by {
            Some((service, why)) => tracing::error!(
                code,
                reaped = reaper.reaped(),
                orphans = reaper.orphans(),
                dropped_log_lines = super::logs::dropped_lines(),
                "supervisor finished: required service {service} {why}"
            ),
            None => tracing::info!(
                code,
                reaped = reaper.reaped(),
                orphans = reaper.orphans(),
                dropped_log_lines = super::logs::dropped_lines(),
                "supervisor finished"
            ),
        }
        Ok(code)
    }
}

/// The one service of `run -- CMD`.
fn main_spec(argv: Vec<String>, deadline: std::time::Duration) -> ServiceSpec {
    let mut spec: ServiceSpec =
        serde_norway::from_str("name: main\ncommand: [main]\n").expect("static spec is valid");
    spec.command = argv;
    spec.startsecs = std::time::Duration::ZERO;
    spec.startretries = 0;
    spec.restart = RestartPolicy::Never;
    spec.required = true;
    spec.kind = ServiceKind::Longrun;
    spec.readiness.check = ReadinessCheck::Started;
    spec.stop_timeout = deadline;
    spec.source = Some("command line".into());
    spec
}

/// Turn signals into supervisor events.
async fn dispatch_signals(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<SignalAction>,
    handle: SupervisorHandle,
    tx: tokio::sync::mpsc::UnboundedSender<Msg>,
    ctx: Context,
    main_mode: bool,
) {
    while let Some(action) = rx.recv().await {
        match action {
            SignalAction::Shutdown(sig) => {
                let _ = tx.send(Msg::Shutdown(Some(sig)));
            }
            SignalAction::Reload if main_mode => {
                let _ = tx.send(Msg::Forward(libc::SIGHUP));
            }
            SignalAction::Reload => reload(&ctx, &handle).await,
            SignalAction::Forward(sig) => {
                let _ = tx.send(Msg::Forward(sig));
            }
        }
    }
}

/// SIGHUP: re-read the config file and apply the native services that changed.
async fn reload(ctx: &Context, handle: &SupervisorHandle) {
    tracing::info!("SIGHUP: reloading the configuration");
    match Config::load(ctx.config_path.as_deref(), &ctx.root) {
        Ok(config) => {
            let report = handle
                .apply(
                    config
                        .supervise
                        .services
                        .into_iter()
                        .map(Arc::new)
                        .collect(),
                    Origin::Native,
                )
                .await;
            tracing::info!(
                added = report.added.len(),
                changed = report.changed.len(),
                removed = report.removed.len(),
                "reload done"
            );
        }
        Err(e) => tracing::error!("reload failed, keeping the running configuration: {e}"),
    }
}

/// Supervise `ctx`'s services (or `main`) with extra tasks: the function form of [`Runner`].
pub fn run(
    ctx: &Context,
    main: Vec<String>,
    extra: impl FnOnce(SupervisorHandle) -> Vec<Task>,
) -> Result<ExitCode, RunError> {
    Runner::new(ctx)
        .main(main)
        .task(move |h| {
            let tasks = extra(h);
            Box::pin(async move {
                for t in tasks {
                    tokio::task::spawn_local(t);
                }
            })
        })
        .run()
}

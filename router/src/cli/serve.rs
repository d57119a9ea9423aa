//! `switchyard serve`: runs a node until SIGTERM or SIGINT (a second signal
//! exits at once).

use crate::auth::AdminTokenSource;
use crate::config::{Config, LogFormat};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags that override the config file and environment.
#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// A TOML config file.
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where data is kept (default ./switchyard-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The public HTTP address (default 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The public HTTPS address (off by default).
    #[arg(long)]
    pub listen_tls: Option<SocketAddr>,
    /// The admin API address (default 127.0.0.1:8081).
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Projects answer at <project>.<base-domain> (default localhost).
    #[arg(long)]
    pub base_domain: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

impl ServeArgs {
    /// The configuration: defaults, file, environment, then these flags.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::from_sources(self.config.as_deref(), std::env::vars())?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(addr) = self.listen {
            config.listen.public = addr;
        }
        if let Some(addr) = self.listen_tls {
            config.listen.public_tls = Some(addr);
        }
        if let Some(addr) = self.admin_listen {
            config.listen.admin = addr;
        }
        if let Some(domain) = &self.base_domain {
            config.base_domain = domain.clone();
        }
        if self.log_json {
            config.log.format = LogFormat::Json;
        }
        Ok(config.finish()?)
    }
}

/// Runs the server in the foreground.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    // Held to the end: dropping it writes out the lines still queued.
    let _log_writer = init_logging(&config);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("switchyard")
        .build()
        .context("cannot start the async runtime")?;
    let served = tokio.block_on(async {
        let running = crate::node::start(config).await?;
        announce(&running);
        wait_for_signal().await;
        eprintln!("shutting down: no new connections; in-flight requests may finish (signal again to exit now)");
        running.shutdown();
        tokio::spawn(async {
            wait_for_signal().await;
            eprintln!("exiting now");
            std::process::exit(130);
        });
        running.stopped().await;
        anyhow::Ok(())
    });
    // What is still running has outlived the grace period: a compile, a
    // database call on the blocking pool. Dropping the runtime would wait
    // for it; exit instead. SQLite's commits and the deploy's ordering
    // make that as safe as a crash.
    tokio.shutdown_timeout(ABANDON_AFTER);
    served
}

/// How long the runtime waits, once the grace period is over, for blocking
/// work before the process exits without it.
const ABANDON_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

fn announce(running: &crate::node::Running) {
    let node = &running.node;
    eprintln!("switchyard is serving");
    eprintln!(
        "  apps:   http://<project>.{}:{}/",
        node.config.base_domain,
        running.public_addr.port()
    );
    if let Some(tls) = running.tls_addr {
        eprintln!("  https:  {tls}");
    }
    eprintln!("  admin:  http://{}/  (API under /v1)", running.admin_addr);
    match &node.admin_token_source {
        AdminTokenSource::Config => eprintln!("  admin token: from the configuration"),
        AdminTokenSource::File(path) => eprintln!("  admin token: in {}", path.display()),
        AdminTokenSource::Generated(path) => {
            eprintln!(
                "  admin token: generated and stored in {} (mode 0600)",
                path.display()
            );
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Installs the log subscriber. Lines are formatted on the thread that
/// logs and written by a thread of their own, in batches (whatever queued
/// while the last write ran), so that a request never waits on a `write`
/// to stderr. Nothing is dropped: a full queue (64 Ki lines) makes loggers
/// wait, as a slow stderr did before.
fn init_logging(config: &Config) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.filter));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(64 * 1024)
        .thread_name("switchyard-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    // Colours only for a terminal: escape codes in a log file or a
    // collector are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}

//! The `portcullis` command line: run the gateway, check a configuration, print a secret, run the demo.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use portcullis::config::Config;

/// jemalloc: connection buffers, request futures and log lines come and go by the thousand, and
/// glibc's allocator spends its time on them at a thousand connections (with the access log on, a
/// third fewer requests per second at c1000; benches/README.md). Built with background threads, it
/// hands freed pages back to the system within about ten seconds (its dirty-page decay) even when
/// no request arrives to trigger it, so memory returns to the idle figure after a burst.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "An authenticating reverse proxy: OpenID Connect login in front of any web application"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        default_value = "gateway.toml",
        value_name = "PATH"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration, reach the provider's discovery document, exit 0 (valid) or 1.
    Check {
        /// Validate without contacting the provider.
        #[arg(long)]
        offline: bool,
    },
    /// Print a fresh random 32-byte session secret (base64url).
    Secret,
    /// Run a self-contained demo on loopback: an OpenID provider, a demo app and the gateway.
    Demo {
        /// The gateway's port.
        #[arg(long, default_value_t = 4180)]
        gateway_port: u16,
        /// The development provider's port.
        #[arg(long, default_value_t = 4181)]
        provider_port: u16,
        /// The demo application's port.
        #[arg(long, default_value_t = 4182)]
        app_port: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Secret) => match portcullis::config::generate_secret() {
            Ok(secret) => {
                println!("{secret}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Some(Command::Check { offline }) => match Config::load(&cli.config) {
            Ok(config) => {
                let rt = runtime();
                match rt.block_on(portcullis::check(&config, offline)) {
                    Ok(summary) => {
                        println!(
                            "{}: configuration is valid; {summary}",
                            cli.config.display()
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&e),
                }
            }
            Err(e) => fail(&e.to_string()),
        },
        Some(Command::Demo {
            gateway_port,
            provider_port,
            app_port,
        }) => match runtime().block_on(portcullis::demo::run(portcullis::demo::DemoPorts {
            gateway: gateway_port,
            provider: provider_port,
            app: app_port,
        })) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&format!("{e:#}")),
        },
        None => match Config::load(&cli.config) {
            Ok(config) => match runtime().block_on(run(config, cli.config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("{e:#}")),
            },
            Err(e) => fail(&e.to_string()),
        },
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("portcullis: {message}");
    ExitCode::FAILURE
}

/// One worker thread per CPU this process may run on (`available_parallelism` honours the affinity
/// mask and the cgroup CPU quota). On a single CPU a current-thread runtime does the same work without
/// cross-thread wake-ups. `TOKIO_WORKER_THREADS` set in the environment chooses a multi-thread runtime
/// of that size instead.
fn runtime() -> tokio::runtime::Runtime {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut builder = if cpus == 1 && std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

async fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    portcullis::telemetry::init(&config.log);
    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("server.listen: cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let metrics = portcullis::bind_metrics(&config).map_err(anyhow::Error::msg)?;
    let metrics_addr = metrics.as_ref().map(|m| m.local_addr()).transpose()?;
    // On stdout, for whoever started the process: the addresses actually bound (`listen` and
    // `metrics_listen` may name port 0).
    println!("listening on {addr}");
    if let Some(metrics_addr) = metrics_addr {
        println!("metrics listening on {metrics_addr}");
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %addr,
        metrics = %metrics_addr.map_or("on the main listener".to_string(), |a| a.to_string()),
        public_url = %config.server.public_url,
        upstream = %config.upstream.url,
        "portcullis started"
    );
    portcullis::run_reloadable(
        config,
        path,
        listener,
        metrics,
        portcullis::shutdown_signal(),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    tracing::info!("portcullis stopped");
    Ok(())
}

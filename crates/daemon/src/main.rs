//! The `youops` binary.

// jemalloc, not glibc's malloc: with glibc the core benchmark spent 45–49 µs of
// CPU per request, against 35–38 µs with jemalloc (docs/BENCHMARKS.md). The
// `jemalloc` feature is on by default.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::process::ExitCode;

use clap::Parser;
use youops::cli::{exit, Cli, Cmd};

/// Install the log subscriber. JSON lines when `YOUOPS_LOG_JSON` says so
/// (`1`/`true`; `0`/`false` turns them off) or, when it is unset, when the
/// config's `[server] log_json` does: the environment wins, as for every
/// setting that has both. Colours only when stderr is a terminal and
/// `NO_COLOR` is unset.
fn init_tracing(config_json: bool) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hyper=warn"));
    let json = match std::env::var("YOUOPS_LOG_JSON").ok().as_deref() {
        Some("1" | "true") => true,
        Some("0" | "false") => false,
        _ => config_json,
    };
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when the future is first polled: `run` polls it only after the
/// server is up, and a signal in between would kill the process undrained.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = int.recv() => tracing::info!("SIGINT"),
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

async fn serve(cli: &Cli, listen: Option<String>) -> ExitCode {
    // The checks of `youops config check`, every problem at once.
    let cfg =
        match youops::check::load_checked(&cli.config, &[], &youops::builtins::STANDARD_BUILTINS) {
            Ok(c) => c,
            Err(problems) => {
                eprint!(
                    "youops: bad config, not starting\n{}",
                    youops::check::report(&cli.config, &problems)
                );
                return ExitCode::from(exit::CONFIG);
            }
        };
    init_tracing(youops::server_config::ServerConfig::of_checked(&cfg).log_json);
    let frontends = match youops::frontends::build_parts(&cfg, &[]) {
        Ok(f) => f,
        Err(problems) => {
            eprint!(
                "youops: bad config, not starting\n{}",
                youops::check::report(&cli.config, &problems)
            );
            return ExitCode::from(exit::CONFIG);
        }
    };
    let mut opts = youops::RunOptions::default();
    opts.listen = listen;
    frontends.into_options(&mut opts);
    opts.config_path = Some(cli.config.clone());
    match youops::run(cfg, opts, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "youops stopped with an error");
            eprintln!("youops: {e:#}");
            let locked = e
                .chain()
                .any(|c| c.to_string().contains("locked by another process"));
            ExitCode::from(if locked {
                exit::UNAVAILABLE
            } else {
                exit::FAILED
            })
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Serve { listen } = &cli.cmd {
        let listen = listen.clone();
        return serve(&cli, listen).await;
    }
    // One-shot commands behave like Unix tools: `youops audit export | head` ends
    // quietly when the reader goes away, instead of panicking on a broken pipe.
    // (Never for `serve`: a daemon must see EPIPE on sockets as an error.)
    restore_sigpipe();
    if std::env::var_os("RUST_LOG").is_some() {
        init_tracing(false);
    }
    youops::cli::dispatch(cli).await
}

#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: installs the default disposition (no handler function) for SIGPIPE,
    // which Rust's runtime sets to "ignore"; sigaction is process-wide and safe to
    // call from any thread, and no code in this process relies on SIGPIPE being
    // ignored for pipes (Rust's sockets send with MSG_NOSIGNAL).
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
}

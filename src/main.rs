use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

use assent::cli::{run, Cli, Command};
use assent::config::Config;

/// mimalloc instead of glibc's malloc: measured in benches/scim.rs (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(filter: &str, json: bool) {
    let filter = EnvFilter::try_new(filter).expect("validated by Config");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The companion is a client: the server's variables do not concern it.
    let config = match (&cli.command, Config::from_env()) {
        (_, Ok(c)) => c,
        (Command::Companion(_), Err(_)) => {
            Config::from_lookup(&|_| None).expect("defaults are valid")
        }
        (_, Err(e)) => {
            eprintln!("assent: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log, config.log_json);
    // Exactly one rustls crypto provider for every TLS client in the process.
    assent::push::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("assent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! The `ftsd` binary: command line, logging, configuration, signals; everything else is in the
//! library (`ftsd::run`).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use ftsd::{
    config::{Config, ConfigError, Finding, Resolved, Severity, parse_listen},
    devpki::DevPki,
};
use tracing_subscriber::EnvFilter;

/// A file transfer service speaking the FTS3 REST API, with an embedded database.
#[derive(Parser)]
#[command(name = "ftsd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve(ServeArgs),
    /// Check a configuration without starting the service: address, roles, data directory,
    /// host certificate and key, CA and VOMS directories. Exit status 0 when the service can
    /// start with it (warnings allowed), 1 otherwise.
    CheckConfig(ServeArgs),
    /// Check a stopped service's database offline: redb's integrity check (repairing a database
    /// left by a crash first, as the service would), then every index and counter rebuilt from
    /// the rows and compared. Exit status 0 when all is well, 1 when something is damaged, 2
    /// when the check could not run (no database, or a running ftsd has it open).
    Check(CheckArgs),
    /// Create a throwaway PKI (CA, localhost host certificate, user certificate, RFC 3820 proxy).
    DevPki {
        /// Directory to create it in.
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Configuration file whose `data_dir` to check.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory to check (overrides the file).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML). Without one, the embedded defaults apply.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:8446 (overrides the file).
    #[arg(long, value_parser = parse_listen)]
    listen: Option<std::net::SocketAddr>,
    /// Data directory (overrides the file).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Host certificate, PEM (overrides the file).
    #[arg(long)]
    host_cert: Option<PathBuf>,
    /// Host private key, PEM (overrides the file).
    #[arg(long)]
    host_key: Option<PathBuf>,
    /// Trusted CA directory, /etc/grid-security/certificates layout (overrides the file).
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// VOMS trust directory, X509_VOMS_DIR layout (overrides the file).
    #[arg(long)]
    voms_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // check-config reports its findings itself: only the library's warnings are worth showing.
    let default_filter = match cli.command {
        Command::CheckConfig(_) | Command::Check(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FTSD_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::CheckConfig(args) => return check_config(&args),
        Command::Check(args) => return check_store(&args),
        Command::DevPki { dir } => DevPki::create(&dir)
            .map(|pki| {
                println!("dev PKI created in {}", pki.dir.display());
                println!("  CA:    {}", pki.ca_cert.display());
                println!(
                    "  host:  {} / {}",
                    pki.host_cert.display(),
                    pki.host_key.display()
                );
                println!(
                    "  user:  {} / {}",
                    pki.user_cert.display(),
                    pki.user_key.display()
                );
                println!("  proxy: {}", pki.proxy.display());
            })
            .map_err(ftsd::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ftsd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration file (or the embedded defaults) with the command line's overrides.
fn config_from(args: &ServeArgs) -> Result<Config, ConfigError> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = &args.data_dir {
        config.data_dir = v.clone();
    }
    if let Some(v) = &args.host_cert {
        config.host_cert = Some(v.clone());
    }
    if let Some(v) = &args.host_key {
        config.host_key = Some(v.clone());
    }
    if let Some(v) = &args.ca_dir {
        config.ca_dir = Some(v.clone());
    }
    if let Some(v) = &args.voms_dir {
        config.voms_dir = Some(v.clone());
    }
    Ok(config)
}

/// `ftsd check-config`: one line per finding on stdout, then a summary.
fn check_config(args: &ServeArgs) -> ExitCode {
    match &args.config {
        Some(path) => println!("checking {}", path.display()),
        None => println!("checking the embedded defaults (no --config)"),
    }
    let findings = match config_from(args) {
        Ok(config) => config.check(),
        Err(e) => vec![Finding::from_error(&e)],
    };
    for finding in &findings {
        println!("  {finding}");
    }
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    println!("{errors} error(s), {warnings} warning(s)");
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `ftsd check`: notes and problems on stdout, then a summary.
fn check_store(args: &CheckArgs) -> ExitCode {
    let data_dir = match (&args.data_dir, &args.config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(path)) => match Config::load(path) {
            Ok(config) => config.data_dir,
            Err(e) => {
                eprintln!("ftsd: {e}");
                return ExitCode::from(2);
            }
        },
        (None, None) => Config::default().data_dir,
    };
    match ftsd::store::check::check(&data_dir) {
        Ok(report) => {
            println!("checking {}", report.path.display());
            for note in &report.notes {
                println!("  ok       {note}");
            }
            for problem in &report.problems {
                println!("  PROBLEM  {problem}");
            }
            if report.problems.is_empty() {
                println!("no problem found");
                ExitCode::SUCCESS
            } else {
                println!("{} problem(s) found", report.problems.len());
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("ftsd check: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), ftsd::Error> {
    let config = config_from(&args)?;
    let resolved = config.resolve()?;
    let dev_pki = if config.uses_dev_pki() {
        let (pki, created) = DevPki::ensure(&config.dev_pki_dir())?;
        if created {
            tracing::info!(dir = %pki.dir.display(), "created a throwaway dev PKI");
        }
        Some(pki)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ftsd::Error::Task(e.to_string()))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(resolved.listen)
            .await
            .map_err(ftsd::server::ServerError::Io)?;
        if let Some(pki) = &dev_pki {
            print_dev_instructions(pki, &resolved, listener.local_addr().ok());
        }
        ftsd::run(resolved, listener, shutdown_signal()).await
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

fn print_dev_instructions(pki: &DevPki, config: &Resolved, addr: Option<std::net::SocketAddr>) {
    let port = addr.map(|a| a.port()).unwrap_or(config.listen.port());
    let abs = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (ca, proxy) = (abs(&pki.ca_cert), abs(&pki.proxy));
    println!();
    println!(
        "ftsd is running on a throwaway dev PKI ({}).",
        abs(&pki.dir).display()
    );
    println!("Call it with curl:");
    println!(
        "  curl --cacert {} --cert {} --key {} https://localhost:{port}/whoami",
        ca.display(),
        proxy.display(),
        proxy.display()
    );
    println!("or with the fts3 CLI (pip install fts3):");
    println!(
        "  fts-rest-whoami -s https://localhost:{port} --capath {} --cert {}",
        ca.display(),
        proxy.display()
    );
    println!();
}

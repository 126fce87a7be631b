//! The `ftsd` binary: command line, logging, configuration, signals; everything else is in the
//! library (`ftsd::run`).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use ftsd::{
    config::{Config, ConfigError, Finding, Severity, explain_bind_error, parse_listen},
    devpki::{DEV_HOST_DN, DEV_USER_DN, DevPki},
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
    // Colours only for a person at a terminal: the RPM's unit appends stderr to a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FTSD_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_ansi(ansi)
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
        Ok(config) => {
            let mut findings = config.check();
            if let Some(path) = &args.config {
                findings.extend(config.check_secrets_file(path));
            }
            findings
        }
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
    if let Some(finding) = args
        .config
        .as_deref()
        .and_then(|path| config.check_secrets_file(path))
    {
        tracing::warn!("{}", finding.message);
    }
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
            .map_err(|e| ftsd::Error::Listen(explain_bind_error(resolved.listen, &e)))?;
        let ready = |address: std::net::SocketAddr| {
            if let Some(pki) = &dev_pki {
                print_dev_instructions(pki, address.port());
            }
        };
        ftsd::run_with(resolved, listener, shutdown_signal(), ready).await
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

/// What a user needs to call a dev instance, printed once it is ready to answer: every
/// command here runs as printed (the README test runs them).
fn print_dev_instructions(pki: &DevPki, port: u16) {
    let abs = |p: &std::path::Path| {
        shell_word(
            &std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .display()
                .to_string(),
        )
    };
    let (dir, ca_dir, proxy) = (abs(&pki.dir), abs(&pki.ca_dir), abs(&pki.proxy));
    let (host_cert, host_key) = (abs(&pki.host_cert), abs(&pki.host_key));
    let url = format!("https://localhost:{port}");
    println!();
    println!("ftsd is running on {url} with a throwaway dev PKI ({dir}).");
    println!("Call it with curl:");
    println!("  curl --capath {ca_dir} --cert {proxy} --key {proxy} {url}/whoami");
    println!("or with the fts3 CLI (pip install fts3), pointed at the dev PKI once per shell:");
    println!("  export X509_CERT_DIR={ca_dir} X509_USER_PROXY={proxy}");
    println!("  fts-rest-whoami -s {url}");
    println!(
        "  fts-rest-transfer-submit -s {url} -b -i 1 'mock://a.example/f?size=1048576' \\\n      'mock://b.example/f?size_post=1048576&time=2'"
    );
    println!(
        "Dev roles: the dev user ({DEV_USER_DN}, proxy.pem) submits and manages its own \
         transfers;"
    );
    println!(
        "the host certificate ({DEV_HOST_DN}) is root. To let the dev user configure the \
         service (bans, /config):"
    );
    println!(
        "  curl --capath {ca_dir} --cert {host_cert} --key {host_key} -H 'Content-Type: \
         application/json' \\\n      -d '{{\"dn\": \"{DEV_USER_DN}\", \"operation\": \"config\"}}' \
         {url}/config/authorize"
    );
    println!();
}

/// `text` as one shell word: as it is when that is safe, in single quotes otherwise.
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

//! Service configuration: one TOML file, every field documented and defaulted, so that an empty
//! file (or none at all) gives a working development service.
//!
//! Paths left unset are resolved by [`Config::resolve`]: with no host certificate configured the
//! service makes and uses a throwaway dev PKI under the data directory; with one, the grid
//! defaults (`/etc/grid-security/...`) apply.
//!
//! [`Config::check`] is `ftsd check-config`: it looks at everything the service needs at start
//! (address, roles, data directory, host certificate and key, CA and VOMS directories) without
//! starting anything, and reports each finding in the operator's terms. Errors are what would
//! stop the service from starting or serving; warnings are what it survives.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::{Deserialize, Deserializer};
use x509_parser::prelude::FromDer;

use crate::model::identity::{RoleGrantError, RoleGrants};

mod limits;
mod messages;
pub use limits::{Limits, LimitsConfig, LimitsError};
pub use messages::MessagesConfig;

/// Errors in the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value is not what its option takes:
    /// `ftsd.toml: line 3: listen: invalid listen address ...`.
    #[error("{}: {}", where_in_file(.path, *.line), with_field(.field.as_deref(), .detail))]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        /// The option the error is about (`listen`, `roles.public`), when known.
        field: Option<String>,
        detail: String,
    },
    #[error("[roles] {0}")]
    Roles(#[from] RoleGrantError),
    #[error("[engine] optimizer_history: {0:?} is neither \"persistent\" nor \"memoryless\"")]
    OptimizerHistory(String),
    #[error("[engine] gfal2_options: {0}")]
    Gfal2Option(String),
    #[error("[engine] http_backend = \"gfal2\" needs gfal2 = \"auto\"")]
    HttpBackendWithoutGfal2,
    #[error(transparent)]
    Limits(#[from] LimitsError),
    #[error("[messages] {field}: {problem}")]
    Messages {
        field: &'static str,
        problem: String,
    },
    #[error(
        "[metrics] listen: {0} is not a loopback address; the plain-HTTP listener has no \
         authentication, so it only listens on 127.0.0.1 or [::1]"
    )]
    MetricsListen(SocketAddr),
    #[error("node_name must be a host name (letters, digits, '.', '-', '_'), got {0:?}")]
    NodeName(String),
    /// `[oidc]`: the field and what is wrong with it (never a secret's value).
    #[error("[oidc] {field}: {detail}")]
    Oidc { field: String, detail: String },
}

/// `ftsd.toml: line 3` (or just the path when the line is unknown).
fn where_in_file(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{}: line {line}", path.display()),
        None => path.display().to_string(),
    }
}

/// `listen: detail` (or just the detail when the option is unknown).
fn with_field(field: Option<&str>, detail: &str) -> String {
    match field {
        Some(field) => format!("{field}: {detail}"),
        None => detail.to_string(),
    }
}

/// Default listen address: the reference's port, loopback only until an operator opens it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8446";
pub const DEFAULT_DATA_DIR: &str = "./ftsd-data";
pub const GRID_CA_DIR: &str = "/etc/grid-security/certificates";
pub const GRID_VOMS_DIR: &str = "/etc/grid-security/vomsdir";

/// Longest `node_name`: a DNS name's limit, so every host name fits and a runaway value does not.
pub const MAX_NODE_NAME: usize = 253;

/// The configuration file, as written by an operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port to listen on (HTTPS). Default `127.0.0.1:8446`.
    #[serde(deserialize_with = "deserialize_listen")]
    pub listen: SocketAddr,
    /// Where the database and generated files live. Default `./ftsd-data`. Created 0700.
    pub data_dir: PathBuf,
    /// This node's name: its row in the host list (`/config`, heartbeats, drain), the
    /// `transfer_host` of its transfers and the `submit_host` of its submissions. Default: the
    /// machine's host name. Several nodes on one machine need distinct names.
    pub node_name: Option<String>,
    /// Host certificate (PEM, may include its chain). Unset: a dev PKI is generated in
    /// `<data_dir>/dev-pki` and used for everything below.
    pub host_cert: Option<PathBuf>,
    /// Host private key (PEM). Default: `host_cert` with `cert` replaced by `key` in the file name.
    pub host_key: Option<PathBuf>,
    /// Trusted CAs in the `/etc/grid-security/certificates` layout (`<hash>.0`, `<hash>.r0`).
    pub ca_dir: Option<PathBuf>,
    /// VOMS trust (`<vo>/<host>.lsc`), the `X509_VOMS_DIR` layout.
    pub voms_dir: Option<PathBuf>,
    /// Most connections held at once. When all are taken, a new connection closes an idle one
    /// of an address holding more connections than the newcomer's, or is refused.
    pub max_connections: usize,
    /// Deadlines of each connection phase and the sharing of connections and body memory
    /// (`[limits]`).
    pub limits: LimitsConfig,
    /// redb's quick repair: every commit also saves the allocator state (and commits in two
    /// phases), so that after a crash the database opens at once instead of after a walk of
    /// every page. Default true, settled by measurement (RELIABILITY.md, a store of a million
    /// files, 1.1 GB): a restart after `kill -9` takes 0.04 s instead of 1.05 s (the walk costs
    /// about 1 s per GB of database, read from disk after a reboot, and the port does not answer
    /// meanwhile), while a 1-file submission's commit takes 1.07 ms instead of 0.84 ms (21 % fewer
    /// of them per second from one client; concurrent submissions share commits). Being back at
    /// once after a crash is worth more than 0.2 ms per commit, small beside a request's TLS and
    /// HTTP work.
    pub quick_repair: bool,
    /// The transfer engine (`[engine]`).
    pub engine: EngineConfig,
    /// Monitoring messages to a STOMP broker (`[messages]`); off unless `brokers` is set.
    pub messages: MessagesConfig,
    /// Role grants, as the reference's `[roles]` section: `role = "level:operation;..."`.
    /// `public` applies to every authenticated user. Default `public = "vo:transfer;all:datamanagement"`.
    pub roles: BTreeMap<String, String>,
    /// OAuth2 / WLCG bearer tokens (`[oidc]` and `[[oidc.providers]]`): API authentication
    /// with `Authorization: Bearer`, per-file storage tokens, their exchange and refresh.
    /// Off until a provider is configured.
    pub oidc: OidcConfig,
    /// Prometheus `/metrics` (`[metrics]`).
    pub metrics: MetricsConfig,
    /// The monitoring JSON and pages (`[monitoring]`).
    pub monitoring: MonitoringConfig,
}

/// The `[oidc]` section (the reference's `[fts3] OAuth2`, `AuthorizedAudiences`,
/// `ValidateAccessTokenOffline`, `JWKCacheSeconds`, `NonManagedTokens` and its `[providers]`;
/// the token daemon's `TokenRefreshMarginPeriod` and `TokenExchangeCheckInterval`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// Audiences an API token may carry (its `aud`, or one entry of it, must be one of these).
    /// Rucio asks its tokens for the bare host name of the FTS endpoint (`fts.example.org`).
    /// Default: the WLCG "any" audience, `https://wlcg.cern.ch/jwt/v1/any`.
    pub authorized_audiences: Vec<String>,
    /// How long a provider's signing keys (JWKS) are kept before they are fetched again
    /// (86400). A token signed with a key not in the cache makes an earlier fetch.
    pub jwks_cache_seconds: u64,
    /// Validate API tokens with the provider's keys (true), or ask the provider's
    /// introspection endpoint for every request (false; RFC 7662, needs `offline_access`).
    pub validate_offline: bool,
    /// Only tokens with the `offline_access` scope are exchanged and refreshed; the others are
    /// used as given (the reference's `NonManagedTokens`). Clients can ask for the same per job
    /// with `params.unmanaged_tokens`.
    pub non_managed_tokens: bool,
    /// A transfer refreshes a managed token when it expires within this many seconds (300).
    pub token_refresh_margin: u64,
    /// Seconds between passes over the files waiting for a token exchange (30); a submission
    /// that needs one also starts a pass.
    pub exchange_interval: u64,
    /// Trusted token issuers, one `[[oidc.providers]]` table each.
    pub providers: Vec<OidcProvider>,
}

/// One `[[oidc.providers]]` table: a token issuer this service trusts and its client account
/// there (used for token exchange, refresh and introspection).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProvider {
    /// The issuer URL (`https://`), as in its tokens' `iss`; its discovery document is
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// This service's client at the provider.
    pub client_id: String,
    /// Its secret. The configuration file then holds a secret: keep it readable by the
    /// service only (`check-config` says so when it is not).
    pub client_secret: String,
    /// A scope every API token of this issuer must carry (the reference's `OauthScopeFts`,
    /// e.g. `fts`).
    #[serde(default)]
    pub required_scope: Option<String>,
    /// The VO of this issuer's users (else taken from `wlcg.groups`, else the issuer's host).
    #[serde(default)]
    pub vo: Option<String>,
}

impl fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcProvider")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("required_scope", &self.required_scope)
            .field("vo", &self.vo)
            .finish()
    }
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            authorized_audiences: vec![crate::model::token::WLCG_ANY_AUDIENCE.to_string()],
            jwks_cache_seconds: 86400,
            validate_offline: true,
            non_managed_tokens: false,
            token_refresh_margin: 300,
            exchange_interval: 30,
            providers: Vec::new(),
        }
    }
}

/// The `[metrics]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Export per-link series (`ftsd_link_files`, `ftsd_transfers_completed_total`, ...).
    /// Default true.
    pub per_link: bool,
    /// Per-link series for at most this many links, the busiest; the others are counted in
    /// `ftsd_metrics_links_dropped`. Default 1000.
    pub max_links: usize,
    /// A plain-HTTP listener serving only `/metrics`, without authentication, for a local
    /// Prometheus; loopback addresses only. Unset (default): none.
    #[serde(default, deserialize_with = "deserialize_optional_listen")]
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            per_link: true,
            max_links: crate::service::metrics::DEFAULT_MAX_LINKS,
            listen: None,
        }
    }
}

impl OidcConfig {
    /// Bearer tokens are accepted only once a provider is configured.
    pub fn enabled(&self) -> bool {
        !self.providers.is_empty()
    }

    /// What would make the providers unusable: a non-https issuer, an empty client, a
    /// duplicate, a required scope that is not one scope.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |i: usize, field: &str, detail: String| ConfigError::Oidc {
            field: format!("providers[{i}].{field}"),
            detail,
        };
        let mut seen: Vec<String> = Vec::new();
        for (i, p) in self.providers.iter().enumerate() {
            let lower = p.issuer.to_ascii_lowercase();
            let host = lower.strip_prefix("https://").unwrap_or("");
            if host.is_empty() || host.starts_with('/') {
                return Err(err(
                    i,
                    "issuer",
                    format!("{:?} is not an https:// URL", p.issuer),
                ));
            }
            let normalized = crate::model::token::safe_issuer(&p.issuer);
            if seen.contains(&normalized) {
                return Err(err(i, "issuer", format!("{:?} is listed twice", p.issuer)));
            }
            seen.push(normalized);
            if p.client_id.trim().is_empty() {
                return Err(err(i, "client_id", "must not be empty".into()));
            }
            if p.client_secret.is_empty() {
                return Err(err(i, "client_secret", "must not be empty".into()));
            }
            if let Some(scope) = &p.required_scope {
                if scope.is_empty() || scope.contains(char::is_whitespace) {
                    return Err(err(
                        i,
                        "required_scope",
                        format!("{scope:?} must be one scope"),
                    ));
                }
            }
        }
        if self.enabled() && self.authorized_audiences.is_empty() {
            return Err(ConfigError::Oidc {
                field: "authorized_audiences".into(),
                detail: "empty: no API token could be accepted".into(),
            });
        }
        Ok(())
    }
}

/// The `[monitoring]` section: ftsmon's opt-in settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// Serve `/ftsmon/config/audit` (it shows DNs and configuration values). Default false.
    pub show_config_audit: bool,
    /// Serve `/ftsmon/config/gfal2` (the gfal2 configuration may hold secrets). Default false.
    pub show_gfal2_config: bool,
}

fn deserialize_optional_listen<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_listen(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// The `[engine]` section: how many transfers run and where they may write.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Run transfers at all. `false` makes an API-only service (jobs stay queued).
    pub enabled: bool,
    /// Transfers running at once on this host (the reference's `MaxUrlCopyProcesses`, 400).
    pub max_active: usize,
    /// Transfers per link until the optimizer decides (the reference's 2).
    pub default_link_active: usize,
    /// Transfers in and out of one storage element when `/config/se` sets nothing (200).
    pub default_se_active: usize,
    /// Bring-online requests in flight at once.
    pub max_staging: usize,
    /// Files per bring-online request to one storage (`StagingBulkSize`, 200).
    pub staging_bulk_size: usize,
    /// Seconds a storage with fewer STAGING files than a bulk waits for more before its request
    /// goes (`StagingWaitingFactor`, 300; 0: at once).
    pub staging_wait: u64,
    /// Seconds from a bring-online request to its first poll (the reference's 300).
    pub staging_first_poll: u64,
    /// Seconds between later polls (`StagingPollInterval`, 600).
    pub staging_poll_interval: u64,
    /// Communication errors tolerated per file while polling (`StagingPollRetries`, 3).
    pub staging_poll_retries: u32,
    /// Files per archive poll to one storage (`ArchivePollBulkSize`, 200).
    pub archive_bulk_size: usize,
    /// Seconds from the first archive poll (at once) to the second (the reference's 300).
    pub archive_first_poll: u64,
    /// Seconds between later archive polls (`ArchivePollInterval`, 600).
    pub archive_poll_interval: u64,
    /// Communication errors tolerated per file (`ArchivePollRetries`, 3).
    pub archive_poll_retries: u32,
    /// Seconds between scheduling cycles (`SchedulingInterval`, 2); submissions and finished
    /// transfers also start a cycle.
    pub scheduling_interval: u64,
    /// Seconds between queue-timeout checks (`QueueTimeoutCheckInterval`, 300).
    pub queue_check_interval: u64,
    /// Seconds without progress after which a transfer is stopped (`CheckStalledTimeout`, 900).
    pub stall_timeout: u64,
    /// Per-transfer logs. Default `<data_dir>/transfer-logs`.
    pub log_dir: Option<PathBuf>,
    /// Directories `file://` transfers may read and write (none by default: `file://` URLs are
    /// refused at submission).
    pub file_roots: Vec<PathBuf>,
    /// Seconds a `mock://` copy takes when its destination URL has no `time=` (the gfal2 mock
    /// plugin's shipped configuration, 5).
    pub mock_transfer_time: u64,
    /// Simulated links for `mock://` copies whose destination has no `time=`: concurrent
    /// copies between the two hosts share the bandwidth (test labs, optimizer studies).
    pub mock_links: Vec<MockLink>,
    /// Run the optimizer (engine spec §3); without it links stay at `default_link_active` or
    /// at what an operator set.
    pub optimizer: bool,
    /// Seconds between optimizer runs (`OptimizerInterval`, 60).
    pub optimizer_interval: u64,
    /// Days the optimizer's decisions are kept in the evolution (7).
    pub optimizer_retention_days: u64,
    /// `persistent` (FTS 3.13's algorithm, history kept across restarts) or `memoryless`
    /// (3.14's effective behaviour).
    pub optimizer_history: String,
    /// gfal2 for the schemes no native backend serves (`root://`, `gsiftp://`, `srm://`,
    /// `s3://`, ...): `auto` uses it when found at start, `off` never.
    pub gfal2: Gfal2Mode,
    /// The `gfal-copy` program: a name looked up in `PATH`, or a path. `gfal-stat`, `gfal-sum`,
    /// `gfal-rm` and `gfal-mkdir` are taken from the same directory.
    pub gfal2_copy: PathBuf,
    /// gfal2 settings for every gfal2 run, `"GROUP:KEY=VALUE"` as `gfal-copy -D` takes them;
    /// they override `/etc/gfal2.d`. S3 keys per storage go here
    /// (`"S3:S3.EXAMPLE.ORG:SECRET_KEY=..."`): they reach gfal2 through a private
    /// configuration file, never a command line or a log.
    pub gfal2_options: Vec<String>,
    /// Which backend serves `http`, `https`, `dav` and `davs`: `native` (ftsd's own) or
    /// `gfal2`.
    pub http_backend: HttpBackendChoice,
}

/// `[engine] gfal2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gfal2Mode {
    #[default]
    Auto,
    Off,
}

/// `[engine] http_backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpBackendChoice {
    #[default]
    Native,
    Gfal2,
}

/// One `[engine] gfal2_options` entry: `GROUP:KEY=VALUE`, split as gfal2-util splits `-D`
/// (the group is everything before the last `:` ahead of the `=`, so `S3:HOST:KEY=V` is group
/// `S3:HOST`). Groups are upper-cased: gfal2 looks per-host groups up as `S3:<HOST>` in upper
/// case.
#[derive(Clone, PartialEq, Eq)]
pub struct Gfal2Option {
    pub group: String,
    pub key: String,
    pub value: String,
}

impl Gfal2Option {
    pub fn parse(text: &str) -> Result<Gfal2Option, String> {
        // The value may be a secret: errors quote only the part before `=`.
        let Some((name, value)) = text.split_once('=') else {
            return Err(format!(
                "{:?} has no value: write \"GROUP:KEY=VALUE\"",
                text.chars().take(40).collect::<String>()
            ));
        };
        let Some((group, key)) = name.rsplit_once(':') else {
            return Err(format!("{name:?} has no group: write \"GROUP:KEY=VALUE\""));
        };
        let (group, key) = (group.trim(), key.trim());
        let bad = |s: &str| s.is_empty() || s.contains(['[', ']', '\n', '\r', '#', ';']);
        if bad(group) || bad(key) || key.contains(':') {
            return Err(format!("{name:?} is not a GROUP:KEY name"));
        }
        if value.contains(['\n', '\r']) {
            return Err(format!("the value of {name} spans lines"));
        }
        Ok(Gfal2Option {
            group: group.to_ascii_uppercase(),
            key: key.to_string(),
            value: value.trim().to_string(),
        })
    }
}

impl fmt::Debug for Gfal2Option {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values hold S3 secrets.
        write!(f, "{}:{}=<redacted>", self.group, self.key)
    }
}

/// One simulated link between two mock hosts (`[[engine.mock_links]]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockLink {
    /// Host of the source URL (`mock://<host>/...`).
    pub source: String,
    /// Host of the destination URL.
    pub destination: String,
    /// Bytes per second the link carries in total.
    pub bandwidth: f64,
    /// Bytes per second one copy reaches at most.
    pub per_transfer: f64,
    /// Seconds before a copy moves its first byte.
    #[serde(default)]
    pub latency: f64,
    /// Failure probability of a copy at or below the concurrency limit.
    #[serde(default)]
    pub failure_rate: f64,
    /// Copies the link carries without extra failures.
    pub concurrency_limit: u32,
    /// Extra failure probability per copy above the limit (0.02).
    #[serde(default = "default_failure_step")]
    pub failure_step: f64,
}

fn default_failure_step() -> f64 {
    0.02
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            enabled: true,
            max_active: 400,
            default_link_active: 2,
            default_se_active: 200,
            max_staging: 1000,
            staging_bulk_size: 200,
            staging_wait: 300,
            staging_first_poll: 300,
            staging_poll_interval: 600,
            staging_poll_retries: 3,
            archive_bulk_size: 200,
            archive_first_poll: 300,
            archive_poll_interval: 600,
            archive_poll_retries: 3,
            scheduling_interval: 2,
            queue_check_interval: 300,
            stall_timeout: 900,
            log_dir: None,
            file_roots: Vec::new(),
            mock_transfer_time: 5,
            mock_links: Vec::new(),
            optimizer: true,
            optimizer_interval: 60,
            optimizer_retention_days: 7,
            optimizer_history: "persistent".into(),
            gfal2: Gfal2Mode::Auto,
            gfal2_copy: PathBuf::from("gfal-copy"),
            gfal2_options: Vec::new(),
            http_backend: HttpBackendChoice::Native,
        }
    }
}

/// Default connection limit: generous for a small site, small enough that a connection flood
/// cannot exhaust file descriptors (each connection holds one socket and a TLS state).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.parse().expect("constant address parses"),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            node_name: None,
            host_cert: None,
            host_key: None,
            ca_dir: None,
            voms_dir: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            limits: LimitsConfig::default(),
            quick_repair: true,
            engine: EngineConfig::default(),
            messages: MessagesConfig::default(),
            roles: BTreeMap::from([(
                "public".to_string(),
                "vo:transfer;all:datamanagement".to_string(),
            )]),
            oidc: OidcConfig::default(),
            metrics: MetricsConfig::default(),
            monitoring: MonitoringConfig::default(),
        }
    }
}

/// Paths and settings with every default applied.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `node_name` as configured; `None`: the machine's host name.
    pub node_name: Option<String>,
    pub host_cert: PathBuf,
    pub host_key: PathBuf,
    pub ca_dir: PathBuf,
    pub voms_dir: PathBuf,
    pub max_connections: usize,
    /// `[limits]` with `max_connections` applied.
    pub limits: Limits,
    pub quick_repair: bool,
    pub roles: RoleGrants,
    pub engine: EngineConfig,
    pub messages: MessagesConfig,
    /// Where per-transfer logs go.
    pub log_dir: PathBuf,
    /// `engine.gfal2_options`, parsed.
    pub gfal2_options: Vec<Gfal2Option>,
    pub metrics: MetricsConfig,
    pub monitoring: MonitoringConfig,
    /// `ca_dir` was not set and defaults to the grid location because `host_cert` is set:
    /// worth saying when that directory is missing, as the user never named it.
    pub ca_dir_defaulted: bool,
    /// `[oidc]`, validated.
    pub oidc: OidcConfig,
}

impl Resolved {
    /// A trust-store error, with the reason the directory was chosen when the user did not
    /// choose it.
    pub fn explain_trust_error(&self, error: crate::auth::AuthError) -> crate::auth::AuthError {
        match error {
            crate::auth::AuthError::TrustStore { path, reason } if self.ca_dir_defaulted => {
                crate::auth::AuthError::TrustStore {
                    path,
                    reason: format!(
                        "{reason} (ca_dir is not set, and with host_cert set it defaults to \
                         {GRID_CA_DIR}: install the CA packages there, or set ca_dir / --ca-dir)"
                    ),
                }
            }
            other => other,
        }
    }
}

impl Config {
    /// Read a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parse the text of a configuration file (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, field) = match e.span() {
                Some(span) => locate(text, span.start),
                None => (None, None),
            };
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                field,
                detail: e.message().trim_end().to_string(),
            }
        })
    }

    /// Where the dev PKI lives when no host certificate is configured.
    pub fn dev_pki_dir(&self) -> PathBuf {
        self.data_dir.join("dev-pki")
    }

    /// Apply defaults. `dev_pki` is the dev PKI directory to use when no host certificate is set.
    pub fn resolve(&self) -> Result<Resolved, ConfigError> {
        let roles = self.role_grants()?;
        if !["persistent", "memoryless"].contains(&self.engine.optimizer_history.as_str()) {
            return Err(ConfigError::OptimizerHistory(
                self.engine.optimizer_history.clone(),
            ));
        }
        let gfal2_options = self
            .engine
            .gfal2_options
            .iter()
            .map(|o| Gfal2Option::parse(o))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConfigError::Gfal2Option)?;
        if self.engine.http_backend == HttpBackendChoice::Gfal2
            && self.engine.gfal2 == Gfal2Mode::Off
        {
            return Err(ConfigError::HttpBackendWithoutGfal2);
        }
        if let Some(addr) = self.metrics.listen {
            if !addr.ip().is_loopback() {
                return Err(ConfigError::MetricsListen(addr));
            }
        }
        if let Some(name) = &self.node_name {
            let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
            if name.is_empty() || name.len() > MAX_NODE_NAME || !name.chars().all(allowed) {
                return Err(ConfigError::NodeName(name.clone()));
            }
        }
        self.oidc.validate()?;
        let limits = self.limits.resolve(self.max_connections)?;
        if let Some((field, problem)) = self.messages.problems().into_iter().next() {
            return Err(ConfigError::Messages { field, problem });
        }
        let paths = self.credential_paths();
        Ok(Resolved {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            node_name: self.node_name.clone(),
            host_cert: paths.host_cert,
            host_key: paths.host_key,
            ca_dir: paths.ca_dir,
            voms_dir: paths.voms_dir,
            max_connections: self.max_connections.max(1),
            limits,
            quick_repair: self.quick_repair,
            roles,
            engine: self.engine.clone(),
            messages: self.messages.clone(),
            log_dir: self
                .engine
                .log_dir
                .clone()
                .unwrap_or_else(|| self.data_dir.join("transfer-logs")),
            gfal2_options,
            metrics: self.metrics.clone(),
            monitoring: self.monitoring.clone(),
            ca_dir_defaulted: self.host_cert.is_some() && self.ca_dir.is_none(),
            oidc: self.oidc.clone(),
        })
    }

    fn role_grants(&self) -> Result<RoleGrants, RoleGrantError> {
        RoleGrants::parse(self.roles.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// Host credential and trust directories with the defaults applied.
    fn credential_paths(&self) -> CredentialPaths {
        let dev = crate::devpki::DevPki::layout(&self.dev_pki_dir());
        let (host_cert, host_key, ca_default, voms_default) = match &self.host_cert {
            Some(cert) => (
                cert.clone(),
                self.host_key
                    .clone()
                    .unwrap_or_else(|| default_key_for(cert)),
                PathBuf::from(GRID_CA_DIR),
                PathBuf::from(GRID_VOMS_DIR),
            ),
            None => (dev.host_cert, dev.host_key, dev.ca_dir, dev.voms_dir),
        };
        CredentialPaths {
            host_cert,
            host_key,
            ca_dir: self.ca_dir.clone().unwrap_or(ca_default),
            voms_dir: self.voms_dir.clone().unwrap_or(voms_default),
        }
    }

    /// True when the service will run on a generated dev PKI.
    pub fn uses_dev_pki(&self) -> bool {
        self.host_cert.is_none()
    }
}

/// Host credential and trust directories, defaults applied.
struct CredentialPaths {
    host_cert: PathBuf,
    host_key: PathBuf,
    ca_dir: PathBuf,
    voms_dir: PathBuf,
}

/// Why `address` cannot be listened on, in words, naming it: for `serve`'s error and
/// `check-config`'s finding.
pub fn explain_bind_error(address: SocketAddr, error: &std::io::Error) -> String {
    let why = match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            "the address is already in use (another ftsd, or another service?): stop it or \
             choose another address (listen, --listen)"
                .to_string()
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "the address is not one of this host's (listen, --listen)".to_string()
        }
        std::io::ErrorKind::PermissionDenied => format!(
            "permission denied{}",
            if address.port() < 1024 {
                " (ports below 1024 need privileges; the reference's port is 8446)"
            } else {
                ""
            }
        ),
        _ => error.to_string(),
    };
    format!("cannot listen on {address}: {why}")
}

/// `listen` in the file: through [`parse_listen`], so that a bad value is explained.
fn deserialize_listen<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_listen(&text).map_err(serde::de::Error::custom)
}

/// Parse a listen address, `IPv4:PORT` or `[IPv6]:PORT`. The error says what is wrong in the
/// operator's terms: host and service names are not resolved (the service binds exactly what
/// is written), and a port is at most 65535.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let mut reasons = Vec::new();
    match text.rsplit_once(':') {
        _ if text.starts_with('[') && text.ends_with(']') => {
            reasons.push("no port: write [ADDRESS]:PORT, e.g. [::]:8446".to_string())
        }
        None => reasons.push("no port: write ADDRESS:PORT, e.g. 0.0.0.0:8446".to_string()),
        Some((host, port)) => {
            match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                Some(inner) if inner.parse::<std::net::Ipv6Addr>().is_err() => {
                    reasons.push(format!("{inner:?} is not an IPv6 address"))
                }
                Some(_) => {}
                None if host.contains(':') => reasons
                    .push("an IPv6 address goes in brackets, e.g. [::]:8446 or [::1]:8446".into()),
                None if host.parse::<IpAddr>().is_err() => reasons.push(format!(
                    "{host:?} is not an IP address (host names are not resolved: use e.g. \
                     0.0.0.0, 127.0.0.1, [::] or [::1])"
                )),
                None => {}
            }
            if port.parse::<u16>().is_err() {
                reasons.push(
                    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
                        format!("port {port} is out of range (0 to 65535)")
                    } else {
                        format!("port {port:?} is not a number (service names are not resolved)")
                    },
                );
            }
        }
    }
    if reasons.is_empty() {
        reasons.push("expected ADDRESS:PORT, e.g. 0.0.0.0:8446".to_string());
    }
    Err(format!(
        "invalid listen address {text:?}: {}",
        reasons.join("; ")
    ))
}

/// The line (from 1) of byte `offset` in a TOML `text`, and the option written on that line
/// (`table.key` under a `[table]` header), to name both in a parse error.
fn locate(text: &str, offset: usize) -> (Option<usize>, Option<String>) {
    let Some(before) = text.get(..offset.min(text.len())) else {
        return (None, None);
    };
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_no = before.matches('\n').count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    let table = text[..line_start]
        .lines()
        .filter_map(|l| l.trim().strip_prefix('[')?.split(']').next())
        .next_back()
        .map(str::trim);
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !k.starts_with('#') && !k.starts_with('['));
    let field = key.map(|k| match table {
        Some(t) => format!("{t}.{k}"),
        None => k.to_string(),
    });
    (Some(line_no), field)
}

/// How serious a finding of [`Config::check`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Checked and fine.
    Ok,
    /// Worth knowing, nothing to fix (e.g. the dev PKI will be used).
    Info,
    /// The service starts, but something will not work as an operator expects.
    Warning,
    /// The service would not start, or could not serve anybody.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One line of `ftsd check-config`: the option it is about and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// The option (`listen`, `host_cert`, `roles.public`), or `config` for the file itself.
    pub field: String,
    pub message: String,
}

impl Finding {
    fn new(severity: Severity, field: &str, message: impl Into<String>) -> Finding {
        Finding {
            severity,
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// A configuration that cannot be read or parsed, as a finding.
    pub fn from_error(error: &ConfigError) -> Finding {
        match error {
            ConfigError::Parse {
                path,
                line,
                field: Some(field),
                detail,
            } => Finding::new(
                Severity::Error,
                field,
                format!("{}: {detail}", where_in_file(path, *line)),
            ),
            ConfigError::Roles(_) => Finding::new(Severity::Error, "roles", error.to_string()),
            _ => Finding::new(Severity::Error, "config", error.to_string()),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<8} {}: {}", self.severity, self.field, self.message)
    }
}

/// A host certificate this close to its end is worth a warning: grid host certificates are
/// renewed by hand, through the CA's portal, which takes days.
const CERT_EXPIRY_WARNING_DAYS: i64 = 30;

/// Findings of one check run, in the order they were made.
#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn ok(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(Finding::new(Severity::Ok, field, message));
    }
    fn info(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(Finding::new(Severity::Info, field, message));
    }
    fn warning(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(Finding::new(Severity::Warning, field, message));
    }
    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(Finding::new(Severity::Error, field, message));
    }
}

impl Config {
    /// Check everything the service needs at start, without starting it (`ftsd check-config`).
    /// Only reads: the data directory and the dev PKI are looked at, never created.
    pub fn check(&self) -> Vec<Finding> {
        let mut out = Findings::default();
        self.check_listen(&mut out);
        match self.role_grants() {
            Ok(grants) => {
                let names: Vec<&str> = grants.0.keys().map(String::as_str).collect();
                out.ok("roles", format!("grants for {}", names.join(", ")));
            }
            Err(e) => out.error("roles", e.to_string()),
        }
        if self.max_connections == 0 {
            out.warning(
                "max_connections",
                "0 would serve nobody; the service takes it as 1",
            );
        }
        if let Err(e) = self.limits.resolve(self.max_connections) {
            out.error(&format!("limits.{}", e.field), e.reason);
        }
        check_data_dir(&self.data_dir, &mut out);
        self.check_messages(&mut out);
        check_file_roots(&self.engine.file_roots, &mut out);

        let paths = self.credential_paths();
        // With no host certificate and no dev PKI yet, the service makes one at first start:
        // there is nothing to look at until then.
        let dev_pending = self.uses_dev_pki() && !self.dev_pki_dir().exists();
        if self.uses_dev_pki() {
            out.info(
                "host_cert",
                format!(
                    "not set: the service uses the throwaway dev PKI in {}{} (for development \
                     only: set host_cert, e.g. /etc/grid-security/hostcert.pem, for a real service)",
                    self.dev_pki_dir().display(),
                    if dev_pending {
                        ", created at first start"
                    } else {
                        ""
                    },
                ),
            );
            if self.host_key.is_some() {
                out.warning("host_key", "ignored, because host_cert is not set");
            }
        }
        if !dev_pending {
            let cert = check_host_cert(&paths.host_cert, &mut out);
            check_host_key(&paths.host_key, &paths.host_cert, cert.as_deref(), &mut out);
        }
        if self.host_cert.is_some() && self.ca_dir.is_none() {
            out.info(
                "ca_dir",
                format!("not set: with host_cert set, it defaults to {GRID_CA_DIR}"),
            );
        }
        if !dev_pending || self.ca_dir.is_some() {
            check_ca_dir(&paths.ca_dir, &mut out);
        }
        if !dev_pending || self.voms_dir.is_some() {
            check_voms_dir(&paths.voms_dir, &mut out);
        }
        self.check_oidc(&mut out);
        out.0
    }

    fn check_messages(&self, out: &mut Findings) {
        let m = &self.messages;
        if !m.enabled() {
            out.info("messages", "no brokers: monitoring messages are off");
            return;
        }
        let problems = m.problems();
        for (field, problem) in &problems {
            out.error(&format!("messages.{field}"), problem.clone());
        }
        if !problems.is_empty() {
            return;
        }
        if m.tls {
            let ca =
                m.ca.clone()
                    .unwrap_or_else(|| self.credential_paths().ca_dir);
            match crate::messages::tls_config(
                &ca,
                m.client_cert.as_deref(),
                m.client_key.as_deref(),
            ) {
                Ok(_) => out.ok("messages.tls", format!("CAs from {}", ca.display())),
                Err(e) => out.error("messages.tls", e.to_string()),
            }
        } else if m.password.is_some() {
            out.warning("messages.password", "sent in clear text without tls = true");
        }
        let kinds: Vec<&str> = crate::model::message::Kind::ALL
            .into_iter()
            .filter(|k| m.kinds().contains(*k))
            .map(|k| k.code())
            .collect();
        out.ok(
            "messages",
            format!(
                "{} to {} ({}), ttl {} h",
                kinds.join(" "),
                m.brokers.join(", "),
                if m.topic { "topics" } else { "queues" },
                m.ttl_hours
            ),
        );
    }

    /// `[oidc]`: the providers as configured (discovery happens at start, not here).
    fn check_oidc(&self, out: &mut Findings) {
        if !self.oidc.enabled() {
            out.info(
                "oidc",
                "no [[oidc.providers]]: bearer tokens are refused, certificates only",
            );
            return;
        }
        match self.oidc.validate() {
            Ok(()) => {
                let issuers: Vec<&str> = self
                    .oidc
                    .providers
                    .iter()
                    .map(|p| p.issuer.as_str())
                    .collect();
                out.ok(
                    "oidc.providers",
                    format!(
                        "bearer tokens from {} (audiences: {})",
                        issuers.join(", "),
                        self.oidc.authorized_audiences.join(", ")
                    ),
                );
            }
            Err(ConfigError::Oidc { field, detail }) => {
                out.error(&format!("oidc.{field}"), detail);
            }
            Err(e) => out.error("oidc", e.to_string()),
        }
    }

    /// The configuration file at `path` holds provider secrets and every user of the machine
    /// can read it: a warning (for `check-config` and the start-up log).
    pub fn check_secrets_file(&self, path: &Path) -> Option<Finding> {
        if !self
            .oidc
            .providers
            .iter()
            .any(|p| !p.client_secret.is_empty())
        {
            return None;
        }
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (mode & 0o004 != 0).then(|| {
            Finding::new(
                Severity::Warning,
                "oidc.providers",
                format!(
                    "{} holds client secrets and every user of this machine can read it \
                     (mode {:o}): chmod o-r {} (e.g. 0640, group of the service)",
                    path.display(),
                    mode & 0o777,
                    path.display()
                ),
            )
        })
    }

    fn check_listen(&self, out: &mut Findings) {
        let addr = self.listen;
        if addr.port() == 0 {
            out.warning(
                "listen",
                format!(
                    "{addr}: port 0 makes the kernel pick another port at every start, and \
                     clients need a fixed one (the reference's is 8446)"
                ),
            );
        } else if let Err(e) = std::net::TcpListener::bind(addr) {
            // What `serve` would hit first: the port taken (often by a running ftsd), an
            // address that is not this host's, a privileged port.
            out.error("listen", explain_bind_error(addr, &e));
        } else if addr.ip().is_loopback() {
            out.ok("listen", format!("{addr} (this host only)"));
        } else {
            out.ok("listen", addr.to_string());
        }
        if self.uses_dev_pki() && !addr.ip().is_loopback() {
            out.warning(
                "listen",
                format!(
                    "{addr} is reachable from other hosts, with the throwaway dev PKI whose CA \
                     key lies in the data directory: set host_cert for a service others use"
                ),
            );
        }
    }
}

fn check_data_dir(dir: &Path, out: &mut Findings) {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => out.error("data_dir", format!("{shown} is not a directory")),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                out.warning(
                    "data_dir",
                    format!(
                        "{shown} is open to other users (mode {mode:04o}): the database is the \
                         service's private state, chmod 0700 it"
                    ),
                );
            }
            let db = dir.join(crate::store::DB_FILE);
            out.ok(
                "data_dir",
                if db.exists() {
                    format!("{shown}, database {} present", crate::store::DB_FILE)
                } else {
                    format!("{shown}, database created at first start")
                },
            );
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            match uncreatable(dir) {
                None => out.info(
                    "data_dir",
                    format!(
                        "{shown} does not exist yet: the service creates it (0700) at first start"
                    ),
                ),
                Some(why) => out.error("data_dir", format!("{shown} cannot be created: {why}")),
            }
        }
        Err(e) => out.error("data_dir", format!("{shown}: {e}")),
    }
}

/// Why a directory that does not exist could not be created, if it could not: its nearest
/// existing ancestor must be a directory this user may write into.
fn uncreatable(dir: &Path) -> Option<String> {
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let ancestor = absolute.ancestors().skip(1).find(|a| a.exists())?;
    let shown = ancestor.display();
    if !ancestor.is_dir() {
        return Some(format!("{shown} is not a directory"));
    }
    let Ok(c_path) = std::ffi::CString::new(ancestor.as_os_str().as_encoded_bytes()) else {
        return None;
    };
    // SAFETY: access(2) only reads the NUL-terminated path it is given.
    let writable = unsafe { libc::access(c_path.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
    (!writable).then(|| format!("{shown} is not writable by this user"))
}

/// `[engine] file_roots`: directories that do not exist make `file://` transfers under them
/// fail; the service still starts, so these are warnings.
fn check_file_roots(roots: &[PathBuf], out: &mut Findings) {
    for root in roots {
        match std::fs::metadata(root) {
            Ok(meta) if meta.is_dir() => out.ok("engine.file_roots", root.display().to_string()),
            Ok(_) => out.warning(
                "engine.file_roots",
                format!(
                    "{} is not a directory: file:// transfers under it will fail",
                    root.display()
                ),
            ),
            Err(e) => out.warning(
                "engine.file_roots",
                format!(
                    "{}: {e}: file:// transfers under it will fail",
                    root.display()
                ),
            ),
        }
    }
}

/// Read a file the service needs, saying why it cannot when it cannot.
fn read_needed(field: &str, path: &Path, out: &mut Findings) -> Option<Vec<u8>> {
    let shown = path.display();
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.error(field, format!("{shown} does not exist"));
            None
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            out.error(
                field,
                format!(
                    "{shown} is not readable by this user; the service must be able to read it \
                     as the user it runs as (ftsd when installed from the RPM)"
                ),
            );
            None
        }
        Err(e) => {
            out.error(field, format!("{shown}: {e}"));
            None
        }
    }
}

/// The host certificate: readable, PEM, parses, valid now. Returns the leaf's DER.
fn check_host_cert(path: &Path, out: &mut Findings) -> Option<Vec<u8>> {
    let shown = path.display();
    let bytes = read_needed("host_cert", path, out)?;
    let chain: Vec<CertificateDer<'static>> =
        match CertificateDer::pem_slice_iter(&bytes).collect::<Result<_, _>>() {
            Ok(chain) => chain,
            Err(e) => {
                out.error(
                    "host_cert",
                    format!("{shown} is not a PEM certificate file: {e}"),
                );
                return None;
            }
        };
    let Some(leaf) = chain.first() else {
        out.error(
            "host_cert",
            format!("{shown} holds no certificate (no -----BEGIN CERTIFICATE----- block)"),
        );
        return None;
    };
    let cert = match x509_parser::certificate::X509Certificate::from_der(leaf.as_ref()) {
        Ok((_, cert)) => cert,
        Err(e) => {
            out.error(
                "host_cert",
                format!("{shown}: the certificate does not parse: {e}"),
            );
            return None;
        }
    };
    let subject = crate::auth::dn::oneline(cert.subject());
    let validity = cert.validity();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (not_before, not_after) = (validity.not_before, validity.not_after);
    let days_left = (not_after.timestamp() - now) / 86_400;
    if not_after.timestamp() < now {
        out.error(
            "host_cert",
            format!("{shown} ({subject}) expired on {not_after}"),
        );
    } else if not_before.timestamp() > now {
        out.error(
            "host_cert",
            format!("{shown} ({subject}) is not valid before {not_before}"),
        );
    } else if days_left < CERT_EXPIRY_WARNING_DAYS {
        out.warning(
            "host_cert",
            format!("{shown} ({subject}) expires on {not_after}, in {days_left} day(s)"),
        );
    } else {
        let extra = match chain.len() {
            1 => String::new(),
            n => format!(", with {} chain certificate(s)", n - 1),
        };
        out.ok(
            "host_cert",
            format!("{shown}: {subject}, valid until {not_after}{extra}"),
        );
    }
    let server_auth = match cert.extended_key_usage() {
        Ok(Some(eku)) => eku.value.server_auth || eku.value.any,
        // No extension: any usage.
        _ => true,
    };
    if !server_auth {
        out.warning(
            "host_cert",
            format!("{shown} lacks the serverAuth extended key usage: clients will refuse it"),
        );
    }
    Some(leaf.to_vec())
}

/// The host key: readable, not open to everybody, unencrypted PEM, and the key of the host
/// certificate. Nothing of the key itself is ever printed.
fn check_host_key(path: &Path, cert_path: &Path, cert: Option<&[u8]>, out: &mut Findings) {
    let shown = path.display();
    let Some(bytes) = read_needed("host_key", path, out) else {
        return;
    };
    // Group bits are left alone: they also show an ACL's mask (setfacl -m u:ftsd:r).
    let mode = std::fs::metadata(path).map_or(0, |m| m.permissions().mode() & 0o777);
    if mode & 0o007 != 0 {
        out.warning(
            "host_key",
            format!("{shown} is accessible to every user (mode {mode:04o}): chmod o-rwx it"),
        );
    }
    if bytes.windows(b"ENCRYPTED".len()).any(|w| w == b"ENCRYPTED") {
        out.error(
            "host_key",
            format!(
                "{shown} is encrypted, and the service cannot ask for a passphrase: decrypt it \
                 (openssl pkey -in KEY -out NEWKEY) and keep it readable by the service only"
            ),
        );
        return;
    }
    // The PEM error is not shown: some variants quote lines of the file, which is a key.
    let Ok(key) = PrivateKeyDer::from_pem_slice(&bytes) else {
        out.error(
            "host_key",
            format!(
                "{shown} holds no PEM private key (expected -----BEGIN PRIVATE KEY----- or \
                 -----BEGIN RSA PRIVATE KEY-----)"
            ),
        );
        return;
    };
    let Some(cert) = cert else {
        out.ok("host_key", format!("{shown}: a private key"));
        return;
    };
    match crate::server::tls::key_matches_certificate(cert, key) {
        Ok(Some(true)) => out.ok("host_key", format!("{shown}: the key of host_cert")),
        Ok(Some(false)) => out.error(
            "host_key",
            format!(
                "{shown} is not the key of host_cert {}",
                cert_path.display()
            ),
        ),
        Ok(None) => out.ok(
            "host_key",
            format!("{shown}: a private key (whether it is host_cert's cannot be told)"),
        ),
        Err(reason) => out.error(
            "host_key",
            format!("{shown}: unusable private key: {reason}"),
        ),
    }
}

/// The CA directory: exists and holds at least one CA the service can use.
fn check_ca_dir(dir: &Path, out: &mut Findings) {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.error(
                "ca_dir",
                format!(
                    "{shown} does not exist: no client could authenticate (install the IGTF CA \
                     packages, e.g. ca-policy-egi-core)"
                ),
            );
            return;
        }
        Ok(meta) if !meta.is_dir() => {
            out.error("ca_dir", format!("{shown} is not a directory"));
            return;
        }
        _ => {}
    }
    match crate::auth::trust::TrustStore::load(dir) {
        Ok(store) => {
            out.ok(
                "ca_dir",
                format!(
                    "{shown}: {} CA certificate(s), {} CRL(s)",
                    store.anchors().len(),
                    store.crls().len()
                ),
            );
            if store.crls().is_empty() {
                out.info(
                    "ca_dir",
                    "no CRL: revoked certificates are not refused (fetch-crl keeps CRLs there)",
                );
            }
        }
        Err(e) => out.error("ca_dir", e.to_string()),
    }
}

/// The VOMS directory: optional (the service runs without VO attributes), hence warnings only.
fn check_voms_dir(dir: &Path, out: &mut Findings) {
    let shown = dir.display();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.warning(
                "voms_dir",
                format!("{shown} does not exist: VOMS attributes will be ignored"),
            );
            return;
        }
        Err(e) => {
            out.warning(
                "voms_dir",
                format!("{shown}: {e}: VOMS attributes will be ignored"),
            );
            return;
        }
    };
    let has_lsc = |vo: &Path| {
        std::fs::read_dir(vo).is_ok_and(|files| {
            files
                .filter_map(Result::ok)
                .any(|f| f.path().extension().is_some_and(|e| e == "lsc"))
        })
    };
    let mut vos: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir() && has_lsc(&e.path()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    vos.sort();
    if vos.is_empty() {
        out.warning(
            "voms_dir",
            format!("{shown} holds no <vo>/<host>.lsc file: VOMS attributes will be ignored"),
        );
    } else {
        out.ok("voms_dir", format!("{shown}: VO(s) {}", vos.join(", ")));
    }
}

/// `hostcert.pem` → `hostkey.pem` (the grid naming convention).
fn default_key_for(cert: &Path) -> PathBuf {
    let name = cert
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("hostcert.pem");
    cert.with_file_name(name.replacen("cert", "key", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_embedded_defaults() {
        let config = Config::parse("", Path::new("x.toml")).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8446");
        assert_eq!(config.data_dir, PathBuf::from("./ftsd-data"));
        let resolved = config.resolve().unwrap();
        assert_eq!(
            resolved.host_cert,
            PathBuf::from("./ftsd-data/dev-pki/hostcert.pem")
        );
        assert!(resolved.roles.0.contains_key("public"));
        // Instant restart after a crash unless turned off (RELIABILITY.md).
        assert!(resolved.quick_repair);
    }

    #[test]
    fn a_configured_host_certificate_switches_to_grid_paths() {
        let config = Config::parse(
            "host_cert = \"/etc/grid-security/hostcert.pem\"",
            Path::new("x.toml"),
        )
        .unwrap();
        let resolved = config.resolve().unwrap();
        assert_eq!(
            resolved.host_key,
            PathBuf::from("/etc/grid-security/hostkey.pem")
        );
        assert_eq!(resolved.ca_dir, PathBuf::from(GRID_CA_DIR));
        assert_eq!(resolved.voms_dir, PathBuf::from(GRID_VOMS_DIR));
    }

    #[test]
    fn bad_values_are_reported_with_the_field() {
        let err = Config::parse("listen = \"localhost:99999\"", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
        let err = Config::parse("lisen = \"x\"", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let config =
            Config::parse("[roles]\npublic = \"most:transfer\"", Path::new("x.toml")).unwrap();
        assert!(config.resolve().is_err());
    }

    // ---- [oidc] ----

    const PROVIDER: &str = r#"
[oidc]
authorized_audiences = ["fts.example.org", "https://wlcg.cern.ch/jwt/v1/any"]
jwks_cache_seconds = 600
[[oidc.providers]]
issuer = "https://iam.example.org/"
client_id = "ftsd"
client_secret = "very-secret-value"
required_scope = "fts"
vo = "atlas"
"#;

    #[test]
    fn oidc_is_off_until_a_provider_is_configured() {
        let config = Config::parse("", Path::new("x.toml")).unwrap();
        assert!(!config.oidc.enabled());
        assert_eq!(
            config.oidc.authorized_audiences,
            vec![crate::model::token::WLCG_ANY_AUDIENCE.to_string()]
        );
        assert_eq!(config.oidc.jwks_cache_seconds, 86400);
        assert!(config.oidc.validate_offline);

        let config = Config::parse(PROVIDER, Path::new("x.toml")).unwrap();
        assert!(config.oidc.enabled());
        let resolved = config.resolve().unwrap();
        assert_eq!(resolved.oidc.jwks_cache_seconds, 600);
        let p = &resolved.oidc.providers[0];
        assert_eq!(
            (
                p.issuer.as_str(),
                p.required_scope.as_deref(),
                p.vo.as_deref()
            ),
            ("https://iam.example.org/", Some("fts"), Some("atlas"))
        );
        // The secret never shows in a debug dump (start-up logs print the configuration).
        let dump = format!("{resolved:?}");
        assert!(!dump.contains("very-secret-value"), "{dump}");
    }

    #[test]
    fn unusable_providers_are_refused_with_the_field() {
        let bad = |from: &str, to: &str| {
            let text = PROVIDER.replace(from, to);
            Config::parse(&text, Path::new("x.toml"))
                .and_then(|c| c.resolve())
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        let e = bad("https://iam.example.org/", "http://iam.example.org/");
        assert!(
            e.contains("providers[0].issuer") && e.contains("https://"),
            "{e}"
        );
        let e = bad("client_id = \"ftsd\"", "client_id = \"\"");
        assert!(e.contains("providers[0].client_id"), "{e}");
        let e = bad(
            "client_secret = \"very-secret-value\"",
            "client_secret = \"\"",
        );
        assert!(e.contains("providers[0].client_secret"), "{e}");
        let e = bad(
            "required_scope = \"fts\"",
            "required_scope = \"fts storage.read:/\"",
        );
        assert!(e.contains("one scope"), "{e}");
        let e = bad(
            "authorized_audiences = [\"fts.example.org\", \"https://wlcg.cern.ch/jwt/v1/any\"]",
            "authorized_audiences = []",
        );
        assert!(e.contains("authorized_audiences"), "{e}");
        // A missing secret is a parse error naming the field, never echoing other values.
        let e = bad("client_secret = \"very-secret-value\"\n", "");
        assert!(e.contains("client_secret"), "{e}");
        let twice = format!(
            "{PROVIDER}[[oidc.providers]]\nissuer = \"https://iam.example.org\"\n\
             client_id = \"x\"\nclient_secret = \"y\"\n"
        );
        let e = Config::parse(&twice, Path::new("x.toml"))
            .and_then(|c| c.resolve())
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("providers[1].issuer") && e.contains("twice"),
            "{e}"
        );
        assert!(!e.contains("very-secret-value"), "{e}");
    }

    #[test]
    fn a_world_readable_file_with_secrets_is_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ftsd.toml");
        std::fs::write(&path, PROVIDER).unwrap();
        let config = Config::load(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let finding = config.check_secrets_file(&path).expect("a warning");
        assert_eq!(finding.severity, Severity::Warning);
        assert!(finding.message.contains("chmod o-r"), "{}", finding.message);
        assert!(finding.message.contains("644"), "{}", finding.message);
        assert!(!finding.message.contains("very-secret-value"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(config.check_secrets_file(&path).is_none());
        // No secrets in the file: nothing to say whatever its mode.
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let plain = Config::load(&path).unwrap();
        assert!(plain.check_secrets_file(&path).is_none());
    }

    // ---- listen and parse errors ----

    /// The option named by a parse error, and the error as printed.
    fn parse_err(text: &str) -> (Option<String>, String) {
        let err = Config::parse(text, Path::new("ftsd.toml")).unwrap_err();
        match &err {
            ConfigError::Parse { field, .. } => (field.clone(), err.to_string()),
            other => panic!("not a parse error: {other}"),
        }
    }

    #[test]
    fn a_bad_listen_address_is_explained_with_the_field_and_the_value() {
        let (field, msg) = parse_err("# comment\nlisten = \"localhost:99999\"\n");
        assert_eq!(field.as_deref(), Some("listen"));
        assert!(msg.starts_with("ftsd.toml: line 2: listen: "), "{msg}");
        assert!(msg.contains("\"localhost:99999\""), "{msg}");
        assert!(msg.contains("port 99999 is out of range"), "{msg}");
        assert!(msg.contains("\"localhost\" is not an IP address"), "{msg}");

        let (field, msg) = parse_err("listen = \"0.0.0.0:http\"");
        assert_eq!(field.as_deref(), Some("listen"));
        assert!(msg.contains("\"0.0.0.0:http\""), "{msg}");
        assert!(msg.contains("port \"http\" is not a number"), "{msg}");
        assert!(
            !msg.contains("IP address"),
            "the address part is fine: {msg}"
        );

        for (text, why) in [
            ("::1:8446", "brackets"),
            ("[::1]", "no port"),
            ("127.0.0.1", "no port"),
            ("[::g]:8446", "not an IPv6 address"),
            ("127.0.0.1:-1", "not a number"),
        ] {
            let err = parse_listen(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
        assert_eq!(parse_listen("[::]:8446").unwrap().port(), 8446);
        assert_eq!(parse_listen("127.0.0.1:0").unwrap().port(), 0);
    }

    #[test]
    fn toml_errors_name_the_line_and_the_option() {
        let (field, msg) = parse_err("listen = \"127.0.0.1:1\"\nmax_connections = \"many\"\n");
        assert_eq!(field.as_deref(), Some("max_connections"));
        assert!(
            msg.starts_with("ftsd.toml: line 2: max_connections: "),
            "{msg}"
        );
        let (field, _) = parse_err("[roles]\npublic = 5\n");
        assert_eq!(field.as_deref(), Some("roles.public"));
        let (field, msg) = parse_err("lisen = \"x\"");
        assert_eq!(field.as_deref(), Some("lisen"));
        assert!(msg.contains("unknown field"), "{msg}");
        let (_, msg) = parse_err("listen = \"unterminated\n");
        assert!(msg.starts_with("ftsd.toml: line 1: "), "{msg}");
        // As check-config shows it: the option, then where and what.
        let err = Config::parse("listen = \"0.0.0.0:http\"", Path::new("ftsd.toml")).unwrap_err();
        let finding = Finding::from_error(&err);
        assert_eq!(finding.field, "listen");
        assert!(
            finding
                .message
                .starts_with("ftsd.toml: line 1: invalid listen address"),
            "{finding}"
        );
    }

    // ---- check ----

    /// A complete, valid configuration on a fresh dev PKI, in its own directory.
    struct Site {
        _dir: tempfile::TempDir,
        pki: crate::devpki::DevPki,
        config: Config,
    }

    fn site() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::devpki::DevPki::create(&dir.path().join("grid")).unwrap();
        // A free port: check binds the address, and tests run at once.
        let port = std::net::TcpListener::bind("[::]:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = Config {
            listen: format!("[::]:{port}").parse().unwrap(),
            data_dir: dir.path().join("data"),
            host_cert: Some(pki.host_cert.clone()),
            host_key: Some(pki.host_key.clone()),
            ca_dir: Some(pki.ca_dir.clone()),
            voms_dir: Some(pki.voms_dir.clone()),
            ..Config::default()
        };
        Site {
            _dir: dir,
            pki,
            config,
        }
    }

    fn errors(findings: &[Finding]) -> Vec<&Finding> {
        findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .collect()
    }

    fn has(findings: &[Finding], severity: Severity, field: &str, text: &str) -> bool {
        findings
            .iter()
            .any(|f| f.severity == severity && f.field == field && f.message.contains(text))
    }

    #[test]
    fn a_complete_configuration_has_no_error() {
        let site = site();
        let findings = site.config.check();
        assert!(errors(&findings).is_empty(), "{findings:#?}");
        assert!(has(&findings, Severity::Ok, "host_cert", "CN=localhost"));
        assert!(has(
            &findings,
            Severity::Ok,
            "host_key",
            "the key of host_cert"
        ));
        assert!(has(
            &findings,
            Severity::Ok,
            "ca_dir",
            "1 CA certificate(s)"
        ));
        let listen = site.config.listen.to_string();
        assert!(has(&findings, Severity::Ok, "listen", &listen));
        assert!(has(&findings, Severity::Info, "data_dir", "at first start"));
        // The dev PKI has an empty vomsdir: a warning, not an error.
        assert!(has(
            &findings,
            Severity::Warning,
            "voms_dir",
            "no <vo>/<host>.lsc"
        ));
    }

    #[test]
    fn a_missing_host_certificate_is_an_error_naming_the_path() {
        let mut site = site();
        site.config.host_cert = Some(site.pki.dir.join("nothere.pem"));
        let findings = site.config.check();
        let errs = errors(&findings);
        assert_eq!(errs.len(), 1, "{findings:#?}");
        assert_eq!(errs[0].field, "host_cert");
        assert!(
            errs[0].message.ends_with("nothere.pem does not exist"),
            "{errs:?}"
        );
    }

    #[test]
    fn a_host_key_that_is_not_the_certificates_is_an_error() {
        let mut site = site();
        site.config.host_key = Some(site.pki.user_key.clone());
        let findings = site.config.check();
        assert!(
            has(
                &findings,
                Severity::Error,
                "host_key",
                "is not the key of host_cert"
            ),
            "{findings:#?}"
        );
    }

    #[test]
    fn unusable_credential_files_are_errors_and_the_key_is_never_quoted() {
        let mut site = site();
        let dir = site.pki.dir.clone();
        // A certificate where the key should be, a key where the certificate should be.
        site.config.host_cert = Some(site.pki.host_key.clone());
        site.config.host_key = Some(site.pki.host_cert.clone());
        let findings = site.config.check();
        assert!(has(
            &findings,
            Severity::Error,
            "host_cert",
            "holds no certificate"
        ));
        assert!(has(
            &findings,
            Severity::Error,
            "host_key",
            "holds no PEM private key"
        ));

        // A key with a damaged body: the message must not quote any of it.
        let key = std::fs::read_to_string(&site.pki.host_key).unwrap();
        let damaged = key.replacen("\n", "\n!!", 2);
        std::fs::write(dir.join("damaged.pem"), &damaged).unwrap();
        site.config.host_cert = Some(site.pki.host_cert.clone());
        site.config.host_key = Some(dir.join("damaged.pem"));
        let findings = site.config.check();
        assert!(
            has(&findings, Severity::Error, "host_key", ""),
            "{findings:#?}"
        );
        let body_lines: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
        for finding in &findings {
            for line in &body_lines {
                assert!(
                    !finding.message.contains(&line[2..line.len() - 2]),
                    "{finding}"
                );
            }
        }

        std::fs::write(
            dir.join("encrypted.pem"),
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        site.config.host_key = Some(dir.join("encrypted.pem"));
        let findings = site.config.check();
        assert!(has(&findings, Severity::Error, "host_key", "is encrypted"));
    }

    #[test]
    fn an_expired_host_certificate_is_an_error() {
        use crate::devpki::{Credential, Kind};
        let site = site();
        let now = time::OffsetDateTime::now_utc();
        let ca = Credential::issue(
            "/O=t/CN=CA",
            Kind::Ca,
            None,
            now - time::Duration::days(10),
            now + time::Duration::days(10),
            1,
        )
        .unwrap();
        let host = Credential::issue(
            "/O=t/CN=old.example.org",
            Kind::Host(vec!["old.example.org".into()]),
            Some(&ca),
            now - time::Duration::days(10),
            now - time::Duration::days(1),
            2,
        )
        .unwrap();
        let dir = site.pki.dir.clone();
        std::fs::write(dir.join("oldcert.pem"), &host.cert_pem).unwrap();
        std::fs::write(dir.join("oldkey.pem"), &host.key_pem).unwrap();
        let mut config = site.config.clone();
        config.host_cert = Some(dir.join("oldcert.pem"));
        config.host_key = None; // oldcert.pem -> oldkey.pem, the grid naming rule
        let findings = config.check();
        assert!(
            has(&findings, Severity::Error, "host_cert", "expired on"),
            "{findings:#?}"
        );
        assert!(has(
            &findings,
            Severity::Ok,
            "host_key",
            "the key of host_cert"
        ));
    }

    #[test]
    fn trust_directories() {
        let mut site = site();
        let empty = site.pki.dir.join("empty");
        std::fs::create_dir(&empty).unwrap();
        site.config.ca_dir = Some(empty.clone());
        let findings = site.config.check();
        assert!(has(
            &findings,
            Severity::Error,
            "ca_dir",
            "no CA certificate"
        ));

        site.config.ca_dir = Some(site.pki.dir.join("nowhere"));
        let findings = site.config.check();
        assert!(has(&findings, Severity::Error, "ca_dir", "does not exist"));

        // A missing vomsdir is survivable; one with a VO is fine.
        site.config.ca_dir = Some(site.pki.ca_dir.clone());
        site.config.voms_dir = Some(site.pki.dir.join("nowhere"));
        let findings = site.config.check();
        assert!(errors(&findings).is_empty(), "{findings:#?}");
        assert!(has(
            &findings,
            Severity::Warning,
            "voms_dir",
            "does not exist"
        ));
        std::fs::create_dir_all(empty.join("dteam")).unwrap();
        std::fs::write(
            empty.join("dteam/voms.example.org.lsc"),
            "/DC=x/CN=v\n/DC=x/CN=ca\n",
        )
        .unwrap();
        site.config.voms_dir = Some(empty);
        let findings = site.config.check();
        assert!(has(&findings, Severity::Ok, "voms_dir", "VO(s) dteam"));
    }

    #[test]
    fn without_host_cert_the_check_says_the_dev_pki_will_be_used() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        let findings = config.check();
        assert!(errors(&findings).is_empty(), "{findings:#?}");
        assert!(
            has(&findings, Severity::Info, "host_cert", "throwaway dev PKI"),
            "{findings:#?}"
        );
        assert!(has(
            &findings,
            Severity::Info,
            "host_cert",
            "created at first start"
        ));
        // Once the dev PKI exists, it is checked like any other.
        crate::devpki::DevPki::create(&config.dev_pki_dir()).unwrap();
        let findings = config.check();
        assert!(has(
            &findings,
            Severity::Ok,
            "host_key",
            "the key of host_cert"
        ));
        // A dev PKI reachable from other hosts deserves a warning.
        let open = Config {
            listen: "0.0.0.0:8446".parse().unwrap(),
            ..config
        };
        assert!(has(&open.check(), Severity::Warning, "listen", "dev PKI"));
    }

    #[test]
    fn bad_roles_port_zero_and_an_open_data_dir_are_reported() {
        let mut site = site();
        site.config.roles = BTreeMap::from([("public".to_string(), "most:transfer".to_string())]);
        site.config.listen = "127.0.0.1:0".parse().unwrap();
        let data = site.config.data_dir.clone();
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let findings = site.config.check();
        assert!(has(
            &findings,
            Severity::Error,
            "roles",
            "unknown level \"most\""
        ));
        assert!(has(&findings, Severity::Warning, "listen", "port 0"));
        assert!(has(&findings, Severity::Warning, "data_dir", "mode 0755"));
    }

    /// What would make `serve` fail is an error naming the value, what would only make some
    /// transfers fail a warning: a port in use, a data directory that cannot be created, an
    /// unknown operation in a role, a file root that does not exist.
    #[test]
    fn what_serve_would_trip_on_is_reported_with_the_value() {
        let mut site = site();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        site.config.listen = taken.local_addr().unwrap();
        let file = site.config.data_dir.with_file_name("a-file");
        std::fs::write(&file, "").unwrap();
        site.config.data_dir = file.join("data");
        site.config.roles = BTreeMap::from([("public".to_string(), "vo:transfr".to_string())]);
        let missing_root = file.with_file_name("no-such-root");
        site.config.engine.file_roots = vec![missing_root.clone()];
        let findings = site.config.check();
        let addr = taken.local_addr().unwrap();
        assert!(
            has(
                &findings,
                Severity::Error,
                "listen",
                &format!("cannot listen on {addr}: the address is already in use")
            ),
            "{findings:#?}"
        );
        assert!(
            has(
                &findings,
                Severity::Error,
                "data_dir",
                &format!("cannot be created: {} is not a directory", file.display())
            ),
            "{findings:#?}"
        );
        assert!(has(
            &findings,
            Severity::Error,
            "roles",
            "unknown operation \"transfr\" in \"vo:transfr\""
        ));
        assert!(has(
            &findings,
            Severity::Warning,
            "engine.file_roots",
            &format!("{}: No such file or directory", missing_root.display())
        ));
        // And serve refuses the role typo too, instead of granting nothing.
        assert!(site.config.resolve().is_err());
    }

    #[test]
    fn gfal2_settings() {
        let config = Config::parse(
            "[engine]\ngfal2 = \"off\"\ngfal2_copy = \"/opt/gfal/bin/gfal-copy\"\n\
             gfal2_options = [\"S3:s3.example.org:SECRET_KEY=a=b \", \"HTTP PLUGIN:KEEP_ALIVE=false\"]\n",
            Path::new("ftsd.toml"),
        )
        .unwrap();
        assert_eq!(config.engine.gfal2, Gfal2Mode::Off);
        assert_eq!(config.engine.http_backend, HttpBackendChoice::Native);
        let resolved = config.resolve().unwrap();
        let parsed: Vec<(&str, &str, &str)> = resolved
            .gfal2_options
            .iter()
            .map(|o| (o.group.as_str(), o.key.as_str(), o.value.as_str()))
            .collect();
        assert_eq!(
            parsed,
            [
                ("S3:S3.EXAMPLE.ORG", "SECRET_KEY", "a=b"),
                ("HTTP PLUGIN", "KEEP_ALIVE", "false"),
            ]
        );
        // Secrets stay out of debug output (and so of logs).
        let shown = format!("{:?}", resolved.gfal2_options);
        assert_eq!(
            shown,
            "[S3:S3.EXAMPLE.ORG:SECRET_KEY=<redacted>, HTTP PLUGIN:KEEP_ALIVE=<redacted>]"
        );

        for (bad, why) in [
            ("S3_SECRET_KEY=x", "has no group"),
            ("S3:SECRET_KEY", "has no value"),
            (":KEY=x", "is not a GROUP:KEY name"),
            ("S3:=x", "is not a GROUP:KEY name"),
            ("S3]\n[X:KEY=x", "is not a GROUP:KEY name"),
        ] {
            let mut config = Config::default();
            config.engine.gfal2_options = vec![bad.to_string()];
            let err = config.resolve().unwrap_err().to_string();
            assert!(err.starts_with("[engine] gfal2_options: "), "{err}");
            assert!(err.contains(why), "{bad}: {err}");
        }
        let mut config = Config::default();
        config.engine.gfal2_options = vec!["S3:SECRET_KEY=line\nbreak".to_string()];
        let err = config.resolve().unwrap_err().to_string();
        assert!(
            err.contains("spans lines") && !err.contains("break"),
            "{err}"
        );

        let mut config = Config::default();
        config.engine.gfal2 = Gfal2Mode::Off;
        config.engine.http_backend = HttpBackendChoice::Gfal2;
        assert!(matches!(
            config.resolve(),
            Err(ConfigError::HttpBackendWithoutGfal2)
        ));
        let err = Config::parse(
            "[engine]\nhttp_backend = \"curl\"\n",
            Path::new("ftsd.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("http_backend"), "{err}");
    }

    // ---- the packaged configuration (packaging/ftsd.toml, /etc/ftsd/ftsd.toml) ----

    const PACKAGED: &str = include_str!("../packaging/ftsd.toml");

    /// Config's field names as serde knows them, asked of a deserializer that only listens.
    fn config_fields() -> Vec<&'static str> {
        #[derive(Debug)]
        struct Fields(Vec<&'static str>);
        impl fmt::Display for Fields {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
        impl std::error::Error for Fields {}
        impl serde::de::Error for Fields {
            fn custom<T: fmt::Display>(_: T) -> Self {
                Fields(Vec::new())
            }
        }
        struct Listen;
        impl<'de> Deserializer<'de> for Listen {
            type Error = Fields;
            fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
                Err(Fields(Vec::new()))
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Fields> {
                Err(Fields(fields.to_vec()))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
                identifier ignored_any
            }
        }
        Config::deserialize(Listen).unwrap_err().0
    }

    /// `#name = value` and `#[table]` lines are options left at their default (doc comments
    /// start with "# "): remove the '#'.
    fn enable_all(text: &str) -> String {
        text.lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '[') => {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn node_name_is_a_host_name_or_refused() {
        let parse = |text: &str| {
            Config::parse(text, Path::new("ftsd.toml"))
                .unwrap()
                .resolve()
        };
        assert_eq!(parse("").unwrap().node_name, None);
        assert_eq!(
            parse("node_name = \"fts-01.example_org\"")
                .unwrap()
                .node_name
                .as_deref(),
            Some("fts-01.example_org")
        );
        for bad in ["", "two words", "a/b", "é"] {
            let err = parse(&format!("node_name = {bad:?}")).unwrap_err();
            assert!(matches!(err, ConfigError::NodeName(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_packaged_configuration_documents_every_option() {
        let fields = config_fields();
        assert!(
            fields.contains(&"listen") && fields.contains(&"roles"),
            "{fields:?}"
        );
        // An option whose default is computed at start (`node_name`: the host name) cannot be
        // shown commented out with its default: it is shown as `# For example: name = value`.
        const EXAMPLE: &str = "# For example: ";
        let enabled = enable_all(PACKAGED);
        for field in fields {
            let set = enabled.lines().any(|l| {
                let l = l.strip_prefix(EXAMPLE).unwrap_or(l);
                l.split_once('=').is_some_and(|(k, _)| k.trim() == field)
                    || l.trim() == format!("[{field}]")
            });
            assert!(set, "packaging/ftsd.toml does not mention option {field:?}");
            // Its documentation comes right before it.
            let pos = enabled
                .lines()
                .position(|l| {
                    let l = l.strip_prefix(EXAMPLE).unwrap_or(l);
                    l.starts_with(field) || l.trim() == format!("[{field}]")
                })
                .unwrap();
            let before = enabled.lines().nth(pos - 1).unwrap_or("");
            assert!(
                before.starts_with("# "),
                "option {field:?} has no comment above it"
            );
        }
    }

    #[test]
    fn the_packaged_configuration_is_a_grid_service_and_its_defaults_are_true() {
        let config = Config::parse(PACKAGED, Path::new("ftsd.toml")).unwrap();
        assert_eq!(config.listen.to_string(), "[::]:8446");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/ftsd"));
        let resolved = config.resolve().unwrap();
        assert_eq!(
            resolved.host_cert,
            PathBuf::from("/etc/grid-security/hostcert.pem")
        );
        assert_eq!(
            resolved.host_key,
            PathBuf::from("/etc/grid-security/hostkey.pem")
        );
        assert_eq!(resolved.ca_dir, PathBuf::from(GRID_CA_DIR));
        assert_eq!(resolved.voms_dir, PathBuf::from(GRID_VOMS_DIR));
        // The options left commented out show the built-in defaults, truly.
        let disabled_only: String = enable_all(PACKAGED)
            .lines()
            .zip(PACKAGED.lines())
            .filter(|(enabled, original)| enabled != original)
            .map(|(enabled, _)| format!("{enabled}\n"))
            .collect();
        assert!(disabled_only.contains("max_connections"), "{disabled_only}");
        let shown = Config::parse(&disabled_only, Path::new("ftsd.toml")).unwrap();
        assert_eq!(format!("{shown:?}"), format!("{:?}", Config::default()));
        // And the whole file, every option enabled, is still valid.
        Config::parse(&enable_all(PACKAGED), Path::new("ftsd.toml"))
            .unwrap()
            .resolve()
            .unwrap();
    }
}

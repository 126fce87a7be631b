//! Service configuration: one TOML file, every field documented and defaulted, so that an empty
//! file (or none at all) gives a working development service.
//!
//! Paths left unset are resolved by [`Config::resolve`]: with no host certificate configured the
//! service makes and uses a throwaway dev PKI under the data directory; with one, the grid
//! defaults (`/etc/grid-security/...`) apply.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::model::identity::{RoleGrantError, RoleGrants};

/// Errors in the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("[roles] {0}")]
    Roles(#[from] RoleGrantError),
}

/// Default listen address: the reference's port, loopback only until an operator opens it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8446";
pub const DEFAULT_DATA_DIR: &str = "./ftsd-data";
pub const GRID_CA_DIR: &str = "/etc/grid-security/certificates";
pub const GRID_VOMS_DIR: &str = "/etc/grid-security/vomsdir";

/// The configuration file, as written by an operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port to listen on (HTTPS). Default `127.0.0.1:8446`.
    pub listen: SocketAddr,
    /// Where the database and generated files live. Default `./ftsd-data`. Created 0700.
    pub data_dir: PathBuf,
    /// Host certificate (PEM, may include its chain). Unset: a dev PKI is generated in
    /// `<data_dir>/dev-pki` and used for everything below.
    pub host_cert: Option<PathBuf>,
    /// Host private key (PEM). Default: `host_cert` with `cert` replaced by `key` in the file name.
    pub host_key: Option<PathBuf>,
    /// Trusted CAs in the `/etc/grid-security/certificates` layout (`<hash>.0`, `<hash>.r0`).
    pub ca_dir: Option<PathBuf>,
    /// VOMS trust (`<vo>/<host>.lsc`), the `X509_VOMS_DIR` layout.
    pub voms_dir: Option<PathBuf>,
    /// Most connections served at once; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Role grants, as the reference's `[roles]` section: `role = "level:operation;..."`.
    /// `public` applies to every authenticated user. Default `public = "vo:transfer;all:datamanagement"`.
    pub roles: BTreeMap<String, String>,
}

/// Default connection limit: generous for a small site, small enough that a connection flood
/// cannot exhaust file descriptors (each connection holds one socket and a TLS state).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.parse().expect("constant address parses"),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            host_cert: None,
            host_key: None,
            ca_dir: None,
            voms_dir: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            roles: BTreeMap::from([(
                "public".to_string(),
                "vo:transfer;all:datamanagement".to_string(),
            )]),
        }
    }
}

/// Paths and settings with every default applied.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub host_cert: PathBuf,
    pub host_key: PathBuf,
    pub ca_dir: PathBuf,
    pub voms_dir: PathBuf,
    pub max_connections: usize,
    pub roles: RoleGrants,
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

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Where the dev PKI lives when no host certificate is configured.
    pub fn dev_pki_dir(&self) -> PathBuf {
        self.data_dir.join("dev-pki")
    }

    /// Apply defaults. `dev_pki` is the dev PKI directory to use when no host certificate is set.
    pub fn resolve(&self) -> Result<Resolved, ConfigError> {
        let roles = RoleGrants::parse(self.roles.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
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
        Ok(Resolved {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            host_cert,
            host_key,
            ca_dir: self.ca_dir.clone().unwrap_or(ca_default),
            voms_dir: self.voms_dir.clone().unwrap_or(voms_default),
            max_connections: self.max_connections.max(1),
            roles,
        })
    }

    /// True when the service will run on a generated dev PKI.
    pub fn uses_dev_pki(&self) -> bool {
        self.host_cert.is_none()
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
}

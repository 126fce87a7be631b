//! The `[messages]` section: monitoring messages to a STOMP broker, with FTS3's knobs
//! (`fts-msg-monitoring.conf`: BROKER, SSL, SSL_ROOT_CA, SSL_CLIENT_KEYSTORE, USERNAME,
//! PASSWORD, TOPIC, START/COMPLETE/STATE/OPTIMIZER, TTL, ALIAS, PUBLISH_FQDN). Off unless
//! `brokers` is set. The password never appears in logs or `Debug` output.

use std::{fmt, path::PathBuf};

use serde::Deserialize;

use crate::model::message::{Kind, Kinds};

/// FTS3's default TTL of a message (`TTL=24`, hours).
pub const DEFAULT_TTL_HOURS: u64 = 24;

/// Default bound of the outbox: about a day of a busy node's messages (FTS3 nodes at CERN send
/// a few per second each) at roughly 2 KB each, 2 GB of disk at worst. Past it the oldest are
/// dropped with a counted warning, so that a broker outage can never fill the disk or stop
/// transfers.
pub const DEFAULT_OUTBOX_MAX: u64 = 1_000_000;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagesConfig {
    /// Brokers as `host:port`; a DNS name resolving to several hosts counts as several (one
    /// connection each, round-robin). Empty (the default): no messages are made or sent.
    pub brokers: Vec<String>,
    /// TLS to the brokers (FTS3 `SSL`). Default false.
    pub tls: bool,
    /// CAs to verify brokers with: a PEM file or a directory of `*.pem`/`*.0` (FTS3
    /// `SSL_ROOT_CA`). Default: the service's `ca_dir`.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) to log in with over TLS (FTS3 `SSL_CLIENT_KEYSTORE`).
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM). Default: `client_cert` (a file holding both, as FTS3's keystore).
    pub client_key: Option<PathBuf>,
    /// STOMP `login` (FTS3 `USERNAME`).
    pub username: Option<String>,
    /// STOMP `passcode` (FTS3 `PASSWORD`).
    pub password: Option<String>,
    /// STOMP `host` header, RabbitMQ's virtual host (ActiveMQ ignores it). Default `/`.
    pub vhost: String,
    /// true (FTS3's default): `/topic/transfer.fts_monitoring_*`; false: `/queue/…`.
    pub topic: bool,
    /// Transfer start messages (ST). Default true.
    pub start: bool,
    /// Transfer completion messages (CO), the ones Rucio reads. Default true.
    pub complete: bool,
    /// File state changes (SS). Default true.
    pub state: bool,
    /// Optimizer decisions (OP). Default true.
    pub optimizer: bool,
    /// Message lifetime in hours: the `expires` header, and the age past which a message still
    /// in the outbox is dropped. Default 24.
    pub ttl_hours: u64,
    /// The `endpnt` of every message, the name consumers know this FTS by (Rucio matches it
    /// with the FTS host it submitted to). Default: this node's name.
    pub alias: Option<String>,
    /// Add `fqdn` (this node's name) to every message. Default false.
    pub publish_fqdn: bool,
    /// Most messages kept waiting for the broker (see [`DEFAULT_OUTBOX_MAX`]).
    pub outbox_max: u64,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        MessagesConfig {
            brokers: Vec::new(),
            tls: false,
            ca: None,
            client_cert: None,
            client_key: None,
            username: None,
            password: None,
            vhost: "/".into(),
            topic: true,
            start: true,
            complete: true,
            state: true,
            optimizer: true,
            ttl_hours: DEFAULT_TTL_HOURS,
            alias: None,
            publish_fqdn: false,
            outbox_max: DEFAULT_OUTBOX_MAX,
        }
    }
}

impl fmt::Debug for MessagesConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessagesConfig")
            .field("brokers", &self.brokers)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("topic", &self.topic)
            .field("ttl_hours", &self.ttl_hours)
            .field("alias", &self.alias)
            .finish_non_exhaustive()
    }
}

impl MessagesConfig {
    /// Whether messages are on (some broker configured).
    pub fn enabled(&self) -> bool {
        !self.brokers.is_empty()
    }

    /// The message types produced; none when off.
    pub fn kinds(&self) -> Kinds {
        if !self.enabled() {
            return Kinds::NONE;
        }
        let mut kinds = Vec::new();
        for (on, kind) in [
            (self.start, Kind::Start),
            (self.complete, Kind::Complete),
            (self.state, Kind::State),
            (self.optimizer, Kind::Optimizer),
        ] {
            if on {
                kinds.push(kind);
            }
        }
        Kinds::of(&kinds)
    }

    /// What is wrong with the values themselves (files are checked by `check-config` and at
    /// start): one message per problem.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for b in &self.brokers {
            let ok = b
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                out.push(("brokers", format!("{b:?} is not host:port")));
            }
        }
        if self.password.is_some() && self.username.is_none() {
            out.push(("password", "set without username".into()));
        }
        if !self.tls && (self.client_cert.is_some() || self.client_key.is_some()) {
            out.push(("client_cert", "set without tls = true".into()));
        }
        if self.ttl_hours == 0 {
            out.push(("ttl_hours", "0 would expire every message at once".into()));
        }
        if self.outbox_max == 0 {
            out.push(("outbox_max", "0 would drop every message".into()));
        }
        if self.enabled() && self.kinds().is_empty() {
            out.push((
                "start",
                "brokers are set but start, complete, state and optimizer are all false".into(),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> MessagesConfig {
        let config = crate::config::Config::parse(text, std::path::Path::new("ftsd.toml")).unwrap();
        config.messages
    }

    #[test]
    fn off_unless_brokers_are_set() {
        let m = parse("");
        assert!(!m.enabled());
        assert!(m.kinds().is_empty());
        assert!(m.problems().is_empty());
    }

    #[test]
    fn fts3s_knobs_parse_and_choose_the_kinds() {
        let m = parse(
            "[messages]\nbrokers = [\"mq.example.org:61613\"]\ntopic = false\nstart = false\n\
             optimizer = false\nttl_hours = 2\nalias = \"fts3.example.org\"\npublish_fqdn = true\n",
        );
        assert!(m.enabled());
        assert!(!m.topic);
        assert_eq!(m.kinds(), Kinds::of(&[Kind::Complete, Kind::State]));
        assert_eq!(m.ttl_hours, 2);
        assert!(m.problems().is_empty());
    }

    #[test]
    fn bad_values_are_named() {
        let m = parse(
            "[messages]\nbrokers = [\"nohost\", \"h:0\"]\npassword = \"secret\"\n\
             client_cert = \"/x.pem\"\nttl_hours = 0\n",
        );
        let fields: Vec<&str> = m.problems().iter().map(|(f, _)| *f).collect();
        assert_eq!(
            fields,
            ["brokers", "brokers", "password", "client_cert", "ttl_hours"]
        );
        assert!(
            !format!("{m:?}").contains("secret"),
            "the password stays out of Debug"
        );
        let err = crate::config::Config::parse(
            "[messages]\nbrokers = [\"nohost\"]\n",
            std::path::Path::new("f"),
        )
        .unwrap()
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("[messages] brokers"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err =
            crate::config::Config::parse("[messages]\nbroker = \"x\"\n", std::path::Path::new("f"))
                .unwrap_err();
        assert!(err.to_string().contains("broker"), "{err}");
    }

    #[test]
    fn check_config_reports_messages() {
        use crate::config::{Config, Severity};
        let find = |text: &str, field: &str| {
            let config = Config::parse(text, std::path::Path::new("f")).unwrap();
            config
                .check()
                .into_iter()
                .find(|f| f.field == field)
                .map(|f| (f.severity, f.message))
        };
        let off = find("", "messages").unwrap();
        assert_eq!(off.0, Severity::Info);
        assert!(off.1.contains("off"), "{}", off.1);
        let on = find(
            "[messages]\nbrokers = [\"mq:61613\"]\nstate = false\n",
            "messages",
        )
        .unwrap();
        assert_eq!(on.0, Severity::Ok);
        assert!(
            on.1.starts_with("ST CO OP to mq:61613 (topics)"),
            "{}",
            on.1
        );
        let tls = find(
            "[messages]\nbrokers = [\"mq:61613\"]\ntls = true\nca = \"/nonexistent/ca.pem\"\n",
            "messages.tls",
        )
        .unwrap();
        assert_eq!(tls.0, Severity::Error);
        assert!(tls.1.contains("/nonexistent/ca.pem"), "{}", tls.1);
        let clear = find(
            "[messages]\nbrokers = [\"mq:61613\"]\nusername = \"u\"\npassword = \"p\"\n",
            "messages.password",
        )
        .unwrap();
        assert_eq!(clear.0, Severity::Warning);
    }
}

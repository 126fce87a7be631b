//! Operator configuration (`/config/*`, §3.9 of the API spec): hosts and drain, server
//! settings, links, VO shares, storages, activity shares and DN grants. Every use case needs the
//! `config` level (activity shares and grants also a certificate); every change writes its
//! audit entries in the transaction of the change.
//!
//! Bodies are parsed at the edge into typed requests (`*Request::parse`, called by `api`); a body
//! the reference refuses gives its 400 only after the caller's rights are checked, as there
//! ([`Parsed`]). Validation is atomic: the whole input is checked before anything is written, so
//! a refused request leaves the store (and the audit) untouched.
//!
//! Decisions where the reference is silent or broken:
//! - deleting server settings or a storage's configuration writes an audit entry
//!   (`delete-globals`, `delete-se-config`); the reference writes none;
//! - a VO share on a link without configuration is refused with 400
//!   `"No link configured from <source> to <destination>"`: the reference's foreign key makes
//!   this a database error (500 on MySQL, silently accepted by its SQLite tests);
//! - an unknown VO on `GET /config/activity_shares/<vo>` is 404 `"No activity shares for <vo>"`
//!   (a 500 in the reference).

use serde_json::{Map, Value};

use super::{Parsed, Service, ServiceError};
use crate::{
    model::{
        config::{
            ANY, ActivityShare, FieldType, FieldValue, Host, LinkConfig, OperationLimit, SeConfig,
            SeUpdate, ServerConfig, ShareConfig, activity_share_text, coerce,
        },
        identity::{AuthMethod, User},
        submit::{python_int, python_int_or_error, python_truthy, storage_element},
        time,
    },
    store::interface::FieldChanges,
};

fn bad(m: impl Into<String>) -> ServiceError {
    ServiceError::BadRequest(m.into())
}

/// `input.get(key)` as Python sees it: a missing key and JSON `null` are both "nothing".
fn get<'a>(input: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    input.get(key).filter(|v| !v.is_null())
}

/// A truthy string parameter.
fn text(input: &Map<String, Value>, key: &str) -> Option<String> {
    match get(input, key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// A parameter that is present and not empty.
fn nonempty(v: Option<&str>) -> Option<&str> {
    v.filter(|s| !s.is_empty())
}

/// The reply of `POST /config/se`: the last storage's stored settings and limits input.
pub type SeReply = (Option<SeConfig>, Option<Value>);

/// `POST /config/drain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainRequest {
    pub hostname: String,
    pub drain: bool,
}

impl DrainRequest {
    pub fn parse(input: &Map<String, Value>) -> Parsed<DrainRequest> {
        let drain = match input.get("drain") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("Invalid drain request")),
        };
        let Some(Value::String(hostname)) = input.get("hostname") else {
            return Err(bad("Invalid drain request"));
        };
        Ok(DrainRequest {
            hostname: hostname.clone(),
            drain,
        })
    }
}

/// `POST /config/global`: the VO's row and the checked fields to set.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalConfigRequest {
    pub vo: String,
    pub fields: FieldChanges,
}

impl GlobalConfigRequest {
    pub fn parse(input: &Map<String, Value>) -> Parsed<GlobalConfigRequest> {
        let vo = match input.get("vo_name") {
            None => ANY.to_string(),
            Some(v) => match coerce("vo_name", v, FieldType::Str).map_err(bad)? {
                FieldValue::Str(s) => s,
                _ => return Err(bad("Field vo_name is expected to be str")),
            },
        };
        let mut fields = Vec::with_capacity(input.len());
        for (key, value) in input {
            fields.push((key.clone(), ServerConfig::check(key, value).map_err(bad)?));
        }
        Ok(GlobalConfigRequest { vo, fields })
    }
}

/// `POST /config/links`: the link's name, the row to start from when it is new, the checked
/// fields, and the input as the audit records it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkRequest {
    pub name: String,
    pub fresh: LinkConfig,
    pub fields: FieldChanges,
    pub audit_text: String,
}

impl LinkRequest {
    pub fn parse(input: &Map<String, Value>) -> Parsed<LinkRequest> {
        let name = match get(input, "symbolicname") {
            Some(v) if python_truthy(v) => v,
            _ => return Err(bad("Missing symbolicname")),
        };
        let Value::String(name) = name else {
            return Err(bad("Field symbolicname is expected to be str"));
        };
        let source = input.get("source").cloned().unwrap_or(Value::from(ANY));
        let destination = input
            .get("destination")
            .cloned()
            .unwrap_or(Value::from(ANY));
        let active = |key: &str| {
            let value = input.get(key).cloned().unwrap_or(Value::from(2));
            python_int_or_error(&value).map_err(|e| bad(format!("Active must be an integer ({e})")))
        };
        let min_active = active("min_active")?;
        let max_active = active("max_active")?;
        if !python_truthy(&source) || !python_truthy(&destination) {
            return Err(bad("Missing source and/or destination"));
        }
        if min_active > max_active {
            return Err(bad("max_active is lower than min_active"));
        }
        let mut fresh = LinkConfig {
            source: ANY.into(),
            destination: ANY.into(),
            symbolicname: name.clone(),
            min_active,
            max_active,
            optimizer_mode: None,
            tcp_buffer_size: None,
            nostreams: None,
            no_delegation: None,
        };
        // Check every field before anything is written.
        for (key, value) in [("source", &source), ("destination", &destination)] {
            fresh.set(key, value).map_err(bad)?;
        }
        let mut fields = Vec::with_capacity(input.len());
        for (key, value) in input {
            fields.push((key.clone(), LinkConfig::check(key, value).map_err(bad)?));
        }
        Ok(LinkRequest {
            name: name.clone(),
            fresh,
            fields,
            audit_text: Value::Object(input.clone()).to_string(),
        })
    }
}

/// `POST /config/shares`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRequest(pub ShareConfig);

impl ShareRequest {
    pub fn parse(input: &Map<String, Value>) -> Parsed<ShareRequest> {
        // int(None) raises too: a missing share is a bad value, as in the reference.
        let share = input
            .get("share")
            .and_then(python_int)
            .filter(|s| *s >= 0)
            .ok_or_else(|| bad("Bad share value"))?;
        let truthy = |k: &str| input.get(k).is_some_and(python_truthy);
        if !truthy("source") || !truthy("destination") || !truthy("vo") || share == 0 {
            return Err(bad("Missing source, destination, vo and/or share"));
        }
        // Both ends are reported as "Invalid source", as the reference does.
        let storage = |k: &str| match input.get(k) {
            Some(Value::String(url)) => storage_element(url).ok_or_else(|| bad("Invalid source")),
            _ => Err(bad("Invalid source")),
        };
        let source = storage("source")?;
        let destination = storage("destination")?;
        let Some(Value::String(vo)) = input.get("vo") else {
            return Err(bad("Missing source, destination, vo and/or share"));
        };
        Ok(ShareRequest(ShareConfig {
            source,
            destination,
            vo: vo.clone(),
            share,
        }))
    }
}

/// `POST /config/se`: per storage, its change and the audit entries (action, text) it makes;
/// and the limits input of the last storage (echoed in the reply).
#[derive(Debug, Clone, PartialEq)]
pub struct SeConfigRequest {
    pub updates: Vec<(SeUpdate, Vec<(&'static str, String)>)>,
    pub last_limits: Option<Value>,
}

impl SeConfigRequest {
    pub fn parse(input: &Map<String, Value>) -> Parsed<SeConfigRequest> {
        let malformed = || bad("Malformed configuration");
        let mut updates = Vec::new();
        let mut last_limits = None;
        for (storage, cfg) in input {
            if storage.trim().is_empty() {
                return Err(malformed());
            }
            let Value::Object(cfg) = cfg else {
                return Err(malformed());
            };
            let mut update = SeUpdate {
                storage: storage.clone(),
                se_info: None,
                limits: Vec::new(),
            };
            let mut audits = Vec::new();
            last_limits = None;
            match get(cfg, "se_info") {
                None => {}
                Some(Value::Object(info)) if info.is_empty() => {}
                Some(Value::Object(info)) => {
                    let mut patch = SeConfig {
                        storage: storage.clone(),
                        ..Default::default()
                    };
                    for (key, value) in info {
                        patch.set(key, value).map_err(bad)?;
                    }
                    audits.push((
                        "set-se-config",
                        format!("Set config {storage}: {}", Value::Object(cfg.clone())),
                    ));
                    update.se_info = Some(patch);
                }
                Some(_) => return Err(malformed()),
            }
            match get(cfg, "operations") {
                None => {}
                Some(Value::Object(ops)) if ops.is_empty() => {}
                Some(Value::Object(ops)) => {
                    for (vo, limits) in ops {
                        let Value::Object(limits) = limits else {
                            return Err(malformed());
                        };
                        for (operation, limit) in limits {
                            let n = match coerce("concurrent_ops", limit, FieldType::Int)
                                .map_err(bad)?
                            {
                                FieldValue::Int(n) => n,
                                _ => return Err(bad("Field concurrent_ops is expected to be int")),
                            };
                            update.limits.push(OperationLimit {
                                vo_name: vo.clone(),
                                host: storage.clone(),
                                operation: operation.clone(),
                                concurrent_ops: n,
                            });
                        }
                    }
                    audits.push((
                        "set-se-limits",
                        format!("Set limits for {storage}: {}", Value::Object(ops.clone())),
                    ));
                    last_limits = Some(Value::Object(ops.clone()));
                }
                Some(_) => return Err(malformed()),
            }
            updates.push((update, audits));
        }
        Ok(SeConfigRequest {
            updates,
            last_limits,
        })
    }
}

/// `POST /config/activity_shares`: the row, and the input as the audit records it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityShareRequest {
    pub row: ActivityShare,
    pub audit_text: String,
}

impl ActivityShareRequest {
    pub fn parse(input: &Map<String, Value>) -> Parsed<ActivityShareRequest> {
        let vo = match input.get("vo") {
            Some(v) if python_truthy(v) => v,
            _ => return Err(bad("Missing VO")),
        };
        let Value::String(vo) = vo else {
            return Err(bad("Field vo is expected to be str"));
        };
        let share = match input.get("share") {
            Some(v) if python_truthy(v) => v,
            _ => return Err(bad("Missing share")),
        };
        let text = activity_share_text(share).map_err(bad)?;
        let active = match input.get("active") {
            None => true,
            Some(v) => match coerce("active", v, FieldType::Bool).map_err(bad)? {
                FieldValue::Bool(b) => b,
                _ => return Err(bad("Field active is expected to be bool")),
            },
        };
        let row = ActivityShare {
            vo: vo.clone(),
            activity_share: text,
            active,
        };
        let mut audited = input.clone();
        audited.insert("active".into(), Value::Bool(active));
        audited.insert("share".into(), Value::Array(row.share_list()));
        Ok(ActivityShareRequest {
            row,
            audit_text: Value::Object(audited).to_string(),
        })
    }
}

/// `POST /config/authorize`: a DN and the operation granted to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRequest {
    pub dn: String,
    pub operation: String,
}

impl GrantRequest {
    pub fn parse(input: &Map<String, Value>) -> Parsed<GrantRequest> {
        let (Some(dn), Some(operation)) = (text(input, "dn"), text(input, "operation")) else {
            return Err(bad("Missing dn and/or operation"));
        };
        if operation == ADMIN {
            return Err(bad(ADMIN_MESSAGE));
        }
        Ok(GrantRequest { dn, operation })
    }
}

impl Service {
    fn require_certificate(&self, user: &User) -> Result<(), ServiceError> {
        if user.method != AuthMethod::Certificate {
            return Err(ServiceError::Forbidden("Certificate required".into()));
        }
        Ok(())
    }

    // --- Hosts and drain -----------------------------------------------------------------

    /// `GET /config`.
    pub async fn hosts(&self, user: &User) -> Result<Vec<Host>, ServiceError> {
        self.require_config(user)?;
        Ok(self.store.hosts().await?)
    }

    /// `POST /config/drain`.
    pub async fn set_drain(
        &self,
        user: &User,
        input: Parsed<DrainRequest>,
    ) -> Result<(), ServiceError> {
        self.require_config(user)?;
        let DrainRequest { hostname, drain } = input?;
        // Python's `str(bool)` in the reference's text.
        let word = if drain { "True" } else { "False" };
        let audit = self.audit(
            user,
            "drain",
            format!("Turning drain {word} the drain mode for {hostname}"),
        );
        if !self.store.set_drain(&hostname, drain, &audit).await? {
            return Err(bad("Host not found"));
        }
        tracing::warn!(host = %hostname, drain, admin = %user.user_dn, "drain changed");
        Ok(())
    }

    // --- Server settings -----------------------------------------------------------------

    /// `GET /config/global`: every row, by VO.
    pub async fn global_config(&self, user: &User) -> Result<Vec<ServerConfig>, ServiceError> {
        self.require_config(user)?;
        Ok(self.store.server_configs().await?)
    }

    /// `POST /config/global`: returns every row afterwards (the GET representation).
    pub async fn set_global_config(
        &self,
        user: &User,
        input: Parsed<GlobalConfigRequest>,
    ) -> Result<Vec<ServerConfig>, ServiceError> {
        self.require_config(user)?;
        let request = input?;
        // The store sets the audit text to the stored row.
        let audit = self.audit(user, "set-globals", String::new());
        self.store
            .set_server_config(&request.vo, &request.fields, &audit)
            .await?;
        Ok(self.store.server_configs().await?)
    }

    /// `DELETE /config/global?vo_name=`.
    pub async fn delete_global_config(
        &self,
        user: &User,
        vo: Option<&str>,
    ) -> Result<(), ServiceError> {
        self.require_config(user)?;
        let vo = vo
            .filter(|v| !v.is_empty() && *v != ANY)
            .ok_or_else(|| bad("Missing VO name"))?;
        let audit = self.audit(
            user,
            "delete-globals",
            format!("Server configuration for {vo} removed"),
        );
        self.store.delete_server_config(vo, &audit).await?;
        Ok(())
    }

    // --- Links ---------------------------------------------------------------------------

    /// `GET /config/links`.
    pub async fn links(&self, user: &User) -> Result<Vec<LinkConfig>, ServiceError> {
        self.require_config(user)?;
        Ok(self.store.link_configs().await?)
    }

    /// `GET /config/links/<name>`.
    pub async fn link(&self, user: &User, name: &str) -> Result<LinkConfig, ServiceError> {
        self.require_config(user)?;
        self.store
            .link_by_name(name)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("Link {name} does not exist")))
    }

    /// `POST /config/links`: the stored link.
    pub async fn set_link(
        &self,
        user: &User,
        input: Parsed<LinkRequest>,
    ) -> Result<LinkConfig, ServiceError> {
        self.require_config(user)?;
        let request = input?;
        let audit = self.audit(user, "link", request.audit_text.clone());
        let link = self
            .store
            .set_link(&request.name, &request.fresh, &request.fields, &audit)
            .await?;
        Ok(link)
    }

    /// `DELETE /config/links/<name>` (also when there is no such link, as the reference).
    pub async fn delete_link(&self, user: &User, name: &str) -> Result<(), ServiceError> {
        self.require_config(user)?;
        let audit = self.audit(user, "link-delete", format!("Link {name} has been deleted"));
        self.store.delete_link(name, &audit).await?;
        Ok(())
    }

    // --- VO shares -----------------------------------------------------------------------

    /// `GET /config/shares`.
    pub async fn shares(&self, user: &User) -> Result<Vec<ShareConfig>, ServiceError> {
        self.require_config(user)?;
        Ok(self.store.shares().await?)
    }

    /// `POST /config/shares`: the share value.
    pub async fn set_share(
        &self,
        user: &User,
        input: Parsed<ShareRequest>,
    ) -> Result<i64, ServiceError> {
        self.require_config(user)?;
        let ShareRequest(row) = input?;
        let share = row.share;
        let audit = self.audit(
            user,
            "share-set",
            format!(
                "Share {}, {}, {} has been set to {share}",
                row.source, row.destination, row.vo
            ),
        );
        if !self.store.set_share(&row, &audit).await? {
            return Err(bad(format!(
                "No link configured from {} to {}",
                row.source, row.destination
            )));
        }
        Ok(share)
    }

    /// `DELETE /config/shares?source=&destination=&vo=`.
    pub async fn delete_share(
        &self,
        user: &User,
        source: Option<&str>,
        destination: Option<&str>,
        vo: Option<&str>,
    ) -> Result<(), ServiceError> {
        self.require_config(user)?;
        let (Some(source), Some(destination), Some(vo)) =
            (nonempty(source), nonempty(destination), nonempty(vo))
        else {
            return Err(bad("Missing source, destination and/or vo"));
        };
        let audit = self.audit(
            user,
            "share-delete",
            format!("Share {source}, {destination}, {vo} has been deleted"),
        );
        self.store
            .delete_share(source, destination, vo, &audit)
            .await?;
        Ok(())
    }

    // --- Storages ------------------------------------------------------------------------

    /// `GET /config/se[?se=]`.
    pub async fn se_configs(
        &self,
        user: &User,
        se: Option<&str>,
    ) -> Result<(Vec<SeConfig>, Vec<OperationLimit>), ServiceError> {
        self.require_config(user)?;
        Ok(self.store.se_configs(se.filter(|s| !s.is_empty())).await?)
    }

    /// `POST /config/se`: writes every storage's settings and limits (and their audit entries)
    /// in one transaction.
    pub async fn set_se_config(
        &self,
        user: &User,
        input: Parsed<SeConfigRequest>,
    ) -> Result<SeReply, ServiceError> {
        self.require_config(user)?;
        let request = input?;
        let mut updates = Vec::with_capacity(request.updates.len());
        let mut audits = Vec::new();
        for (update, texts) in request.updates {
            for (action, text) in texts {
                audits.push(self.audit(user, action, text));
            }
            updates.push(update);
        }
        self.store.set_se_configs(&updates, &audits).await?;
        let mut reply: SeReply = (None, request.last_limits);
        if let Some(last) = updates.last().filter(|u| u.se_info.is_some()) {
            let (ses, _) = self.store.se_configs(Some(&last.storage)).await?;
            reply.0 = ses.into_iter().next();
        }
        Ok(reply)
    }

    /// `DELETE /config/se?se=`.
    pub async fn delete_se_config(
        &self,
        user: &User,
        se: Option<&str>,
    ) -> Result<(), ServiceError> {
        self.require_config(user)?;
        let se = se
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("Missing storage (se)"))?;
        let audit = self.audit(
            user,
            "delete-se-config",
            format!("Configuration of {se} removed"),
        );
        self.store.delete_se_config(se, &audit).await?;
        Ok(())
    }

    // --- Activity shares -----------------------------------------------------------------

    /// `GET /config/activity_shares`.
    pub async fn activity_shares(&self, user: &User) -> Result<Vec<ActivityShare>, ServiceError> {
        self.require_certificate(user)?;
        self.require_config(user)?;
        Ok(self.store.activity_share_rows().await?)
    }

    /// `GET /config/activity_shares/<vo>`.
    pub async fn activity_share(
        &self,
        user: &User,
        vo: &str,
    ) -> Result<ActivityShare, ServiceError> {
        self.require_certificate(user)?;
        self.require_config(user)?;
        self.store
            .activity_share_row(vo)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("No activity shares for {vo}")))
    }

    /// `POST /config/activity_shares`: the stored row.
    pub async fn set_activity_share(
        &self,
        user: &User,
        input: Parsed<ActivityShareRequest>,
    ) -> Result<ActivityShare, ServiceError> {
        self.require_certificate(user)?;
        self.require_config(user)?;
        let request = input?;
        let audit = self.audit(user, "activity-share", request.audit_text);
        self.store.set_activity_share(&request.row, &audit).await?;
        Ok(request.row)
    }

    /// `DELETE /config/activity_shares/<vo>`.
    pub async fn delete_activity_share(&self, user: &User, vo: &str) -> Result<(), ServiceError> {
        self.require_certificate(user)?;
        self.require_config(user)?;
        let audit = self.audit(
            user,
            "activity-share",
            format!("Activity share removed for \"{vo}\""),
        );
        if !self.store.delete_activity_share(vo, &audit).await? {
            return Err(ServiceError::NotFound(format!(
                "No activity shares for {vo}"
            )));
        }
        Ok(())
    }

    // --- DN grants -----------------------------------------------------------------------

    /// `GET /config/authorize[?dn=&operation=]`: `(dn, operation)` pairs.
    pub async fn grants(
        &self,
        user: &User,
        dn: Option<&str>,
        operation: Option<&str>,
    ) -> Result<Vec<(String, String)>, ServiceError> {
        self.require_certificate(user)?;
        self.require_config(user)?;
        Ok(self
            .store
            .list_grants(nonempty(dn), nonempty(operation))
            .await?
            .into_iter()
            .map(|g| (g.dn, g.operation))
            .collect())
    }

    /// `POST /config/authorize`: the grant.
    pub async fn grant(
        &self,
        user: &User,
        input: Parsed<GrantRequest>,
    ) -> Result<(String, String), ServiceError> {
        self.require_certificate(user)?;
        self.require_config(user)?;
        let GrantRequest { dn, operation: op } = input?;
        let audit = self.audit(user, "authorize", format!("{op} granted to \"{dn}\""));
        if self.store.grant_dn(&dn, &op, time::now(), &audit).await? {
            tracing::warn!(dn = %dn, operation = %op, admin = %user.user_dn, "operation granted");
        }
        Ok((dn, op))
    }

    /// `DELETE /config/authorize?dn=[&operation=]`: never revokes `admin`.
    pub async fn revoke(
        &self,
        user: &User,
        dn: Option<&str>,
        operation: Option<&str>,
    ) -> Result<(), ServiceError> {
        self.require_certificate(user)?;
        self.require_config(user)?;
        let dn = dn
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("Missing DN parameter"))?;
        let operation = operation.filter(|s| !s.is_empty());
        if operation == Some(ADMIN) {
            return Err(bad(ADMIN_MESSAGE));
        }
        let text = match operation {
            Some(op) => format!("{op} revoked for \"{dn}\""),
            None => format!("All revoked for \"{dn}\""),
        };
        let audit = self.audit(user, "revoke", text);
        let removed = self
            .store
            .revoke_dn(dn, operation, &[ADMIN], &audit)
            .await?;
        tracing::warn!(dn = %dn, removed, admin = %user.user_dn, "grants revoked");
        Ok(())
    }
}

/// The operation only database access may grant or revoke.
const ADMIN: &str = "admin";
const ADMIN_MESSAGE: &str = "'admin' level can only be changed via database access";

//! Operator configuration (`/config/*`, §3.9 of the API spec): hosts and drain, server
//! settings, links, VO shares, storages, activity shares and DN grants. Every use case needs the
//! `config` level (activity shares and grants also a certificate); every change writes its
//! audit entries in the transaction of the change.
//!
//! Validation is atomic: the whole input is checked before anything is written, so a refused
//! request leaves the store (and the audit) untouched.
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

use super::{Service, ServiceError};
use crate::{
    model::{
        config::{
            ANY, ActivityShare, FieldType, Host, LinkConfig, OperationLimit, SeConfig,
            ServerConfig, ShareConfig, activity_share_text, coerce,
        },
        identity::{AuthMethod, User},
        submit::{python_int, python_int_or_error, python_truthy, storage_element},
        time,
    },
    store::config::SeUpdate,
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

/// The caller must have presented a certificate.
pub(super) fn require_certificate(user: &User) -> Result<(), ServiceError> {
    if user.method != AuthMethod::Certificate {
        return Err(ServiceError::Forbidden("Certificate required".into()));
    }
    Ok(())
}

impl Service {
    // --- Hosts and drain -----------------------------------------------------------------

    /// `GET /config`.
    pub fn hosts(&self, user: &User) -> Result<Vec<Host>, ServiceError> {
        self.require_config(user)?;
        Ok(self.store.hosts()?)
    }

    /// `POST /config/drain`.
    pub fn set_drain(&self, user: &User, input: &Map<String, Value>) -> Result<(), ServiceError> {
        self.require_config(user)?;
        let drain = match input.get("drain") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("Invalid drain request")),
        };
        let Some(Value::String(hostname)) = input.get("hostname") else {
            return Err(bad("Invalid drain request"));
        };
        // Python's `str(bool)` in the reference's text.
        let word = if drain { "True" } else { "False" };
        let audit = self.audit(
            user,
            "drain",
            format!("Turning drain {word} the drain mode for {hostname}"),
        );
        if !self.store.set_drain(hostname, drain, &audit)? {
            return Err(bad("Host not found"));
        }
        tracing::warn!(host = %hostname, drain, admin = %user.user_dn, "drain changed");
        Ok(())
    }

    // --- Server settings -----------------------------------------------------------------

    /// `GET /config/global`: every row, by VO.
    pub fn global_config(&self, user: &User) -> Result<Vec<ServerConfig>, ServiceError> {
        self.require_config(user)?;
        Ok(self.store.server_configs()?)
    }

    /// `POST /config/global`: returns every row afterwards (the GET representation).
    pub fn set_global_config(
        &self,
        user: &User,
        input: &Map<String, Value>,
    ) -> Result<Vec<ServerConfig>, ServiceError> {
        self.require_config(user)?;
        let vo = match input.get("vo_name") {
            None => ANY.to_string(),
            Some(v) => match coerce("vo_name", v, FieldType::Str).map_err(bad)? {
                crate::model::config::FieldValue::Str(s) => s,
                _ => return Err(bad("Field vo_name is expected to be str")),
            },
        };
        // Check everything before writing anything.
        let mut scratch = ServerConfig::default();
        for (key, value) in input {
            scratch.set(key, value).map_err(bad)?;
        }
        let audit_user = user.clone();
        self.store.set_server_config(
            &vo,
            |mut row| {
                for (key, value) in input {
                    // Checked above on the same values: `set` cannot fail here (its outcome
                    // does not depend on the row).
                    let _ = row.set(key, value);
                }
                row
            },
            |row| self.audit(&audit_user, "set-globals", row.to_json().to_string()),
        )?;
        Ok(self.store.server_configs()?)
    }

    /// `DELETE /config/global?vo_name=`.
    pub fn delete_global_config(&self, user: &User, vo: Option<&str>) -> Result<(), ServiceError> {
        self.require_config(user)?;
        let vo = vo
            .filter(|v| !v.is_empty() && *v != ANY)
            .ok_or_else(|| bad("Missing VO name"))?;
        let audit = self.audit(
            user,
            "delete-globals",
            format!("Server configuration for {vo} removed"),
        );
        self.store.delete_server_config(vo, &audit)?;
        Ok(())
    }

    // --- Links ---------------------------------------------------------------------------

    /// `GET /config/links`.
    pub fn links(&self, user: &User) -> Result<Vec<LinkConfig>, ServiceError> {
        self.require_config(user)?;
        Ok(self.store.link_configs()?)
    }

    /// `GET /config/links/<name>`.
    pub fn link(&self, user: &User, name: &str) -> Result<LinkConfig, ServiceError> {
        self.require_config(user)?;
        self.store
            .link_by_name(name)?
            .ok_or_else(|| ServiceError::NotFound(format!("Link {name} does not exist")))
    }

    /// `POST /config/links`: the stored link.
    pub fn set_link(
        &self,
        user: &User,
        input: &Map<String, Value>,
    ) -> Result<LinkConfig, ServiceError> {
        self.require_config(user)?;
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
        let fresh = LinkConfig {
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
        // Check every field before writing anything.
        let mut scratch = fresh.clone();
        for (key, value) in [("source", &source), ("destination", &destination)] {
            scratch.set(key, value).map_err(bad)?;
        }
        for (key, value) in input {
            scratch.set(key, value).map_err(bad)?;
        }
        let audit = self.audit(user, "link", Value::Object(input.clone()).to_string());
        let link = self.store.set_link(
            name,
            |old| {
                let mut row = old.unwrap_or_else(|| {
                    let mut row = fresh;
                    // Checked above: cannot fail.
                    let _ = row.set("source", &source);
                    let _ = row.set("destination", &destination);
                    row
                });
                for (key, value) in input {
                    // Checked above on the same values: cannot fail.
                    let _ = row.set(key, value);
                }
                row
            },
            &audit,
        )?;
        Ok(link)
    }

    /// `DELETE /config/links/<name>` (also when there is no such link, as the reference).
    pub fn delete_link(&self, user: &User, name: &str) -> Result<(), ServiceError> {
        self.require_config(user)?;
        let audit = self.audit(user, "link-delete", format!("Link {name} has been deleted"));
        self.store.delete_link(name, &audit)?;
        Ok(())
    }

    // --- VO shares -----------------------------------------------------------------------

    /// `GET /config/shares`.
    pub fn shares(&self, user: &User) -> Result<Vec<ShareConfig>, ServiceError> {
        self.require_config(user)?;
        Ok(self.store.shares()?)
    }

    /// `POST /config/shares`: the share value.
    pub fn set_share(&self, user: &User, input: &Map<String, Value>) -> Result<i64, ServiceError> {
        self.require_config(user)?;
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
        let row = ShareConfig {
            source,
            destination,
            vo: vo.clone(),
            share,
        };
        let audit = self.audit(
            user,
            "share-set",
            format!(
                "Share {}, {}, {} has been set to {share}",
                row.source, row.destination, row.vo
            ),
        );
        if !self.store.set_share(&row, &audit)? {
            return Err(bad(format!(
                "No link configured from {} to {}",
                row.source, row.destination
            )));
        }
        Ok(share)
    }

    /// `DELETE /config/shares?source=&destination=&vo=`.
    pub fn delete_share(
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
        self.store.delete_share(source, destination, vo, &audit)?;
        Ok(())
    }

    // --- Storages ------------------------------------------------------------------------

    /// `GET /config/se[?se=]`.
    pub fn se_configs(
        &self,
        user: &User,
        se: Option<&str>,
    ) -> Result<(Vec<SeConfig>, Vec<OperationLimit>), ServiceError> {
        self.require_config(user)?;
        Ok(self.store.se_configs(se.filter(|s| !s.is_empty()))?)
    }

    /// `POST /config/se`: checks the whole input, then writes every storage's settings and
    /// limits (and their audit entries) in one transaction.
    pub fn set_se_config(
        &self,
        user: &User,
        input: &Map<String, Value>,
    ) -> Result<SeReply, ServiceError> {
        self.require_config(user)?;
        let malformed = || bad("Malformed configuration");
        let mut updates = Vec::new();
        let mut audits = Vec::new();
        let mut reply: SeReply = (None, None);
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
            reply = (None, None);
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
                    audits.push(self.audit(
                        user,
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
                                crate::model::config::FieldValue::Int(n) => n,
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
                    audits.push(self.audit(
                        user,
                        "set-se-limits",
                        format!("Set limits for {storage}: {}", Value::Object(ops.clone())),
                    ));
                    reply.1 = Some(Value::Object(ops.clone()));
                }
                Some(_) => return Err(malformed()),
            }
            updates.push(update);
        }
        self.store.set_se_configs(&updates, &audits)?;
        if let Some(last) = updates.last().filter(|u| u.se_info.is_some()) {
            let (ses, _) = self.store.se_configs(Some(&last.storage))?;
            reply.0 = ses.into_iter().next();
        }
        Ok(reply)
    }

    /// `DELETE /config/se?se=`.
    pub fn delete_se_config(&self, user: &User, se: Option<&str>) -> Result<(), ServiceError> {
        self.require_config(user)?;
        let se = se
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("Missing storage (se)"))?;
        let audit = self.audit(
            user,
            "delete-se-config",
            format!("Configuration of {se} removed"),
        );
        self.store.delete_se_config(se, &audit)?;
        Ok(())
    }

    // --- Activity shares -----------------------------------------------------------------

    /// `GET /config/activity_shares`.
    pub fn activity_shares(&self, user: &User) -> Result<Vec<ActivityShare>, ServiceError> {
        require_certificate(user)?;
        self.require_config(user)?;
        Ok(self.store.activity_share_rows()?)
    }

    /// `GET /config/activity_shares/<vo>`.
    pub fn activity_share(&self, user: &User, vo: &str) -> Result<ActivityShare, ServiceError> {
        require_certificate(user)?;
        self.require_config(user)?;
        self.store
            .activity_share_row(vo)?
            .ok_or_else(|| ServiceError::NotFound(format!("No activity shares for {vo}")))
    }

    /// `POST /config/activity_shares`: the stored row.
    pub fn set_activity_share(
        &self,
        user: &User,
        input: &Map<String, Value>,
    ) -> Result<ActivityShare, ServiceError> {
        require_certificate(user)?;
        self.require_config(user)?;
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
                crate::model::config::FieldValue::Bool(b) => b,
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
        let audit = self.audit(user, "activity-share", Value::Object(audited).to_string());
        self.store.set_activity_share(&row, &audit)?;
        Ok(row)
    }

    /// `DELETE /config/activity_shares/<vo>`.
    pub fn delete_activity_share(&self, user: &User, vo: &str) -> Result<(), ServiceError> {
        require_certificate(user)?;
        self.require_config(user)?;
        let audit = self.audit(
            user,
            "activity-share",
            format!("Activity share removed for \"{vo}\""),
        );
        if !self.store.delete_activity_share(vo, &audit)? {
            return Err(ServiceError::NotFound(format!(
                "No activity shares for {vo}"
            )));
        }
        Ok(())
    }

    // --- DN grants -----------------------------------------------------------------------

    /// `GET /config/authorize[?dn=&operation=]`: `(dn, operation)` pairs.
    pub fn grants(
        &self,
        user: &User,
        dn: Option<&str>,
        operation: Option<&str>,
    ) -> Result<Vec<(String, String)>, ServiceError> {
        require_certificate(user)?;
        self.require_config(user)?;
        Ok(self
            .store
            .list_grants(nonempty(dn), nonempty(operation))?
            .into_iter()
            .map(|g| (g.dn, g.operation))
            .collect())
    }

    /// `POST /config/authorize`: the grant.
    pub fn grant(
        &self,
        user: &User,
        input: &Map<String, Value>,
    ) -> Result<(String, String), ServiceError> {
        require_certificate(user)?;
        self.require_config(user)?;
        let (Some(dn), Some(op)) = (text(input, "dn"), text(input, "operation")) else {
            return Err(bad("Missing dn and/or operation"));
        };
        if op == ADMIN {
            return Err(bad(ADMIN_MESSAGE));
        }
        let audit = self.audit(user, "authorize", format!("{op} granted to \"{dn}\""));
        if self.store.grant_dn_audited(&dn, &op, time::now(), &audit)? {
            tracing::warn!(dn = %dn, operation = %op, admin = %user.user_dn, "operation granted");
        }
        Ok((dn, op))
    }

    /// `DELETE /config/authorize?dn=[&operation=]`: never revokes `admin`.
    pub fn revoke(
        &self,
        user: &User,
        dn: Option<&str>,
        operation: Option<&str>,
    ) -> Result<(), ServiceError> {
        require_certificate(user)?;
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
            .revoke_dn_audited(dn, operation, &[ADMIN], &audit)?;
        tracing::warn!(dn = %dn, removed, admin = %user.user_dn, "grants revoked");
        Ok(())
    }
}

/// The operation only database access may grant or revoke.
const ADMIN: &str = "admin";
const ADMIN_MESSAGE: &str = "'admin' level can only be changed via database access";

//! Bans (`/ban/se`, `/ban/dn`) and the configuration audit (`/config/audit`), all behind the
//! `config` level. Inputs are read the reference's way (Python truthiness for `allow_submit`,
//! `status` in any case, `timeout` and `vo_name` accepted and ignored: the ban VO is the caller's
//! first VO) into typed requests at the edge; every change writes an audit entry in the same transaction as the change.

use serde_json::{Map, Value};

use super::{Service, ServiceError};
use crate::model::{
    audit::AuditEntry,
    ban::{BanStatus, DnBan, SeBan},
    identity::{Operation, User},
    submit::python_truthy,
    time,
};

/// `GET /config/audit` returns this many entries, newest first (the reference's limit).
pub const AUDIT_LIMIT: usize = 100;

fn bad(m: &str) -> ServiceError {
    ServiceError::BadRequest(m.to_string())
}

/// A parameter as text: strings as they are, other JSON values as their JSON text.
fn text(input: &Map<String, Value>, key: &str) -> Option<String> {
    match input.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    }
}

/// `POST /ban/se` body, as read at the edge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeBanRequest {
    pub storage: Option<String>,
    pub status: Option<String>,
    pub allow_submit: bool,
    pub message: Option<String>,
}

impl SeBanRequest {
    pub fn from_json(input: &Map<String, Value>) -> SeBanRequest {
        SeBanRequest {
            storage: text(input, "storage"),
            status: text(input, "status"),
            allow_submit: input.get("allow_submit").is_some_and(python_truthy),
            message: text(input, "message"),
        }
    }
}

/// `POST /ban/dn` body, as read at the edge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnBanRequest {
    pub user_dn: Option<String>,
    pub message: Option<String>,
}

impl DnBanRequest {
    pub fn from_json(input: &Map<String, Value>) -> DnBanRequest {
        DnBanRequest {
            user_dn: text(input, "user_dn"),
            message: text(input, "message"),
        }
    }
}

impl Service {
    pub(super) fn require_config(&self, user: &User) -> Result<(), ServiceError> {
        if user.granted_level_for(Operation::Config).is_none() {
            return Err(ServiceError::Forbidden("Not enough permissions".into()));
        }
        Ok(())
    }

    pub(super) fn audit(&self, user: &User, action: &str, config: String) -> AuditEntry {
        AuditEntry {
            datetime: time::now(),
            dn: user.user_dn.clone(),
            config,
            action: action.to_string(),
        }
    }

    /// `POST /ban/se`: the ids of the jobs whose files changed.
    pub async fn ban_se(
        &self,
        user: &User,
        input: SeBanRequest,
    ) -> Result<Vec<String>, ServiceError> {
        self.require_config(user)?;
        let storage = input
            .storage
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("Missing storage parameter"))?;
        let status = input.status.unwrap_or_else(|| "cancel".into());
        let status = BanStatus::from_request(&status, input.allow_submit).map_err(bad)?;
        let vo = user.vos.first().cloned().unwrap_or_default();
        let ban = SeBan {
            se: storage,
            vo,
            message: input.message.unwrap_or_default(),
            addition_time: time::now(),
            admin_dn: user.user_dn.clone(),
            status,
        };
        let audit = self.audit(
            user,
            "ban-se",
            format!(
                "Storage {} for {} banned ({})",
                ban.se,
                ban.vo,
                status.as_str()
            ),
        );
        let affected = self.store.ban_se(&ban, &audit).await?;
        tracing::warn!(se = %ban.se, vo = %ban.vo, status = status.as_str(), admin = %user.user_dn, jobs = affected.len(), "storage banned");
        Ok(affected)
    }

    /// `DELETE /ban/se?storage=`.
    pub async fn unban_se(&self, user: &User, storage: Option<&str>) -> Result<(), ServiceError> {
        self.require_config(user)?;
        let storage = storage
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("Missing storage parameter"))?;
        let vo = user.vos.first().cloned().unwrap_or_default();
        let audit = self.audit(user, "unban-se", format!("Storage {storage} unbanned"));
        self.store.unban_se(storage, &vo, &audit).await?;
        tracing::warn!(se = %storage, vo = %vo, admin = %user.user_dn, "storage unbanned");
        Ok(())
    }

    /// `GET /ban/se`.
    pub async fn list_se_bans(&self, user: &User) -> Result<Vec<SeBan>, ServiceError> {
        self.require_config(user)?;
        Ok(self.store.se_bans().await?)
    }

    /// `POST /ban/dn`: the ids of the canceled jobs.
    pub async fn ban_dn(
        &self,
        user: &User,
        input: DnBanRequest,
    ) -> Result<Vec<String>, ServiceError> {
        self.require_config(user)?;
        let dn = input
            .user_dn
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("Missing dn parameter"))?;
        if dn == user.user_dn {
            return Err(ServiceError::Conflict(
                "The user tried to ban (her|his)self".into(),
            ));
        }
        let ban = DnBan {
            dn,
            message: input.message.unwrap_or_default(),
            addition_time: time::now(),
            admin_dn: user.user_dn.clone(),
        };
        let audit = self.audit(user, "ban-dn", format!("User {} banned", ban.dn));
        let canceled = self.store.ban_dn(&ban, &audit).await?;
        tracing::warn!(dn = %ban.dn, admin = %user.user_dn, jobs = canceled.len(), "user banned");
        Ok(canceled)
    }

    /// `DELETE /ban/dn?user_dn=`.
    pub async fn unban_dn(&self, user: &User, dn: Option<&str>) -> Result<(), ServiceError> {
        self.require_config(user)?;
        let dn = dn
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("Missing user_dn parameter"))?;
        let audit = self.audit(user, "unban-dn", format!("User {dn} unbanned"));
        self.store.unban_dn(dn, &audit).await?;
        tracing::warn!(dn = %dn, admin = %user.user_dn, "user unbanned");
        Ok(())
    }

    /// `GET /ban/dn`.
    pub async fn list_dn_bans(&self, user: &User) -> Result<Vec<DnBan>, ServiceError> {
        self.require_config(user)?;
        Ok(self.store.dn_bans().await?)
    }

    /// `GET /config/audit`: the last [`AUDIT_LIMIT`] entries, newest first.
    pub async fn config_audit(&self, user: &User) -> Result<Vec<AuditEntry>, ServiceError> {
        self.require_config(user)?;
        Ok(self.store.audit_entries(AUDIT_LIMIT).await?)
    }
}

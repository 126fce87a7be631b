//! Operator configuration (`/config/*`): hosts, server settings, links, VO shares, storage
//! settings and operation limits, activity shares. Every change and its audit entries are one
//! write transaction; a change that is refused writes nothing.
//!
//! The engine reads through the resolving methods ([`Redb::server_config`],
//! [`Redb::link_config`], [`Redb::shares_for_link`], [`Redb::se_config`],
//! [`Redb::activity_shares`], [`Redb::stage_limit`], [`Redb::host_draining`]), which apply the
//! reference's fallbacks (a VO's row, then the `*` row, then built-in defaults).

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::{Redb, StoreError, bans::append_audit, codec, schema};
use crate::model::{
    audit::AuditEntry,
    config::{
        ANY, ActivityShare, EffectiveServerConfig, FieldValue, Host, LinkConfig, OperationLimit,
        SeConfig, SeUpdate, ServerConfig, ShareConfig,
    },
};

impl codec::Record for Host {
    const NAME: &'static str = "host";
    const VERSION: u8 = 1;
}
impl codec::Record for ServerConfig {
    const NAME: &'static str = "server_config";
    const VERSION: u8 = 1;
}
impl codec::Record for LinkConfig {
    const NAME: &'static str = "link_config";
    const VERSION: u8 = 1;
}
impl codec::Record for ShareConfig {
    const NAME: &'static str = "share_config";
    const VERSION: u8 = 1;
}
impl codec::Record for SeConfig {
    const NAME: &'static str = "se_config";
    const VERSION: u8 = 1;
}
impl codec::Record for OperationLimit {
    const NAME: &'static str = "operation_limit";
    const VERSION: u8 = 1;
}
impl codec::Record for ActivityShare {
    const NAME: &'static str = "activity_share";
    const VERSION: u8 = 1;
}

/// Decode every value of a table, in key order.
fn all_rows<K: redb::Key + 'static, R: codec::Record>(
    table: &impl ReadableTable<K, &'static [u8]>,
) -> Result<Vec<R>, StoreError> {
    let mut out = Vec::new();
    for row in table.iter()? {
        let (_, v) = row?;
        out.push(codec::decode(v.value())?);
    }
    Ok(out)
}

/// The link with symbolic name `name`, by scanning (the table holds one row per configured link).
fn find_link(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    name: &str,
) -> Result<Option<LinkConfig>, StoreError> {
    Ok(all_rows::<_, LinkConfig>(table)?
        .into_iter()
        .find(|l| l.symbolicname == name))
}

fn remove_limits_of(tx: &WriteTransaction, storage: &str) -> Result<(), StoreError> {
    let mut table = tx.open_table(schema::OPERATION_LIMITS)?;
    let mut keys = Vec::new();
    for row in table.range((storage, "", "")..)? {
        let (k, _) = row?;
        let (host, vo, op) = k.value();
        if host != storage {
            break;
        }
        keys.push((vo.to_string(), op.to_string()));
    }
    for (vo, op) in keys {
        table.remove((storage, vo.as_str(), op.as_str()))?;
    }
    Ok(())
}

impl Redb {
    // --- Hosts -----------------------------------------------------------------------------

    /// Record a heartbeat of `service` on `hostname` (registering it, not draining, if new; the
    /// drain flag of a known host is kept).
    pub fn beat_host(&self, hostname: &str, service: &str, now: i64) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(schema::HOSTS)?;
            let drain = match table.get((hostname, service))? {
                Some(v) => codec::decode::<Host>(v.value())?.drain,
                None => false,
            };
            let host = Host {
                hostname: hostname.to_string(),
                service_name: service.to_string(),
                beat: now,
                drain,
            };
            table.insert((hostname, service), codec::encode(&host).as_slice())?;
            Ok(())
        })
    }

    /// Every registered service, by host name then service name.
    pub fn hosts(&self) -> Result<Vec<Host>, StoreError> {
        let tx = self.db.begin_read()?;
        all_rows(&tx.open_table(schema::HOSTS)?)
    }

    /// Set the drain flag of every service of `hostname` and write `audit`. Returns false (and
    /// writes nothing) if the host is not registered.
    pub fn set_drain(
        &self,
        hostname: &str,
        drain: bool,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(schema::HOSTS)?;
            let mut hosts: Vec<Host> = Vec::new();
            for row in table.range((hostname, "")..)? {
                let (k, v) = row?;
                if k.value().0 != hostname {
                    break;
                }
                hosts.push(codec::decode(v.value())?);
            }
            if hosts.is_empty() {
                return Ok(false);
            }
            for mut host in hosts {
                host.drain = drain;
                table.insert(
                    (hostname, host.service_name.as_str()),
                    codec::encode(&host).as_slice(),
                )?;
            }
            drop(table);
            append_audit(tx, audit)?;
            Ok(true)
        })
    }

    /// Is any service of `hostname` draining? (The engine takes no new work while it is.)
    pub fn host_draining(&self, hostname: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::HOSTS)?;
        for row in table.range((hostname, "")..)? {
            let (k, v) = row?;
            if k.value().0 != hostname {
                break;
            }
            if codec::decode::<Host>(v.value())?.drain {
                return Ok(true);
            }
        }
        Ok(false)
    }

    // --- Server settings ---------------------------------------------------------------------

    /// Every server settings row, by VO name.
    pub fn server_configs(&self) -> Result<Vec<ServerConfig>, StoreError> {
        let tx = self.db.begin_read()?;
        all_rows(&tx.open_table(schema::SERVER_CONFIG)?)
    }

    /// Apply `fields` to the row of `vo` (created if missing) and write `audit`, its text
    /// being the stored row's JSON. Returns the stored row.
    pub fn set_server_config(
        &self,
        vo: &str,
        fields: &[(String, FieldValue)],
        audit: &AuditEntry,
    ) -> Result<ServerConfig, StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(schema::SERVER_CONFIG)?;
            let mut new = match table.get(vo)? {
                Some(v) => codec::decode(v.value())?,
                None => ServerConfig {
                    vo_name: vo.to_string(),
                    ..Default::default()
                },
            };
            for (key, value) in fields {
                // The fields were checked against their types (`ServerConfig::check`), which is
                // all `apply` checks: a refusal here would be a caller's bug, and it writes
                // nothing.
                new.apply(key, value.clone())
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
            }
            if new.vo_name != vo {
                table.remove(vo)?;
            }
            table.insert(new.vo_name.as_str(), codec::encode(&new).as_slice())?;
            drop(table);
            let audit = AuditEntry {
                config: new.to_json().to_string(),
                ..audit.clone()
            };
            append_audit(tx, &audit)?;
            Ok(new)
        })
    }

    /// Remove the settings of `vo`; writes `audit`. Returns whether a row existed.
    pub fn delete_server_config(&self, vo: &str, audit: &AuditEntry) -> Result<bool, StoreError> {
        self.write(|tx| {
            let existed = tx.open_table(schema::SERVER_CONFIG)?.remove(vo)?.is_some();
            append_audit(tx, audit)?;
            Ok(existed)
        })
    }

    /// The settings the engine applies to jobs of `vo`: its row, falling back field by field to
    /// the `*` row, then to the defaults of [`EffectiveServerConfig`].
    pub fn server_config(&self, vo: &str) -> Result<EffectiveServerConfig, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::SERVER_CONFIG)?;
        let get = |key: &str| -> Result<Option<ServerConfig>, StoreError> {
            match table.get(key)? {
                Some(v) => Ok(Some(codec::decode(v.value())?)),
                None => Ok(None),
            }
        };
        let own = get(vo)?;
        let any = get(ANY)?;
        Ok(EffectiveServerConfig::resolve(own.as_ref(), any.as_ref()))
    }

    // --- Links -------------------------------------------------------------------------------

    /// Every configured link, by source then destination.
    pub fn link_configs(&self) -> Result<Vec<LinkConfig>, StoreError> {
        let tx = self.db.begin_read()?;
        all_rows(&tx.open_table(schema::LINK_CONFIG)?)
    }

    /// The link with symbolic name `name`.
    pub fn link_by_name(&self, name: &str) -> Result<Option<LinkConfig>, StoreError> {
        let tx = self.db.begin_read()?;
        find_link(&tx.open_table(schema::LINK_CONFIG)?, name)
    }

    /// Apply `fields` to the link named `name`, or to `fresh` when there is none; the row
    /// moves if its source or destination changed, replacing any row there. Writes `audit`;
    /// returns the stored row.
    pub fn set_link(
        &self,
        name: &str,
        fresh: &LinkConfig,
        fields: &[(String, FieldValue)],
        audit: &AuditEntry,
    ) -> Result<LinkConfig, StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(schema::LINK_CONFIG)?;
            let old = find_link(&table, name)?;
            if let Some(old) = &old {
                table.remove((old.source.as_str(), old.destination.as_str()))?;
            }
            let mut new = old.unwrap_or_else(|| fresh.clone());
            for (key, value) in fields {
                // Checked against their types by the caller (`LinkConfig::check`).
                new.apply(key, value.clone())
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
            }
            table.insert(
                (new.source.as_str(), new.destination.as_str()),
                codec::encode(&new).as_slice(),
            )?;
            drop(table);
            append_audit(tx, audit)?;
            Ok(new)
        })
    }

    /// Remove the link named `name` (if any); writes `audit`. Returns whether it existed.
    pub fn delete_link(&self, name: &str, audit: &AuditEntry) -> Result<bool, StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(schema::LINK_CONFIG)?;
            let existed = match find_link(&table, name)? {
                Some(old) => {
                    table.remove((old.source.as_str(), old.destination.as_str()))?;
                    true
                }
                None => false,
            };
            drop(table);
            append_audit(tx, audit)?;
            Ok(existed)
        })
    }

    /// The limits of the link `source_se` → `dest_se`, resolved as the reference's server does:
    /// the exact link, else `source → *`, else `* → destination`, else the `* → *` row, else
    /// [`LinkConfig::default_link`].
    pub fn link_config(&self, source_se: &str, dest_se: &str) -> Result<LinkConfig, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::LINK_CONFIG)?;
        for key in [
            (source_se, dest_se),
            (source_se, ANY),
            (ANY, dest_se),
            (ANY, ANY),
        ] {
            if let Some(v) = table.get(key)? {
                return Ok(codec::decode(v.value())?);
            }
        }
        Ok(LinkConfig::default_link())
    }

    // --- VO shares ---------------------------------------------------------------------------

    /// Every VO share, by source, destination, VO.
    pub fn shares(&self) -> Result<Vec<ShareConfig>, StoreError> {
        let tx = self.db.begin_read()?;
        all_rows(&tx.open_table(schema::SHARE_CONFIG)?)
    }

    /// Set a VO share and write `audit`. A share belongs to a configured link (the reference's
    /// foreign key): returns false, writing nothing, if no link `source → destination` exists.
    pub fn set_share(&self, share: &ShareConfig, audit: &AuditEntry) -> Result<bool, StoreError> {
        self.write(|tx| {
            let (s, d) = (share.source.as_str(), share.destination.as_str());
            if tx.open_table(schema::LINK_CONFIG)?.get((s, d))?.is_none() {
                return Ok(false);
            }
            tx.open_table(schema::SHARE_CONFIG)?
                .insert((s, d, share.vo.as_str()), codec::encode(share).as_slice())?;
            append_audit(tx, audit)?;
            Ok(true)
        })
    }

    /// Remove a VO share. The audit entry is written only if the share existed (as the
    /// reference does). Returns whether it existed.
    pub fn delete_share(
        &self,
        source: &str,
        destination: &str,
        vo: &str,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let existed = tx
                .open_table(schema::SHARE_CONFIG)?
                .remove((source, destination, vo))?
                .is_some();
            if existed {
                append_audit(tx, audit)?;
            }
            Ok(existed)
        })
    }

    /// `(vo, weight)` of the VO shares configured on the link `source → dest`, by VO.
    pub fn shares_for_link(
        &self,
        source: &str,
        dest: &str,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::SHARE_CONFIG)?;
        let mut out = Vec::new();
        for row in table.range((source, dest, "")..)? {
            let (k, v) = row?;
            let (s, d, _) = k.value();
            if s != source || d != dest {
                break;
            }
            let share: ShareConfig = codec::decode(v.value())?;
            out.push((share.vo, share.share));
        }
        Ok(out)
    }

    // --- Storages ----------------------------------------------------------------------------

    /// Storage settings and operation limits, of every storage or of one.
    pub fn se_configs(
        &self,
        storage: Option<&str>,
    ) -> Result<(Vec<SeConfig>, Vec<OperationLimit>), StoreError> {
        let tx = self.db.begin_read()?;
        let ses: Vec<SeConfig> = all_rows(&tx.open_table(schema::SE_CONFIG)?)?;
        let limits: Vec<OperationLimit> = all_rows(&tx.open_table(schema::OPERATION_LIMITS)?)?;
        let keep = |s: &str| storage.is_none_or(|want| want == s);
        Ok((
            ses.into_iter().filter(|s| keep(&s.storage)).collect(),
            limits.into_iter().filter(|l| keep(&l.host)).collect(),
        ))
    }

    /// Apply checked storage changes and their audit entries, all in one transaction.
    pub fn set_se_configs(
        &self,
        updates: &[SeUpdate],
        audits: &[AuditEntry],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut ses = tx.open_table(schema::SE_CONFIG)?;
            let mut limits = tx.open_table(schema::OPERATION_LIMITS)?;
            for update in updates {
                let storage = update.storage.as_str();
                if let Some(patch) = &update.se_info {
                    let old = match ses.get(storage)? {
                        Some(v) => codec::decode(v.value())?,
                        None => SeConfig::default(),
                    };
                    let mut new = SeConfig::overlay(patch, &old);
                    new.storage = update.storage.clone();
                    ses.insert(storage, codec::encode(&new).as_slice())?;
                }
                for limit in &update.limits {
                    let key = (storage, limit.vo_name.as_str(), limit.operation.as_str());
                    if limit.concurrent_ops > 0 {
                        limits.insert(key, codec::encode(limit).as_slice())?;
                    } else {
                        limits.remove(key)?;
                    }
                }
            }
            drop((ses, limits));
            for audit in audits {
                append_audit(tx, audit)?;
            }
            Ok(())
        })
    }

    /// Remove the settings and operation limits of `storage`; writes `audit`.
    pub fn delete_se_config(&self, storage: &str, audit: &AuditEntry) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.open_table(schema::SE_CONFIG)?.remove(storage)?;
            remove_limits_of(tx, storage)?;
            append_audit(tx, audit)?;
            Ok(())
        })
    }

    /// The settings the engine applies to `se`: its row, unset fields from the `*` row, active
    /// limits defaulting to [`crate::model::config::DEFAULT_SE_MAX_ACTIVE`].
    pub fn se_config(&self, se: &str) -> Result<SeConfig, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::SE_CONFIG)?;
        let get = |key: &str| -> Result<Option<SeConfig>, StoreError> {
            match table.get(key)? {
                Some(v) => Ok(Some(codec::decode(v.value())?)),
                None => Ok(None),
            }
        };
        let own = get(se)?;
        let any = get(ANY)?;
        Ok(SeConfig::merged(own.as_ref(), any.as_ref(), se))
    }

    /// How many `operation`s (`staging`, `delete`, ...) `vo` may run at once on `host`, if
    /// limited.
    pub fn stage_limit(
        &self,
        vo: &str,
        host: &str,
        operation: &str,
    ) -> Result<Option<i64>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::OPERATION_LIMITS)?;
        match table.get((host, vo, operation))? {
            Some(v) => Ok(Some(
                codec::decode::<OperationLimit>(v.value())?.concurrent_ops,
            )),
            None => Ok(None),
        }
    }

    // --- Activity shares ---------------------------------------------------------------------

    /// Every VO's activity shares, by VO.
    pub fn activity_share_rows(&self) -> Result<Vec<ActivityShare>, StoreError> {
        let tx = self.db.begin_read()?;
        all_rows(&tx.open_table(schema::ACTIVITY_SHARES)?)
    }

    /// The activity shares row of `vo`.
    pub fn activity_share_row(&self, vo: &str) -> Result<Option<ActivityShare>, StoreError> {
        let tx = self.db.begin_read()?;
        match tx.open_table(schema::ACTIVITY_SHARES)?.get(vo)? {
            Some(v) => Ok(Some(codec::decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Replace the activity shares of a VO; writes `audit`.
    pub fn set_activity_share(
        &self,
        row: &ActivityShare,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.open_table(schema::ACTIVITY_SHARES)?
                .insert(row.vo.as_str(), codec::encode(row).as_slice())?;
            append_audit(tx, audit)
        })
    }

    /// Remove the activity shares of `vo`, writing `audit`; false (nothing written) if none.
    pub fn delete_activity_share(&self, vo: &str, audit: &AuditEntry) -> Result<bool, StoreError> {
        self.write(|tx| {
            let existed = tx
                .open_table(schema::ACTIVITY_SHARES)?
                .remove(vo)?
                .is_some();
            if existed {
                append_audit(tx, audit)?;
            }
            Ok(existed)
        })
    }

    /// The activity weights of `vo` in stored order, and whether they are in force.
    #[allow(clippy::type_complexity)]
    pub fn activity_shares(
        &self,
        vo: &str,
    ) -> Result<Option<(Vec<(String, f64)>, bool)>, StoreError> {
        Ok(self
            .activity_share_row(vo)?
            .map(|row| (row.weights(), row.active)))
    }
}

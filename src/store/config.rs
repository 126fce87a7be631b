//! Operator configuration (`/config/*`): hosts, server settings, links, VO shares, storage
//! settings and operation limits, activity shares. Every change and its audit entries are one
//! write transaction; a change that is refused writes nothing.
//!
//! The engine reads through the resolving methods ([`Store::server_config`],
//! [`Store::link_config`], [`Store::shares_for_link`], [`Store::se_config`],
//! [`Store::activity_shares`], [`Store::stage_limit`], [`Store::host_draining`]), which apply the
//! reference's fallbacks (a VO's row, then the `*` row, then built-in defaults).

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::{Store, StoreError, bans::append_audit, codec, schema};
use crate::model::{
    audit::AuditEntry,
    config::{
        ANY, ActivityShare, EffectiveServerConfig, Host, LinkConfig, OperationLimit, SeConfig,
        ServerConfig, ShareConfig,
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

/// A change of one storage's configuration (`POST /config/se`).
#[derive(Debug, Clone, PartialEq)]
pub struct SeUpdate {
    pub storage: String,
    /// Fields to set (unset fields keep their stored value); `None`: no `t_se` row is touched.
    pub se_info: Option<SeConfig>,
    /// Limits to set; a limit ≤ 0 removes the row.
    pub limits: Vec<OperationLimit>,
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

impl Store {
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

    /// Update (or create) the row of `vo` with `change`, and write the audit entry `audit`
    /// makes of the stored row. Returns the stored row.
    pub fn set_server_config(
        &self,
        vo: &str,
        change: impl FnOnce(ServerConfig) -> ServerConfig,
        audit: impl FnOnce(&ServerConfig) -> AuditEntry,
    ) -> Result<ServerConfig, StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(schema::SERVER_CONFIG)?;
            let old = match table.get(vo)? {
                Some(v) => codec::decode(v.value())?,
                None => ServerConfig {
                    vo_name: vo.to_string(),
                    ..Default::default()
                },
            };
            let new = change(old);
            if new.vo_name != vo {
                table.remove(vo)?;
            }
            table.insert(new.vo_name.as_str(), codec::encode(&new).as_slice())?;
            drop(table);
            append_audit(tx, &audit(&new))?;
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

    /// Update the link named `name` (or create one) with `change`, which gets the existing row;
    /// the row moves if its source or destination changed, replacing any row there. Writes
    /// `audit`; returns the stored row.
    pub fn set_link(
        &self,
        name: &str,
        change: impl FnOnce(Option<LinkConfig>) -> LinkConfig,
        audit: &AuditEntry,
    ) -> Result<LinkConfig, StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(schema::LINK_CONFIG)?;
            let old = find_link(&table, name)?;
            if let Some(old) = &old {
                table.remove((old.source.as_str(), old.destination.as_str()))?;
            }
            let new = change(old);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(action: &str) -> AuditEntry {
        AuditEntry {
            datetime: 1,
            dn: "/CN=admin".into(),
            config: String::new(),
            action: action.into(),
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn link(source: &str, destination: &str, name: &str, max: i64) -> LinkConfig {
        LinkConfig {
            source: source.into(),
            destination: destination.into(),
            symbolicname: name.into(),
            min_active: 1,
            max_active: max,
            optimizer_mode: None,
            tcp_buffer_size: None,
            nostreams: None,
            no_delegation: None,
        }
    }

    #[test]
    fn hosts_beat_and_drain() {
        let (_d, store) = store();
        store.beat_host("a", "fts_server", 1).unwrap();
        store.beat_host("a", "fts_bringonline", 1).unwrap();
        store.beat_host("b", "fts_server", 1).unwrap();
        assert!(!store.set_drain("zz", true, &audit("drain")).unwrap());
        assert!(store.audit_entries(10).unwrap().is_empty());
        assert!(store.set_drain("a", true, &audit("drain")).unwrap());
        assert!(store.host_draining("a").unwrap());
        assert!(!store.host_draining("b").unwrap());
        // A heartbeat keeps the drain flag.
        store.beat_host("a", "fts_server", 9).unwrap();
        let hosts = store.hosts().unwrap();
        assert_eq!(hosts.len(), 3);
        assert!(hosts.iter().filter(|h| h.hostname == "a").all(|h| h.drain));
        assert_eq!(hosts[1].beat, 9);
        assert_eq!(store.audit_entries(10).unwrap().len(), 1);
    }

    #[test]
    fn server_config_resolves_vo_then_global() {
        let (_d, store) = store();
        assert_eq!(
            store.server_config("dteam").unwrap(),
            EffectiveServerConfig::default()
        );
        store
            .set_server_config(
                ANY,
                |mut c| {
                    c.retry = Some(3);
                    c.sec_per_mb = Some(2);
                    c
                },
                |_| audit("set-globals"),
            )
            .unwrap();
        store
            .set_server_config(
                "dteam",
                |mut c| {
                    c.retry = Some(42);
                    c
                },
                |_| audit("set-globals"),
            )
            .unwrap();
        let c = store.server_config("dteam").unwrap();
        assert_eq!((c.retry, c.sec_per_mb), (42, 2));
        assert_eq!(store.server_config("atlas").unwrap().retry, 3);
        assert!(
            store
                .delete_server_config("dteam", &audit("delete-globals"))
                .unwrap()
        );
        assert_eq!(store.server_config("dteam").unwrap().retry, 3);
    }

    #[test]
    fn links_resolve_from_exact_to_default() {
        let (_d, store) = store();
        assert_eq!(
            store.link_config("s", "d").unwrap(),
            LinkConfig::default_link()
        );
        let a = audit("link");
        store
            .set_link("any", |_| link(ANY, ANY, "any", 10), &a)
            .unwrap();
        store
            .set_link("to-d", |_| link(ANY, "d", "to-d", 20), &a)
            .unwrap();
        store
            .set_link("from-s", |_| link("s", ANY, "from-s", 30), &a)
            .unwrap();
        store
            .set_link("s-d", |_| link("s", "d", "s-d", 40), &a)
            .unwrap();
        assert_eq!(store.link_config("s", "d").unwrap().max_active, 40);
        assert_eq!(store.link_config("s", "x").unwrap().max_active, 30);
        assert_eq!(store.link_config("x", "d").unwrap().max_active, 20);
        assert_eq!(store.link_config("x", "y").unwrap().max_active, 10);
        // Renaming the ends of a named link moves it.
        store
            .set_link(
                "s-d",
                |old| {
                    let mut l = old.unwrap();
                    l.destination = "e".into();
                    l
                },
                &a,
            )
            .unwrap();
        assert_eq!(store.link_config("s", "d").unwrap().max_active, 30);
        assert_eq!(store.link_by_name("s-d").unwrap().unwrap().destination, "e");
        assert!(store.delete_link("s-d", &a).unwrap());
        assert!(!store.delete_link("s-d", &a).unwrap());
        assert_eq!(store.link_configs().unwrap().len(), 3);
    }

    #[test]
    fn shares_need_their_link() {
        let (_d, store) = store();
        let share = ShareConfig {
            source: "gsiftp://s".into(),
            destination: "gsiftp://d".into(),
            vo: "dteam".into(),
            share: 80,
        };
        assert!(!store.set_share(&share, &audit("share-set")).unwrap());
        assert!(store.audit_entries(10).unwrap().is_empty());
        store
            .set_link(
                "l",
                |_| link("gsiftp://s", "gsiftp://d", "l", 5),
                &audit("link"),
            )
            .unwrap();
        assert!(store.set_share(&share, &audit("share-set")).unwrap());
        let atlas = ShareConfig {
            vo: "atlas".into(),
            share: 20,
            ..share.clone()
        };
        assert!(store.set_share(&atlas, &audit("share-set")).unwrap());
        assert_eq!(
            store.shares_for_link("gsiftp://s", "gsiftp://d").unwrap(),
            vec![("atlas".to_string(), 20), ("dteam".to_string(), 80)]
        );
        assert!(store.shares_for_link("gsiftp://s", "x").unwrap().is_empty());
        assert!(
            store
                .delete_share("gsiftp://s", "gsiftp://d", "atlas", &audit("share-delete"))
                .unwrap()
        );
        assert_eq!(store.shares().unwrap(), vec![share]);
    }

    #[test]
    fn storages_merge_with_the_global_row_and_limits_are_per_vo() {
        let (_d, store) = store();
        assert_eq!(store.se_config("s").unwrap().inbound_max_active, Some(200));
        let limit = |vo: &str, op: &str, n| OperationLimit {
            vo_name: vo.into(),
            host: "s".into(),
            operation: op.into(),
            concurrent_ops: n,
        };
        let update = SeUpdate {
            storage: "s".into(),
            se_info: Some(SeConfig {
                ipv6: Some(1),
                ..Default::default()
            }),
            limits: vec![limit("atlas", "staging", 32), limit("dteam", "delete", 10)],
        };
        let global = SeUpdate {
            storage: ANY.into(),
            se_info: Some(SeConfig {
                outbound_max_active: Some(7),
                ..Default::default()
            }),
            limits: vec![],
        };
        store
            .set_se_configs(&[update, global], &[audit("set-se-config")])
            .unwrap();
        let s = store.se_config("s").unwrap();
        assert_eq!(
            (s.ipv6, s.outbound_max_active, s.inbound_max_active),
            (Some(1), Some(7), Some(200))
        );
        assert_eq!(
            store.stage_limit("atlas", "s", "staging").unwrap(),
            Some(32)
        );
        assert_eq!(store.stage_limit("dteam", "s", "staging").unwrap(), None);
        // A limit of 0 removes it; an update without se_info keeps the settings.
        let update = SeUpdate {
            storage: "s".into(),
            se_info: None,
            limits: vec![limit("atlas", "staging", 0)],
        };
        store.set_se_configs(&[update], &[]).unwrap();
        assert_eq!(store.stage_limit("atlas", "s", "staging").unwrap(), None);
        assert_eq!(store.se_config("s").unwrap().ipv6, Some(1));
        store
            .delete_se_config("s", &audit("delete-se-config"))
            .unwrap();
        let (ses, limits) = store.se_configs(Some("s")).unwrap();
        assert!(ses.is_empty() && limits.is_empty());
        assert_eq!(store.se_configs(None).unwrap().0.len(), 1);
    }

    #[test]
    fn activity_shares_round_trip() {
        let (_d, store) = store();
        assert_eq!(store.activity_shares("dteam").unwrap(), None);
        let row = ActivityShare {
            vo: "dteam".into(),
            activity_share: r#"[{"A": 1}, {"B": 0.5}]"#.into(),
            active: false,
        };
        store
            .set_activity_share(&row, &audit("activity-share"))
            .unwrap();
        assert_eq!(
            store.activity_shares("dteam").unwrap(),
            Some((vec![("A".into(), 1.0), ("B".into(), 0.5)], false))
        );
        assert!(
            store
                .delete_activity_share("dteam", &audit("activity-share"))
                .unwrap()
        );
        assert!(
            !store
                .delete_activity_share("dteam", &audit("activity-share"))
                .unwrap()
        );
        assert_eq!(store.audit_entries(10).unwrap().len(), 2);
    }
}

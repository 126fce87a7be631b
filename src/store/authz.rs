//! Operator grants by DN (the reference's `t_authz_dn`): a DN listed for an operation gets level
//! `all` for it, whatever its roles say.

use redb::{ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::model::{
    audit::AuditEntry,
    identity::{Grant, StoredAccess},
};

use super::{
    Redb, StoreError,
    bans::append_audit,
    codec,
    index::{self, AuthzKey},
    schema,
};

/// The stored value of a grant. The key holds the DN and the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRow {
    /// When the grant was made (unix seconds).
    pub granted_at: i64,
}

impl codec::Record for GrantRow {
    const NAME: &'static str = "authz_dn";
    const VERSION: u8 = 1;
}

/// Grant inside `tx`; false if the grant already existed.
fn grant_in(
    tx: &WriteTransaction,
    dn: &str,
    operation: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let mut table = tx.open_table(schema::AUTHZ_DN)?;
    if table.get((dn, operation))?.is_some() {
        return Ok(false);
    }
    let row = codec::encode(&GrantRow { granted_at: now });
    table.insert((dn, operation), row.as_slice())?;
    index::apply_authz(tx, None, Some(&AuthzKey { dn, operation }))?;
    Ok(true)
}

/// Revoke inside `tx` the grants of `dn` (one operation, or all but those in `keep`).
fn revoke_in(
    tx: &WriteTransaction,
    dn: &str,
    operation: Option<&str>,
    keep: &[&str],
) -> Result<usize, StoreError> {
    let mut table = tx.open_table(schema::AUTHZ_DN)?;
    let operations: Vec<String> = match operation {
        Some(op) => vec![op.to_string()],
        None => {
            let mut ops = Vec::new();
            for row in table.range((dn, "")..)? {
                let (key, _) = row?;
                let (row_dn, op) = key.value();
                if row_dn != dn {
                    break;
                }
                ops.push(op.to_string());
            }
            ops
        }
    };
    let mut removed = 0;
    for op in operations.iter().filter(|op| !keep.contains(&op.as_str())) {
        if table.remove((dn, op.as_str()))?.is_some() {
            index::apply_authz(
                tx,
                Some(&AuthzKey {
                    dn,
                    operation: op.as_str(),
                }),
                None,
            )?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Operations granted to `dn`, read in `tx`.
fn grants_in(tx: &ReadTransaction, dn: &str) -> Result<Vec<String>, StoreError> {
    let table = tx.open_table(schema::AUTHZ_DN)?;
    let mut ops = Vec::new();
    for row in table.range((dn, "")..)? {
        let (key, _) = row?;
        let (row_dn, op) = key.value();
        if row_dn != dn {
            break;
        }
        ops.push(op.to_string());
    }
    Ok(ops)
}

impl Redb {
    /// Grant `operation` to `dn`. Returns false if the grant already existed (nothing written).
    pub fn grant_dn(&self, dn: &str, operation: &str, now: i64) -> Result<bool, StoreError> {
        self.write(|tx| grant_in(tx, dn, operation, now))
    }

    /// Remove grants of `dn` (one operation, or all). Returns how many were removed.
    pub fn revoke_dn(&self, dn: &str, operation: Option<&str>) -> Result<usize, StoreError> {
        self.write(|tx| revoke_in(tx, dn, operation, &[]))
    }

    /// `POST /config/authorize`: grant and, if the grant is new, write `audit` in the same
    /// transaction. Returns whether the grant is new.
    pub fn grant_dn_audited(
        &self,
        dn: &str,
        operation: &str,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let new = grant_in(tx, dn, operation, now)?;
            if new {
                append_audit(tx, audit)?;
            }
            Ok(new)
        })
    }

    /// `DELETE /config/authorize`: revoke the grants of `dn` (one operation or all), never the
    /// operations in `keep` (the reference keeps `admin`, which only database access changes),
    /// and write `audit`. Returns how many were removed.
    pub fn revoke_dn_audited(
        &self,
        dn: &str,
        operation: Option<&str>,
        keep: &[&str],
        audit: &AuditEntry,
    ) -> Result<usize, StoreError> {
        self.write(|tx| {
            let removed = revoke_in(tx, dn, operation, keep)?;
            append_audit(tx, audit)?;
            Ok(removed)
        })
    }

    /// Whether `dn` is banned and what it was granted, in one read (every request asks).
    pub fn access(&self, dn: &str) -> Result<StoredAccess, StoreError> {
        let tx = self.db.begin_read()?;
        let banned = tx.open_table(schema::DN_BANS)?.get(dn)?.is_some();
        Ok(StoredAccess {
            banned,
            grants: grants_in(&tx, dn)?,
        })
    }

    /// Operations granted to `dn`.
    pub fn dn_grants(&self, dn: &str) -> Result<Vec<String>, StoreError> {
        grants_in(&self.db.begin_read()?, dn)
    }

    /// Every grant, optionally only those of one DN or one operation.
    pub fn list_grants(
        &self,
        dn: Option<&str>,
        operation: Option<&str>,
    ) -> Result<Vec<Grant>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::AUTHZ_DN)?;
        let keys: Vec<(String, String)> = match (dn, operation) {
            (_, Some(op)) => {
                let index = tx.open_multimap_table(schema::AUTHZ_DN_BY_OPERATION)?;
                let mut keys = Vec::new();
                for entry in index.get(op)? {
                    let row_dn = entry?.value().to_string();
                    if dn.is_none_or(|d| d == row_dn) {
                        keys.push((row_dn, op.to_string()));
                    }
                }
                keys
            }
            (dn, None) => {
                let mut keys = Vec::new();
                let start = (dn.unwrap_or(""), "");
                for row in table.range(start..)? {
                    let (key, _) = row?;
                    let (row_dn, op) = key.value();
                    if dn.is_some_and(|d| d != row_dn) {
                        break;
                    }
                    keys.push((row_dn.to_string(), op.to_string()));
                }
                keys
            }
        };
        let mut grants = Vec::with_capacity(keys.len());
        for (dn, operation) in keys {
            if let Some(value) = table.get((dn.as_str(), operation.as_str()))? {
                let row: GrantRow = codec::decode(value.value())?;
                grants.push(Grant {
                    dn,
                    operation,
                    granted_at: row.granted_at,
                });
            }
        }
        Ok(grants)
    }
}

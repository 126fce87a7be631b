//! The only writer of index tables. Every change to an indexed row goes through the `apply_*`
//! function of its table, inside the row's own write transaction, with the old and the new row:
//! entries of the old row are removed, entries of the new row added. [`check`] rebuilds every
//! index from the rows and compares, which tests (and `ftsd` maintenance tooling) use to prove
//! the rule holds.

use std::collections::BTreeSet;

use redb::{ReadTransaction, ReadableMultimapTable, ReadableTable, WriteTransaction};

use super::{StoreError, schema};

/// Key of an `AUTHZ_DN` row.
pub(crate) struct AuthzKey<'a> {
    pub dn: &'a str,
    pub operation: &'a str,
}

/// Maintain `AUTHZ_DN_BY_OPERATION` for a change of one `AUTHZ_DN` row.
pub(crate) fn apply_authz(
    tx: &WriteTransaction,
    old: Option<&AuthzKey<'_>>,
    new: Option<&AuthzKey<'_>>,
) -> Result<(), StoreError> {
    let mut by_op = tx.open_multimap_table(schema::AUTHZ_DN_BY_OPERATION)?;
    if let Some(old) = old {
        by_op.remove(old.operation, old.dn)?;
    }
    if let Some(new) = new {
        by_op.insert(new.operation, new.dn)?;
    }
    Ok(())
}

/// Rebuild every index from its rows and compare with what is stored. Returns one line per
/// difference (empty when consistent).
pub fn check(tx: &ReadTransaction) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();

    let rows = tx.open_table(schema::AUTHZ_DN)?;
    let mut expected = BTreeSet::new();
    for row in rows.iter()? {
        let (key, _) = row?;
        let (dn, operation) = key.value();
        expected.insert((operation.to_string(), dn.to_string()));
    }
    let index = tx.open_multimap_table(schema::AUTHZ_DN_BY_OPERATION)?;
    let mut actual = BTreeSet::new();
    for entry in index.iter()? {
        let (operation, dns) = entry?;
        for dn in dns {
            actual.insert((operation.value().to_string(), dn?.value().to_string()));
        }
    }
    compare("authz_dn_by_operation", &expected, &actual, &mut problems);
    Ok(problems)
}

fn compare<T: std::fmt::Debug + Ord>(
    index: &str,
    expected: &BTreeSet<T>,
    actual: &BTreeSet<T>,
    problems: &mut Vec<String>,
) {
    for missing in expected.difference(actual) {
        problems.push(format!("{index}: missing entry {missing:?}"));
    }
    for stale in actual.difference(expected) {
        problems.push(format!("{index}: stale entry {stale:?}"));
    }
}

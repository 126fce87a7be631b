//! Every table of the database, in one place. Names carry a version: a change of key or value
//! layout creates a new table and a migration moves the rows (see `migrate` in `mod.rs`).
//!
//! Rows are stored as versioned codec bytes (`codec.rs`); keys are plain redb types so that
//! tuple keys give ordered prefix scans. Secondary indexes are multimap tables written only by
//! `index.rs`.

use redb::{MultimapTableDefinition, TableDefinition};

/// Version of the table layout as a whole, recorded in [`META`] under [`META_SCHEMA_VERSION`].
pub const SCHEMA_VERSION: u64 = 1;

/// Database-wide facts: `schema_version`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const META_SCHEMA_VERSION: &str = "schema_version";

/// Operator grants by DN (`/config/authorize`, the reference's `t_authz_dn`):
/// `(dn, operation)` → [`crate::store::authz::GrantRow`].
pub const AUTHZ_DN: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("authz_dn_v1");

/// Index of [`AUTHZ_DN`] by operation: `operation` → `dn`.
pub const AUTHZ_DN_BY_OPERATION: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("authz_dn_by_operation_v1");

/// Pending delegation requests (the reference's `t_credential_cache`): `(dlg_id, dn)` →
/// [`crate::store::credentials::PendingRow`]; the private key inside is sealed.
pub const CREDENTIAL_REQUESTS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("credential_requests_v1");

/// Delegated proxies (the reference's `t_credential`): `(dlg_id, dn)` →
/// [`crate::store::credentials::CredentialRow`]; the private key inside is sealed.
pub const CREDENTIALS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("credentials_v1");

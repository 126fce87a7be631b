//! The configuration audit (`t_config_audit`): one entry per change an operator makes through
//! the API (bans, and the configuration setters), written in the same transaction as the change.

use serde::{Deserialize, Serialize};

/// One audit entry: when (unix seconds), who, what (free text) and the action name the reference
/// uses (`ban-se`, `unban-dn`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub datetime: i64,
    pub dn: String,
    pub config: String,
    pub action: String,
}

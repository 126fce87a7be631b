//! `whoami`: the caller's credentials as FTS3 reports them (§2.3), and the client chain.

use serde::Serialize;
use uuid::Uuid;

use super::ServiceError;
use crate::{
    auth::CertIdentity,
    model::identity::{AuthMethod, BASE_ID, Levels, User},
};

/// The whoami object. Field names and types are the reference's; anonymous callers get
/// `level: []` and `delegation_id: null` like the reference's anonymous credentials.
#[derive(Debug, Serialize)]
pub struct Whoami {
    pub user_dn: String,
    pub dn: Vec<String>,
    pub base_id: Uuid,
    pub voms_cred: Vec<String>,
    pub vos: Vec<String>,
    pub vos_id: Vec<Uuid>,
    pub roles: Vec<String>,
    pub level: LevelField,
    pub delegation_id: Option<String>,
    pub method: AuthMethod,
    pub is_root: bool,
    /// Token users only: the token's scopes, space-joined (null when it has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2_scope: Option<Option<String>>,
    /// Token users only: whether the token has the WLCG profile's `wlcg.ver`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wlcg_profile: Option<bool>,
}

/// `level` is a map for authenticated users and an empty list for anonymous ones.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum LevelField {
    Granted(Levels),
    None([(); 0]),
}

pub fn whoami(user: &User) -> Whoami {
    Whoami {
        user_dn: user.user_dn.clone(),
        dn: user.dn.clone(),
        base_id: BASE_ID,
        voms_cred: user.voms_cred.clone(),
        vos: user.vos.clone(),
        vos_id: user.vos_id(),
        roles: user.roles.clone(),
        level: match &user.level {
            Some(levels) => LevelField::Granted(levels.clone()),
            None => LevelField::None([]),
        },
        delegation_id: user.delegation_id.clone(),
        method: user.method,
        is_root: user.is_root,
        oauth2_scope: (user.method == AuthMethod::Oauth2).then(|| user.oauth2_scope.clone()),
        wlcg_profile: user.wlcg_profile,
    }
}

/// The client's certificate chain as PEM (`/whoami/certificate`); certificate callers only.
pub fn certificate_chain_pem(peer: Option<&CertIdentity>) -> Result<String, ServiceError> {
    let peer = peer.ok_or_else(|| ServiceError::Forbidden("Certificate required".into()))?;
    Ok(peer
        .chain
        .iter()
        .map(|der| pem("CERTIFICATE", der))
        .collect())
}

fn pem(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_whoami_has_the_reference_shape() {
        let json = serde_json::to_value(whoami(&User::anonymous())).unwrap();
        assert_eq!(json["user_dn"], "anon");
        assert_eq!(json["dn"], serde_json::json!(["anon"]));
        assert_eq!(json["level"], serde_json::json!([]));
        assert_eq!(json["delegation_id"], serde_json::Value::Null);
        assert_eq!(json["method"], "unauthenticated");
        assert_eq!(json["base_id"], "01874efb-4735-4595-bc9c-591aef8240c9");
        assert_eq!(json["is_root"], false);
    }
}

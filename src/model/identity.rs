//! Who a caller is, in FTS3's terms (`../shared/spec/fts-rest-api.md` §2), and what they may do.
//!
//! `User` is the value the reference calls "credentials": it is derived from facts the TLS layer
//! proved (DN, FQANs) plus configuration (role grants) and stored grants (authorized DNs). The
//! derivation rules live here as pure functions so they can be tested without a server.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The constant namespace FTS3 uses for VO ids and deterministic job ids (`get_base_id()`).
pub const BASE_ID: Uuid = uuid::uuid!("01874efb-4735-4595-bc9c-591aef8240c9");

/// The DN the reference gives callers without credentials.
pub const ANONYMOUS_DN: &str = "anon";

/// Operations that are authorized separately (`constants.py` in the reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Deleg,
    Transfer,
    Config,
    Admin,
    #[serde(rename = "datamanagement")]
    DataManagement,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::Transfer,
        Operation::Deleg,
        Operation::Config,
        Operation::Admin,
        Operation::DataManagement,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Deleg => "deleg",
            Operation::Transfer => "transfer",
            Operation::Config => "config",
            Operation::Admin => "admin",
            Operation::DataManagement => "datamanagement",
        }
    }

    pub fn parse(s: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.as_str() == s)
    }
}

/// How far a grant reaches: own resources, the caller's VOs, or everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    #[serde(rename = "")]
    Private,
    #[serde(rename = "vo")]
    Vo,
    #[serde(rename = "all")]
    All,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Private => "",
            Level::Vo => "vo",
            Level::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "" => Some(Level::Private),
            "vo" => Some(Level::Vo),
            "all" => Some(Level::All),
            _ => None,
        }
    }
}

/// Granted levels keyed by operation name. Keys are strings because the configuration may name
/// the wildcard `*` and operations this version does not know yet; the reference does the same.
pub type Levels = BTreeMap<String, Level>;

/// The `[roles]` configuration: role name (lower case) → granted levels.
/// `public` applies to every authenticated caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleGrants(pub BTreeMap<String, Levels>);

/// Why a `[roles]` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role {role:?}: {reason}")]
pub struct RoleGrantError {
    pub role: String,
    pub reason: String,
}

impl RoleGrants {
    /// The reference's shipped default: `Public = vo:transfer;all:datamanagement`.
    pub fn reference_default() -> RoleGrants {
        let mut map = BTreeMap::new();
        map.insert(
            "public".to_string(),
            parse_grant("vo:transfer;all:datamanagement").expect("constant grant string parses"),
        );
        RoleGrants(map)
    }

    /// Parse `role = "level:operation;level:operation"` entries. Role names are lower-cased.
    pub fn parse<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<RoleGrants, RoleGrantError> {
        let mut map = BTreeMap::new();
        for (role, spec) in entries {
            let levels = parse_grant(spec).map_err(|reason| RoleGrantError {
                role: role.to_string(),
                reason,
            })?;
            map.insert(role.to_lowercase(), levels);
        }
        Ok(RoleGrants(map))
    }
}

/// One grant string: `level:operation` items separated by `;`. An item without `:` grants the
/// private level (the reference's rule). Unknown levels and operations are refused so a typo
/// cannot silently widen or narrow access (`vo:transfr` would leave users unable to submit).
fn parse_grant(spec: &str) -> Result<Levels, String> {
    let mut levels = Levels::new();
    for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (level, op) = match item.split_once(':') {
            Some((level, op)) => (level.trim(), op.trim()),
            None => ("", item),
        };
        let level = Level::parse(level)
            .ok_or_else(|| format!("unknown level {level:?} in {item:?} (use \"\", vo or all)"))?;
        if op.is_empty() {
            return Err(format!("missing operation in {item:?}"));
        }
        // An unknown operation would grant nothing, silently: refused like an unknown level.
        if op != "*" && Operation::parse(op).is_none() {
            let known: Vec<&str> = Operation::ALL.iter().map(|o| o.as_str()).collect();
            return Err(format!(
                "unknown operation {op:?} in {item:?} (use {} or *)",
                known.join(", ")
            ));
        }
        levels.insert(op.to_string(), level);
    }
    Ok(levels)
}

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    Certificate,
    /// A bearer token (OAuth2 / WLCG JWT).
    Oauth2,
    Unauthenticated,
}

/// The caller as FTS3 sees it (the reference's `UserCredentials`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub user_dn: String,
    pub dn: Vec<String>,
    pub voms_cred: Vec<String>,
    pub vos: Vec<String>,
    pub roles: Vec<String>,
    /// `None` for anonymous callers (serialised as `[]` like the reference).
    pub level: Option<Levels>,
    pub delegation_id: Option<String>,
    pub method: AuthMethod,
    pub is_root: bool,
    /// Token users: the token's scopes, space-joined (`oauth2_scope` in whoami).
    pub oauth2_scope: Option<String>,
    /// Token users: whether the token follows the WLCG profile (has `wlcg.ver`).
    pub wlcg_profile: Option<bool>,
}

/// What a validated bearer token says about its holder (spec tokens.md §A.2 step 5).
pub struct TokenFacts<'a> {
    /// `iss` as in the token.
    pub issuer: &'a str,
    pub subject: &'a str,
    /// The scopes, sorted (`None`: the token has no scope claim).
    pub scopes: Option<&'a [String]>,
    /// `wlcg.groups`.
    pub groups: Option<&'a [String]>,
    pub wlcg_profile: bool,
    /// The VO configured for the token's provider.
    pub provider_vo: Option<&'a str>,
    /// DN grants stored for the subject (`/config/authorize`).
    pub dn_grants: &'a [String],
}

/// What the TLS layer proved about a certificate caller, plus what the server knows about it.
pub struct CertificateFacts<'a> {
    /// End-entity DN in OpenSSL slash form.
    pub user_dn: &'a str,
    /// Verified FQANs, in the order of the attribute certificates.
    pub fqans: &'a [String],
    /// The caller's DN equals the server certificate's DN.
    pub is_root: bool,
    /// DN grants stored by operators (`/config/authorize`): operations granted at level `all`.
    pub dn_grants: &'a [String],
}

impl User {
    pub fn anonymous() -> User {
        User {
            user_dn: ANONYMOUS_DN.to_string(),
            dn: vec![ANONYMOUS_DN.to_string()],
            voms_cred: Vec::new(),
            vos: Vec::new(),
            roles: Vec::new(),
            level: None,
            delegation_id: None,
            method: AuthMethod::Unauthenticated,
            is_root: false,
            oauth2_scope: None,
            wlcg_profile: None,
        }
    }

    /// The FTS3 credentials of a token holder (the reference's `methods/oauth2.py`):
    /// `user_dn = sub`, delegation id `sha1(iss ‖ sub)[:16]`, the VO from the provider's
    /// configuration, else each `wlcg.groups` entry without its leading `/`, else the
    /// issuer's host name; in the last two cases the scopes become `voms_cred`. Every
    /// authorization check grants such users `all` ([`User::granted_level_for`]); `level` shows
    /// what the role configuration would give, as the reference's whoami does.
    pub fn from_token(facts: &TokenFacts<'_>, roles_config: &RoleGrants) -> User {
        let mut vos: Vec<String> = Vec::new();
        let mut voms_cred = Vec::new();
        if let Some(vo) = facts.provider_vo.filter(|v| !v.is_empty()) {
            vos.push(vo.to_string());
        } else {
            match facts.groups {
                Some(groups) => {
                    for group in groups {
                        let group = group.strip_prefix('/').unwrap_or(group);
                        if !vos.iter().any(|v| v == group) {
                            vos.push(group.to_string());
                        }
                    }
                }
                None => vos.push(issuer_host(facts.issuer)),
            }
            if let Some(scopes) = facts.scopes {
                voms_cred.extend(scopes.iter().cloned());
            }
        }
        let roles = roles_from_fqans(&voms_cred);
        let level = granted_levels(false, &roles, facts.dn_grants, roles_config);
        let mut id = String::with_capacity(facts.issuer.len() + facts.subject.len());
        id.push_str(facts.issuer);
        id.push_str(facts.subject);
        User {
            user_dn: facts.subject.to_string(),
            dn: vec![facts.subject.to_string()],
            voms_cred,
            vos,
            roles,
            level: Some(level),
            delegation_id: Some(delegation_id(&id, &[])),
            method: AuthMethod::Oauth2,
            is_root: false,
            oauth2_scope: facts.scopes.filter(|s| !s.is_empty()).map(|s| s.join(" ")),
            wlcg_profile: Some(facts.wlcg_profile),
        }
    }

    /// Derive the FTS3 credentials of a certificate caller (§2.1, §2.2).
    pub fn from_certificate(facts: &CertificateFacts<'_>, roles_config: &RoleGrants) -> User {
        let delegation_id = delegation_id(facts.user_dn, facts.fqans);
        let mut vos: Vec<String> = Vec::new();
        for fqan in facts.fqans {
            let vo = vo_from_fqan(fqan);
            if !vo.is_empty() && !vos.contains(&vo) {
                vos.push(vo);
            }
        }
        if vos.is_empty() {
            // FTS-1766: with no VO at all the reference uses the delegation id as the VO.
            vos.push(delegation_id.clone());
        }
        let roles = roles_from_fqans(facts.fqans);
        let level = granted_levels(facts.is_root, &roles, facts.dn_grants, roles_config);
        User {
            user_dn: facts.user_dn.to_string(),
            dn: vec![facts.user_dn.to_string()],
            voms_cred: facts.fqans.to_vec(),
            vos,
            roles,
            level: Some(level),
            delegation_id: Some(delegation_id),
            method: AuthMethod::Certificate,
            is_root: facts.is_root,
            oauth2_scope: None,
            wlcg_profile: None,
        }
    }

    /// `get_granted_level_for`: the operation's own grant, else the `*` grant, else none.
    /// Token users get `all` for everything (the reference overrides the method for them).
    pub fn granted_level_for(&self, op: Operation) -> Option<Level> {
        if self.method == AuthMethod::Oauth2 {
            return Some(Level::All);
        }
        let level = self.level.as_ref()?;
        level.get(op.as_str()).or_else(|| level.get("*")).copied()
    }

    /// The reference's `authorized(op, resource_owner, resource_vo)`: may this user act on a
    /// resource owned by `owner` in `vo`?
    pub fn authorized(&self, op: Operation, owner: Option<&str>, vo: Option<&str>) -> bool {
        match self.granted_level_for(op) {
            Some(Level::All) => true,
            Some(Level::Vo) => {
                vo.is_none_or(|vo| self.vos.iter().any(|v| v == vo))
                    || owner == Some(self.user_dn.as_str())
            }
            Some(Level::Private) => owner.is_none_or(|o| o == self.user_dn),
            None => false,
        }
    }

    /// `uuid5(BASE_ID, vo)` for each VO, as whoami reports them.
    pub fn vos_id(&self) -> Vec<Uuid> {
        self.vos.iter().map(|vo| vo_id(vo)).collect()
    }
}

/// `sha1(dn ‖ fqan_1 ‖ … ‖ fqan_n)`, first 16 hex digits: the id of the caller's delegated
/// credential. Plain concatenation without separators, as the reference (and the C++ server
/// before it) computes it; clients never compute it themselves but stored ids depend on it.
pub fn delegation_id(dn: &str, fqans: &[String]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(dn.as_bytes());
    for fqan in fqans {
        ctx.update(fqan.as_bytes());
    }
    let digest = ctx.finish();
    let mut hex = String::with_capacity(16);
    for byte in &digest.as_ref()[..8] {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// The VO (with groups) of an FQAN: `/dteam/cern/Role=lcgadmin` → `dteam/cern`.
pub fn vo_from_fqan(fqan: &str) -> String {
    fqan.split('/')
        .skip(1)
        .take_while(|c| !c.to_ascii_lowercase().starts_with("role="))
        .collect::<Vec<_>>()
        .join("/")
}

/// Roles named in FQANs (`…/Role=<name>…`), skipping `NULL`.
pub fn roles_from_fqans(fqans: &[String]) -> Vec<String> {
    fqans.iter().filter_map(|f| role_of(f)).collect()
}

/// The reference matches `(/.+)*/Role=(\w+)(/.*)?` anchored at the start, case-insensitively;
/// the greedy prefix means the *last* `/Role=` segment wins.
fn role_of(fqan: &str) -> Option<String> {
    if !fqan.starts_with('/') {
        return None;
    }
    let lower = fqan.to_ascii_lowercase();
    let pos = lower.rfind("/role=")?;
    let rest = &fqan[pos + "/role=".len()..];
    let name: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let after = &rest[name.len()..];
    if name.is_empty() || !(after.is_empty() || after.starts_with('/')) {
        return None;
    }
    if name.eq_ignore_ascii_case("NULL") {
        None
    } else {
        Some(name)
    }
}

/// The host of an issuer URL (`https://iam.example:8443/x` → `iam.example`), or the issuer
/// itself when it has none (the reference's `urlparse(issuer).hostname` with its fallback).
pub fn issuer_host(issuer: &str) -> String {
    let rest = issuer.split_once("://").map_or(issuer, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.is_empty() {
        issuer.to_string()
    } else {
        host.to_ascii_lowercase()
    }
}

/// `uuid5(BASE_ID, vo)`.
pub fn vo_id(vo: &str) -> Uuid {
    Uuid::new_v5(&BASE_ID, vo.as_bytes())
}

/// §2.2: root gets everything; otherwise `public`, overridden by each role's grants, then every
/// stored DN grant raises its operation to `all`, and `admin` implies `config`.
fn granted_levels(
    is_root: bool,
    roles: &[String],
    dn_grants: &[String],
    config: &RoleGrants,
) -> Levels {
    if is_root {
        return Operation::ALL
            .iter()
            .map(|op| (op.as_str().to_string(), Level::All))
            .collect();
    }
    let mut level = config.0.get("public").cloned().unwrap_or_default();
    for role in roles {
        if let Some(grants) = config.0.get(role.as_str()) {
            level.extend(grants.iter().map(|(k, v)| (k.clone(), *v)));
        }
    }
    for op in dn_grants {
        level.insert(op.clone(), Level::All);
    }
    if level.get(Operation::Admin.as_str()) == Some(&Level::All) {
        level.insert(Operation::Config.as_str().to_string(), Level::All);
    }
    level
}

/// A grant as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub dn: String,
    pub operation: String,
    pub granted_at: i64,
}

/// What the store holds about a DN, read once per request: whether it is banned and the
/// operations it was granted by DN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredAccess {
    pub banned: bool,
    pub grants: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn delegation_id_matches_the_reference_examples() {
        let fqans = strings(&[
            "/testvo/Role=NULL/Capability=NULL",
            "/testvo/Role=myrole/Capability=NULL",
            "/testvo/Role=lcgadmin/Capability=NULL",
        ]);
        assert_eq!(
            delegation_id("/DC=ch/DC=cern/CN=Test User", &fqans),
            "3df3433182cc378b"
        );
        assert_eq!(
            delegation_id("/DC=ch/DC=cern/CN=Test User", &[]),
            "92fbce05ea766c17"
        );
    }

    #[test]
    fn vo_is_the_fqan_path_before_the_role() {
        assert_eq!(vo_from_fqan("/dteam/cern/Role=lcgadmin"), "dteam/cern");
        assert_eq!(vo_from_fqan("/dteam/Role=NULL/Capability=NULL"), "dteam");
        assert_eq!(vo_from_fqan("/atlas"), "atlas");
        assert_eq!(vo_from_fqan("/cms/ROLE=x"), "cms");
    }

    #[test]
    fn roles_skip_null_and_keep_order() {
        let fqans = strings(&[
            "/testvo/Role=NULL/Capability=NULL",
            "/testvo/Role=myrole/Capability=NULL",
            "/testvo/Role=lcgadmin/Capability=NULL",
            "/testvo/group",
        ]);
        assert_eq!(roles_from_fqans(&fqans), strings(&["myrole", "lcgadmin"]));
        assert_eq!(
            roles_from_fqans(&strings(&["/x/role=Prod"])),
            strings(&["Prod"])
        );
    }

    #[test]
    fn vo_ids_are_uuid5_of_the_base_id() {
        assert_eq!(
            vo_id("testvo").to_string(),
            "477b9065-8416-5b27-be32-ff1573788e71"
        );
    }

    #[test]
    fn whoami_example_of_the_spec() {
        let fqans = strings(&[
            "/testvo/Role=NULL/Capability=NULL",
            "/testvo/Role=myrole/Capability=NULL",
            "/testvo/Role=lcgadmin/Capability=NULL",
        ]);
        let config = RoleGrants::parse([
            ("Public", "vo:transfer;all:datamanagement"),
            ("lcgadmin", "all:config"),
        ])
        .unwrap();
        let user = User::from_certificate(
            &CertificateFacts {
                user_dn: "/DC=ch/DC=cern/CN=Test User",
                fqans: &fqans,
                is_root: false,
                dn_grants: &[],
            },
            &config,
        );
        assert_eq!(user.vos, strings(&["testvo"]));
        assert_eq!(user.roles, strings(&["myrole", "lcgadmin"]));
        assert_eq!(user.delegation_id.as_deref(), Some("3df3433182cc378b"));
        let level = user.level.clone().unwrap();
        assert_eq!(level.get("transfer"), Some(&Level::Vo));
        assert_eq!(level.get("datamanagement"), Some(&Level::All));
        assert_eq!(level.get("config"), Some(&Level::All));
        assert_eq!(level.len(), 3);
        assert_eq!(user.granted_level_for(Operation::Deleg), None);
    }

    #[test]
    fn no_vo_means_the_delegation_id_is_the_vo() {
        let user = User::from_certificate(
            &CertificateFacts {
                user_dn: "/DC=ch/DC=cern/CN=Test User",
                fqans: &[],
                is_root: false,
                dn_grants: &[],
            },
            &RoleGrants::reference_default(),
        );
        assert_eq!(user.vos, strings(&["92fbce05ea766c17"]));
    }

    #[test]
    fn dn_grants_raise_to_all_and_admin_implies_config() {
        let user = User::from_certificate(
            &CertificateFacts {
                user_dn: "/CN=x",
                fqans: &[],
                is_root: false,
                dn_grants: &strings(&["admin"]),
            },
            &RoleGrants::reference_default(),
        );
        assert_eq!(user.granted_level_for(Operation::Admin), Some(Level::All));
        assert_eq!(user.granted_level_for(Operation::Config), Some(Level::All));
        assert_eq!(user.granted_level_for(Operation::Transfer), Some(Level::Vo));
    }

    #[test]
    fn root_gets_everything_and_wildcard_applies() {
        let root = User::from_certificate(
            &CertificateFacts {
                user_dn: "/CN=host",
                fqans: &[],
                is_root: true,
                dn_grants: &[],
            },
            &RoleGrants::default(),
        );
        for op in Operation::ALL {
            assert_eq!(root.granted_level_for(op), Some(Level::All));
        }
        let config = RoleGrants::parse([("public", "vo:*;deleg")]).unwrap();
        let user = User::from_certificate(
            &CertificateFacts {
                user_dn: "/CN=u",
                fqans: &[],
                is_root: false,
                dn_grants: &[],
            },
            &config,
        );
        assert_eq!(user.granted_level_for(Operation::Config), Some(Level::Vo));
        assert_eq!(
            user.granted_level_for(Operation::Deleg),
            Some(Level::Private)
        );
    }

    #[test]
    fn token_users_follow_the_reference() {
        let scopes = strings(&["fts", "offline_access", "storage.read:/"]);
        let groups = strings(&["/atlas", "/atlas/ops", "/atlas"]);
        let facts = TokenFacts {
            issuer: "https://iam.example/",
            subject: "a-subject",
            scopes: Some(&scopes),
            groups: Some(&groups),
            wlcg_profile: true,
            provider_vo: None,
            dn_grants: &[],
        };
        let user = User::from_token(&facts, &RoleGrants::reference_default());
        assert_eq!(user.user_dn, "a-subject");
        assert_eq!(user.dn, strings(&["a-subject"]));
        // hashlib.sha1(b"https://iam.example/" + b"a-subject").hexdigest()[:16]
        assert_eq!(user.delegation_id.as_deref(), Some("074c994c3402ea31"));
        assert_eq!(user.vos, strings(&["atlas", "atlas/ops"]));
        assert_eq!(user.voms_cred, scopes);
        assert_eq!(user.method, AuthMethod::Oauth2);
        assert_eq!(
            user.oauth2_scope.as_deref(),
            Some("fts offline_access storage.read:/")
        );
        assert_eq!(user.wlcg_profile, Some(true));
        // `all` everywhere, whatever the roles say.
        for op in Operation::ALL {
            assert_eq!(user.granted_level_for(op), Some(Level::All));
        }
        assert!(user.authorized(Operation::Config, Some("/CN=other"), Some("cms")));

        let configured = User::from_token(
            &TokenFacts {
                provider_vo: Some("dteam"),
                ..facts
            },
            &RoleGrants::reference_default(),
        );
        assert_eq!(configured.vos, strings(&["dteam"]));
        assert!(configured.voms_cred.is_empty());
        let no_groups = User::from_token(
            &TokenFacts {
                issuer: "https://IAM.example:8443/realm/",
                groups: None,
                scopes: None,
                ..facts
            },
            &RoleGrants::reference_default(),
        );
        assert_eq!(no_groups.vos, strings(&["iam.example"]));
        assert_eq!(no_groups.oauth2_scope, None);
    }

    #[test]
    fn bad_grant_strings_are_refused() {
        assert!(RoleGrants::parse([("public", "everything:transfer")]).is_err());
        assert!(RoleGrants::parse([("public", "all:")]).is_err());
        let err = RoleGrants::parse([("public", "vo:transfr;all:datamanagement")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "role \"public\": unknown operation \"transfr\" in \"vo:transfr\" (use transfer, deleg, \
             config, admin, datamanagement or *)"
        );
    }
}

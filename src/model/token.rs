//! OAuth2 / WLCG bearer tokens as the service, the store and the engine see them
//! (`../shared/spec/tokens.md` Part A, `fts-rest-api.md` §4.9): the secret itself, its id, what
//! its payload says (read without verification: the signature is checked in `auth::oidc`), the
//! row a submission stores (`t_token`), and the texts the reference writes about them.
//!
//! Invariant: a token value lives in a [`Secret`], whose `Debug` never shows it; what may be
//! logged is [`token_id`], [`redacted`] (the reference's `abcde...vwxyz`) or [`payload_summary`]
//! (claims only, never the signature, so never a usable token).

use base64::Engine as _;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// The WLCG "any audience" value: XRootD and FTS accept it everywhere; the reference's REST
/// default for `AuthorizedAudiences`.
pub const WLCG_ANY_AUDIENCE: &str = "https://wlcg.cern.ch/jwt/v1/any";

/// A token value (access or refresh token). Zeroized on drop; `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(Zeroizing::new(value.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// `sha1(token).hexdigest()[:16]`: the reference's `generate_token_id`, the key of `t_token` and
/// the `src_token_id`/`dst_token_id` of files.
pub fn token_id(token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        token.as_bytes(),
    );
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The reference's `accessTokenToString`: the first and last five characters, for log lines
/// and error texts that must say which token without revealing it.
pub fn redacted(token: &str) -> String {
    if token.is_empty() {
        return "null".into();
    }
    let chars: Vec<char> = token.chars().collect();
    if chars.len() <= 10 {
        return "...".into();
    }
    let head: String = chars[..5].iter().collect();
    let tail: String = chars[chars.len() - 5..].iter().collect();
    format!("{head}...{tail}")
}

/// Why a string is not a JWT (PyJWT's texts, which the reference passes through).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JwtFormatError(pub String);

/// A JWT split and decoded, not verified.
#[derive(Debug, Clone)]
pub struct Unverified {
    pub header: Map<String, Value>,
    pub payload: Map<String, Value>,
    /// `header.payload`, the signed input.
    pub signing_input_len: usize,
}

fn b64url(part: &str) -> Option<Vec<u8>> {
    // Padding is optional in JWTs; accept both.
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()
}

/// Split a compact JWS and decode header and payload, with PyJWT's error texts.
pub fn decode_unverified(token: &str) -> Result<Unverified, JwtFormatError> {
    let err = |s: &str| JwtFormatError(s.to_string());
    let mut parts = token.splitn(3, '.');
    let (Some(header), Some(payload), Some(signature)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(err("Not enough segments"));
    };
    if signature.contains('.') {
        return Err(err("Not enough segments"));
    }
    let header_bytes = b64url(header).ok_or_else(|| err("Invalid header padding"))?;
    let header: Map<String, Value> = match serde_json::from_slice::<Value>(&header_bytes) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(err("Invalid header string: must be a json object")),
        Err(e) => return Err(JwtFormatError(format!("Invalid header string: {e}"))),
    };
    let payload_bytes = b64url(payload).ok_or_else(|| err("Invalid payload padding"))?;
    let payload: Map<String, Value> = match serde_json::from_slice::<Value>(&payload_bytes) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(err("Invalid payload string: must be a json object")),
        Err(e) => return Err(JwtFormatError(format!("Invalid payload string: {e}"))),
    };
    Ok(Unverified {
        header,
        payload,
        signing_input_len: token.len() - signature.len() - 1,
    })
}

/// An integer claim (JSON numbers; floats are truncated as Python's `int()` does).
pub fn int_claim(payload: &Map<String, Value>, name: &str) -> Option<i64> {
    match payload.get(name)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The `scope` claim as the reference reads it: a string split on white space or a list,
/// sorted. `None` when absent (or of another type).
pub fn scopes(payload: &Map<String, Value>) -> Option<Vec<String>> {
    let mut scopes: Vec<String> = match payload.get("scope")? {
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => return None,
    };
    scopes.sort();
    Some(scopes)
}

/// `wlcg.groups`, when it is a list of strings.
pub fn groups(payload: &Map<String, Value>) -> Option<Vec<String>> {
    match payload.get("wlcg.groups")? {
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        ),
        _ => None,
    }
}

/// The reference's `safe_issuer`: the issuer with a trailing `/`.
pub fn safe_issuer(issuer: &str) -> String {
    if issuer.ends_with('/') {
        issuer.to_string()
    } else {
        format!("{issuer}/")
    }
}

/// The reference's `accessTokenPayload` (url-copy's log line): the claims `aud`, `iat`, `nbf`,
/// `exp`, `iss`, `scope`, `wlcg.ver` as compact JSON; never the signature.
pub fn payload_summary(token: &str) -> String {
    match decode_unverified(token) {
        Ok(jwt) => {
            let mut kept = Map::new();
            for key in ["aud", "iat", "nbf", "exp", "iss", "scope", "wlcg.ver"] {
                if let Some(v) = jwt.payload.get(key) {
                    kept.insert(key.to_string(), v.clone());
                }
            }
            Value::Object(kept).to_string()
        }
        Err(_) => "Failed to decode token!".to_string(),
    }
}

/// A transfer token of a submission, as `t_token` keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub token_id: String,
    pub access_token: Secret,
    /// `iss` with a trailing `/` ([`safe_issuer`]).
    pub issuer: String,
    pub scope: String,
    /// `aud` space-joined (a list) or as is; `None` for a null `aud`.
    pub audience: Option<String>,
    pub not_before: i64,
    pub expiry: i64,
    /// Used as given: never exchanged nor refreshed.
    pub unmanaged: bool,
}

/// The reference's texts about the claims of a submitted token.
pub mod msg {
    pub const NO_ISS: &str = "Token does not contain an iss claim";
    pub const NO_NBF: &str = "Token does not contain a nbf claim";
    pub const NO_EXP: &str = "Token does not contain an exp claim";
    pub const NO_SCOPE: &str = "Token does not contain a scope claim";
    pub const NO_AUD: &str = "Token does not contain an aud claim";
    pub const FAILED_TO_VALIDATE: &str = "Failed to validate access-token";
    pub const ARCHIVE_WITH_TOKENS: &str =
        "Requests to archive to tape using token authentication are not supported";
    pub const STAGING_WITH_TOKENS: &str =
        "Requests to retrieve from tape using token authentication are not supported";
    pub const BOTH_LISTS: &str =
        "Both source_tokens and destination_tokens are required if one of them is present.";
    pub const SOURCE_LENGTH: &str =
        "Length of source_tokens should be equal to the length of sources.";
    pub const DESTINATION_LENGTH: &str =
        "Length of destination_tokens should be equal to the length of destinations.";
    pub const EMPTY_LISTS: &str = "Source tokens and destination tokens lists should not be empty.";

    pub fn source_missing(url: &str) -> String {
        format!("Token for source '{url}' is missing.")
    }
    pub fn destination_missing(url: &str) -> String {
        format!("Token for destination '{url}' is missing.")
    }
    pub fn fts_token_unknown_issuer(issuer: &str) -> String {
        format!("FTS access-token has unknown issuer: issuer={issuer}")
    }
    pub fn transfer_token_unknown_issuer(issuer: &str) -> String {
        format!("Transfer access-token has unknown issuer: issuer={issuer}")
    }
    /// The file reason of a failed exchange (`failTransfersWithFailedTokenExchange`).
    pub fn exchange_failed(source: bool, message: &str) -> String {
        let side = if source { "source" } else { "destination" };
        format!("[TokenExchange] Failed to get refresh token for {side} token: {message}")
    }
    /// The transfer error when a refresh could not be had in time (url-copy).
    pub fn refresh_failed(source: bool) -> String {
        let side = if source { "source" } else { "destination" };
        format!("Failed to obtain refresh token for {side}")
    }
}

impl NewToken {
    /// `_populate_tokens`: the claims every transfer token must carry, with the reference's
    /// messages. The signature is not checked here.
    pub fn from_raw(raw: &str, unmanaged: bool) -> Result<NewToken, String> {
        // The reference logs an undecodable token and goes on with no claims, so the first
        // missing claim is what the user hears about.
        let payload = decode_unverified(raw)
            .map(|j| j.payload)
            .unwrap_or_default();
        let issuer = match payload.get("iss") {
            Some(Value::String(iss)) => safe_issuer(iss),
            _ => return Err(msg::NO_ISS.into()),
        };
        let not_before = int_claim(&payload, "nbf").ok_or(msg::NO_NBF)?;
        let expiry = int_claim(&payload, "exp").ok_or(msg::NO_EXP)?;
        let scope = match payload.get("scope") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            _ => return Err(msg::NO_SCOPE.into()),
        };
        let audience = match payload.get("aud") {
            None => return Err(msg::NO_AUD.into()),
            Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Some(other) => {
                return Err(format!(
                    "Token audience must be a null, string or list of strings: actual_type=<class '{}'>",
                    match other {
                        Value::Bool(_) => "bool",
                        Value::Number(n) if n.is_f64() => "float",
                        Value::Number(_) => "int",
                        Value::Object(_) => "dict",
                        _ => "list",
                    }
                ));
            }
        };
        Ok(NewToken {
            token_id: token_id(raw),
            access_token: Secret::new(raw),
            issuer,
            scope,
            audience,
            not_before,
            expiry,
            unmanaged,
        })
    }

    /// `nbf + (exp − nbf)/2`: when the reference plans the first refresh.
    pub fn refresh_after(&self) -> i64 {
        let lifetime = (self.expiry - self.not_before).max(0);
        self.not_before + lifetime / 2
    }
}

/// Whether `scope` (space-separated) holds `offline_access`.
pub fn has_offline_access(scope: &str) -> bool {
    scope.split_whitespace().any(|s| s == "offline_access")
}

/// A stored token with its secrets, for the engine.
#[derive(Debug, Clone)]
pub struct TokenMaterial {
    pub token_id: String,
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    pub issuer: String,
    pub scope: String,
    pub audience: Option<String>,
    /// Unix seconds when the current access token expires.
    pub expiry: i64,
    pub unmanaged: bool,
    /// Why the last exchange failed, if it did (the reason files were failed with).
    pub exchange_message: Option<String>,
    /// Why the last refresh failed, if it did.
    pub refresh_message: Option<String>,
}

impl TokenMaterial {
    /// Ready for transfers: unmanaged (used as given) or exchanged for a refresh token.
    pub fn ready(&self) -> bool {
        self.unmanaged || self.refresh_token.is_some()
    }
}

/// A change to a stored token.
#[derive(Debug, Clone)]
pub enum TokenChange {
    /// The exchange gave a refresh token (and maybe a new access token and its expiry).
    Exchanged {
        access_token: Option<Secret>,
        refresh_token: Secret,
        expiry: i64,
    },
    ExchangeFailed {
        message: String,
    },
    /// A refresh gave a new access token (and maybe a rotated refresh token).
    Refreshed {
        access_token: Secret,
        refresh_token: Option<Secret>,
        expiry: i64,
    },
    RefreshFailed {
        message: String,
    },
}

impl TokenMaterial {
    /// Apply `change` (the store calls this inside its transaction).
    pub fn apply(&mut self, change: &TokenChange) {
        match change {
            TokenChange::Exchanged {
                access_token,
                refresh_token,
                expiry,
            } => {
                if let Some(at) = access_token {
                    self.access_token = at.clone();
                }
                self.refresh_token = Some(refresh_token.clone());
                self.expiry = *expiry;
                self.exchange_message = None;
            }
            TokenChange::ExchangeFailed { message } => {
                self.exchange_message = Some(message.clone());
            }
            TokenChange::Refreshed {
                access_token,
                refresh_token,
                expiry,
            } => {
                self.access_token = access_token.clone();
                if let Some(rt) = refresh_token {
                    self.refresh_token = Some(rt.clone());
                }
                self.expiry = *expiry;
                self.refresh_message = None;
            }
            TokenChange::RefreshFailed { message } => {
                self.refresh_message = Some(message.clone());
            }
        }
    }
}

/// Hide `secrets` (each replaced by its [`redacted`] form) in a text from a token provider.
pub fn hide(text: &str, secrets: &[(&str, &str)]) -> String {
    let mut out = text.to_string();
    for (secret, replacement) in secrets {
        if !secret.is_empty() {
            out = out.replace(secret, replacement);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: serde_json::Value) -> String {
        let e = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.c2ln",
            e(&serde_json::json!({"alg": "RS256", "typ": "JWT"})),
            e(&payload)
        )
    }

    #[test]
    fn ids_are_the_references_sha1_prefix() {
        // hashlib.sha1(b"abc").hexdigest()[:16]
        assert_eq!(token_id("abc"), "a9993e364706816a");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = Secret::new("eyJsecret.value.sig");
        assert!(!format!("{s:?}").contains("secret"));
        assert_eq!(redacted("0123456789abcdef"), "01234...bcdef");
    }

    #[test]
    fn claims_are_required_with_the_references_messages() {
        let full = serde_json::json!({"iss": "https://iam.example", "nbf": 10, "exp": 110,
            "scope": "storage.read:/ offline_access", "aud": ["a", "b"]});
        let t = NewToken::from_raw(&jwt(full.clone()), false).unwrap();
        assert_eq!(t.issuer, "https://iam.example/");
        assert_eq!(t.audience.as_deref(), Some("a b"));
        assert_eq!(t.refresh_after(), 60);
        for (drop, message) in [
            ("iss", msg::NO_ISS),
            ("nbf", msg::NO_NBF),
            ("exp", msg::NO_EXP),
            ("scope", msg::NO_SCOPE),
            ("aud", msg::NO_AUD),
        ] {
            let mut p = full.clone();
            p.as_object_mut().unwrap().remove(drop);
            assert_eq!(NewToken::from_raw(&jwt(p), false).unwrap_err(), message);
        }
        assert_eq!(
            NewToken::from_raw("not a jwt", false).unwrap_err(),
            msg::NO_ISS
        );
        let mut p = full;
        p["aud"] = serde_json::json!(null);
        assert_eq!(NewToken::from_raw(&jwt(p), false).unwrap().audience, None);
    }

    #[test]
    fn format_errors_use_pyjwt_texts() {
        assert_eq!(
            decode_unverified("abc").unwrap_err().0,
            "Not enough segments"
        );
        assert!(
            decode_unverified("e30.!!!.x")
                .unwrap_err()
                .0
                .contains("payload padding")
        );
    }

    #[test]
    fn the_payload_summary_never_holds_the_signature() {
        let token = jwt(serde_json::json!({"iss": "i", "sub": "s", "scope": "x"}));
        let summary = payload_summary(&token);
        assert_eq!(summary, r#"{"iss":"i","scope":"x"}"#);
        assert!(!summary.contains("c2ln"));
    }
}

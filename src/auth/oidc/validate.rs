//! Offline validation of a JWT against a provider's keys: the claim checks of PyJWT as the
//! reference calls it (leeway 0; `iat`, `nbf`, `exp`, then `aud`, with PyJWT's texts) and the
//! signature, with the reference's key choice (keys whose `kid` is the header's or whose `alg`
//! is the header's, else every key; the first that verifies wins).
//!
//! Pure: the clock and the keys come in as arguments, so every case is tested here.
//!
//! Only asymmetric algorithms are accepted ([`ALLOWED_ALGORITHMS`]): `alg: none` and HMAC
//! (which would let a public key be used as a shared secret) fail like a bad signature.
//! Deviation: the reference accepts a token without `exp` or `sub` from PyJWT and then fails on
//! the missing claim with a server error; here they are reported like PyJWT's other missing
//! claims (`Token is missing the "exp" claim`).

use jsonwebtoken::{Algorithm, DecodingKey, jwk::Jwk};
use serde_json::{Map, Value};

use crate::model::token::int_claim;

/// Signature algorithms a token may use.
pub const ALLOWED_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
];

/// The reference's text when no key verifies a token (its `access_denied`).
pub const INVALID_CREDENTIALS: &str = "Invalid OAuth2 credentials";

/// Why a token is refused; the text is what the API reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A claim check failed (PyJWT's text).
    #[error("{0}")]
    Claim(String),
    /// No key verifies the signature, or the algorithm is not allowed.
    #[error("{INVALID_CREDENTIALS}")]
    Signature,
}

/// A provider's signing keys (its JWKS), the keys this build cannot use left out.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    keys: Vec<Jwk>,
}

impl Keys {
    /// Parse a JWKS document (`{"keys": [...]}`); keys of unknown types are skipped, so one odd
    /// key does not make a provider unusable.
    pub fn parse(json: &[u8]) -> Result<Keys, String> {
        let value: Value =
            serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let Some(list) = value.get("keys").and_then(Value::as_array) else {
            return Err("not a JWKS document: no \"keys\" list".into());
        };
        let keys = list
            .iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .collect();
        Ok(Keys { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key has this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys
            .iter()
            .any(|k| k.common.key_id.as_deref() == Some(kid))
    }

    /// The reference's `filter_provider_keys`: keys matching the header's `kid` or `alg`, else
    /// all of them.
    fn candidates(&self, kid: Option<&str>, alg: &str) -> Vec<&Jwk> {
        let matching: Vec<&Jwk> = self
            .keys
            .iter()
            .filter(|k| {
                (kid.is_some() && k.common.key_id.as_deref() == kid)
                    || k.common.key_algorithm.is_some_and(|a| a.to_string() == alg)
            })
            .collect();
        if matching.is_empty() {
            self.keys.iter().collect()
        } else {
            matching
        }
    }
}

fn claim_int(payload: &Map<String, Value>, name: &str, bad: &str) -> Result<Option<i64>, Invalid> {
    match payload.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => int_claim(payload, name)
            .map(Some)
            .ok_or_else(|| Invalid::Claim(bad.to_string())),
    }
}

/// PyJWT's claim checks with leeway 0, in its order: `iat` not in the future, `nbf` reached,
/// `exp` not reached, then `aud` (one of `audiences`; `None`: not checked, as for transfer
/// tokens). `exp` and `sub` are required.
pub fn check_claims(
    payload: &Map<String, Value>,
    now: i64,
    audiences: Option<&[String]>,
) -> Result<(), Invalid> {
    for required in ["exp", "sub"] {
        if payload.get(required).is_none_or(Value::is_null) {
            return Err(Invalid::Claim(format!(
                "Token is missing the \"{required}\" claim"
            )));
        }
    }
    if let Some(iat) = claim_int(payload, "iat", "Issued At claim (iat) must be an integer.")? {
        if iat > now {
            return Err(Invalid::Claim("The token is not yet valid (iat)".into()));
        }
    }
    if let Some(nbf) = claim_int(payload, "nbf", "Not Before claim (nbf) must be an integer.")? {
        if nbf > now {
            return Err(Invalid::Claim("The token is not yet valid (nbf)".into()));
        }
    }
    if let Some(exp) = claim_int(
        payload,
        "exp",
        "Expiration Time claim (exp) must be an integer.",
    )? {
        if exp <= now {
            return Err(Invalid::Claim("Signature has expired".into()));
        }
    }
    let Some(audiences) = audiences else {
        return Ok(());
    };
    let claimed: Vec<&str> = match payload.get("aud") {
        None | Some(Value::Null) => {
            return Err(Invalid::Claim("Token is missing the \"aud\" claim".into()));
        }
        Some(Value::String(s)) if s.is_empty() => {
            return Err(Invalid::Claim("Token is missing the \"aud\" claim".into()));
        }
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(Invalid::Claim("Token is missing the \"aud\" claim".into()));
        }
        Some(Value::Array(items)) => {
            let strings: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            strings.ok_or_else(|| Invalid::Claim("Invalid claim format in token".into()))?
        }
        Some(_) => return Err(Invalid::Claim("Invalid claim format in token".into())),
    };
    if claimed.iter().any(|c| audiences.iter().any(|a| a == c)) {
        Ok(())
    } else {
        Err(Invalid::Claim("Invalid audience".into()))
    }
}

/// The signature of `token` (whose header is `header`) verifies with one of `keys`.
pub fn check_signature(
    token: &str,
    header: &Map<String, Value>,
    keys: &Keys,
) -> Result<(), Invalid> {
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(Invalid::Signature)?;
    if !ALLOWED_ALGORITHMS.contains(&alg_name) {
        return Err(Invalid::Signature);
    }
    let alg: Algorithm = alg_name.parse().map_err(|_| Invalid::Signature)?;
    let kid = header.get("kid").and_then(Value::as_str);
    let Some((message, signature)) = token.rsplit_once('.') else {
        return Err(Invalid::Signature);
    };
    for jwk in keys.candidates(kid, alg_name) {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        // A key of another family (an EC key for an RS256 token) is an error, not a match.
        if let Ok(true) = jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, alg) {
            return Ok(());
        }
    }
    Err(Invalid::Signature)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::token::decode_unverified;
    use aws_lc_rs::{
        rsa::{KeyPair, KeySize},
        signature::{self as sig, KeyPair as _},
    };
    use base64::Engine as _;
    use serde_json::json;

    /// A test issuer key: an RSA key pair and its JWK.
    pub(crate) struct TestKey {
        pub pair: KeyPair,
        pub kid: String,
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    impl TestKey {
        pub(crate) fn new(kid: &str) -> TestKey {
            TestKey {
                pair: KeyPair::generate(KeySize::Rsa2048).unwrap(),
                kid: kid.into(),
            }
        }

        pub(crate) fn jwk(&self) -> Value {
            let public = self.pair.public_key();
            json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                "n": b64(public.modulus().big_endian_without_leading_zero()),
                "e": b64(public.exponent().big_endian_without_leading_zero()),
            })
        }

        pub(crate) fn jwks(keys: &[&TestKey]) -> Keys {
            let doc = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
            Keys::parse(doc.to_string().as_bytes()).unwrap()
        }

        /// An RS256 token with this header and payload.
        pub(crate) fn sign_with_header(&self, header: &Value, payload: &Value) -> String {
            let input = format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(payload.to_string().as_bytes())
            );
            let mut signature = vec![0; self.pair.public_modulus_len()];
            self.pair
                .sign(
                    &sig::RSA_PKCS1_SHA256,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    input.as_bytes(),
                    &mut signature,
                )
                .unwrap();
            format!("{input}.{}", b64(&signature))
        }

        pub(crate) fn sign(&self, payload: &Value) -> String {
            self.sign_with_header(
                &json!({"alg": "RS256", "typ": "JWT", "kid": self.kid}),
                payload,
            )
        }
    }

    const NOW: i64 = 1_800_000_000;

    fn payload() -> Value {
        json!({"iss": "https://iam.example/", "sub": "u1", "aud": "fts",
               "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 600,
               "scope": "fts offline_access", "wlcg.ver": "1.0"})
    }

    fn audiences() -> Vec<String> {
        vec![
            "fts".to_string(),
            "https://wlcg.cern.ch/jwt/v1/any".to_string(),
        ]
    }

    fn validate(token: &str, keys: &Keys) -> Result<(), Invalid> {
        let jwt = decode_unverified(token).map_err(|e| Invalid::Claim(e.0))?;
        check_claims(&jwt.payload, NOW, Some(&audiences()))?;
        check_signature(token, &jwt.header, keys)
    }

    fn claim(text: &str) -> Result<(), Invalid> {
        Err(Invalid::Claim(text.into()))
    }

    #[test]
    fn good_tokens_with_string_and_list_audiences() {
        let key = TestKey::new("k1");
        let keys = TestKey::jwks(&[&key]);
        assert_eq!(validate(&key.sign(&payload()), &keys), Ok(()));
        let mut p = payload();
        p["aud"] = json!(["other", "https://wlcg.cern.ch/jwt/v1/any"]);
        assert_eq!(validate(&key.sign(&p), &keys), Ok(()));
    }

    #[test]
    fn audience_must_be_authorized_and_present() {
        let key = TestKey::new("k1");
        let keys = TestKey::jwks(&[&key]);
        let mut p = payload();
        p["aud"] = json!("https://other.example");
        assert_eq!(validate(&key.sign(&p), &keys), claim("Invalid audience"));
        p["aud"] = json!(["a", "b"]);
        assert_eq!(validate(&key.sign(&p), &keys), claim("Invalid audience"));
        p.as_object_mut().unwrap().remove("aud");
        assert_eq!(
            validate(&key.sign(&p), &keys),
            claim("Token is missing the \"aud\" claim")
        );
        p["aud"] = json!(5);
        assert_eq!(
            validate(&key.sign(&p), &keys),
            claim("Invalid claim format in token")
        );
        // Transfer tokens: no audience check at all.
        let jwt = decode_unverified(&key.sign(&p)).unwrap();
        assert_eq!(check_claims(&jwt.payload, NOW, None), Ok(()));
    }

    #[test]
    fn time_claims_have_no_leeway() {
        let key = TestKey::new("k1");
        let keys = TestKey::jwks(&[&key]);
        let mut p = payload();
        p["exp"] = json!(NOW);
        assert_eq!(
            validate(&key.sign(&p), &keys),
            claim("Signature has expired")
        );
        p["exp"] = json!(NOW + 1);
        assert_eq!(validate(&key.sign(&p), &keys), Ok(()));
        let mut p = payload();
        p["nbf"] = json!(NOW + 1);
        assert_eq!(
            validate(&key.sign(&p), &keys),
            claim("The token is not yet valid (nbf)")
        );
        let mut p = payload();
        p["iat"] = json!(NOW + 1);
        assert_eq!(
            validate(&key.sign(&p), &keys),
            claim("The token is not yet valid (iat)")
        );
        let mut p = payload();
        p["exp"] = json!("soon");
        assert_eq!(
            validate(&key.sign(&p), &keys),
            claim("Expiration Time claim (exp) must be an integer.")
        );
        let mut p = payload();
        p.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            validate(&key.sign(&p), &keys),
            claim("Token is missing the \"exp\" claim")
        );
    }

    #[test]
    fn forged_payloads_and_foreign_keys_fail_the_signature() {
        let key = TestKey::new("k1");
        let other = TestKey::new("k2");
        let keys = TestKey::jwks(&[&key]);
        let token = key.sign(&payload());
        // The payload of another token, with the first token's signature.
        let mut forged_payload = payload();
        forged_payload["sub"] = json!("root");
        let forged = key.sign(&forged_payload);
        let (head, _) = forged.rsplit_once('.').unwrap();
        let (_, sig) = token.rsplit_once('.').unwrap();
        assert_eq!(
            validate(&format!("{head}.{sig}"), &keys),
            Err(Invalid::Signature)
        );
        // Signed by a key the provider does not publish (its kid unknown: every key is tried).
        assert_eq!(
            validate(&other.sign(&payload()), &keys),
            Err(Invalid::Signature)
        );
        assert_eq!(Invalid::Signature.to_string(), INVALID_CREDENTIALS);
    }

    #[test]
    fn none_and_hmac_with_the_public_key_are_refused() {
        let key = TestKey::new("k1");
        let keys = TestKey::jwks(&[&key]);
        let header = |alg: &str| {
            b64(json!({"alg": alg, "typ": "JWT", "kid": "k1"})
                .to_string()
                .as_bytes())
        };
        let body = b64(payload().to_string().as_bytes());
        let none = format!("{}.{}.", header("none"), body);
        assert_eq!(validate(&none, &keys), Err(Invalid::Signature));
        // HS256 keyed with the provider's public key (the classic confusion attack): what an
        // attacker can compute from the JWKS.
        let input = format!("{}.{}", header("HS256"), body);
        let public = key.pair.public_key().as_ref().to_vec();
        let mac = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &public),
            input.as_bytes(),
        );
        let hs = format!("{input}.{}", b64(mac.as_ref()));
        assert_eq!(validate(&hs, &keys), Err(Invalid::Signature));
    }

    #[test]
    fn keys_are_chosen_by_kid_then_alg_then_all() {
        let (a, b) = (TestKey::new("a"), TestKey::new("b"));
        let keys = TestKey::jwks(&[&a, &b]);
        assert!(keys.has_kid("b") && !keys.has_kid("c"));
        assert_eq!(validate(&b.sign(&payload()), &keys), Ok(()));
        // No kid in the header: the keys whose alg matches are tried, all of them.
        let token = b.sign_with_header(&json!({"alg": "RS256"}), &payload());
        assert_eq!(validate(&token, &keys), Ok(()));
        // An unknown kid still tries every key (the reference's fallback).
        let token = b.sign_with_header(&json!({"alg": "RS256", "kid": "zzz"}), &payload());
        assert_eq!(validate(&token, &keys), Ok(()));
    }

    #[test]
    fn odd_keys_in_a_jwks_are_skipped() {
        let key = TestKey::new("k1");
        let doc = json!({"keys": [{"kty": "weird"}, key.jwk()]});
        let keys = Keys::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(Keys::parse(b"[]").is_err());
    }
}

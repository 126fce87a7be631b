//! Transfer tokens (the reference's `t_token`): one row per distinct token, keyed by its id
//! (`sha1(token)[:16]`). The access token and the refresh token are sealed (`seal.rs`) like
//! delegated private keys, each bound to its row and role by the associated data; a copy of the
//! database alone reveals no token.

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::{Redb, StoreError, codec, schema};
use crate::model::token::{NewToken, Secret, TokenChange, TokenMaterial};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRow {
    pub issuer: String,
    pub scope: String,
    pub audience: Option<String>,
    pub not_before: i64,
    /// Expiry of the current access token.
    pub expiry: i64,
    pub refresh_after: i64,
    pub unmanaged: bool,
    pub sealed_access: Vec<u8>,
    pub sealed_refresh: Option<Vec<u8>>,
    pub exchange_message: Option<String>,
    pub refresh_message: Option<String>,
    /// When a submission last named it (un-retires it, as the reference's insert does).
    pub submitted_at: i64,
    pub updated_at: i64,
}

impl codec::Record for TokenRow {
    const NAME: &'static str = "token";
    const VERSION: u8 = 1;
}

fn access_context(token_id: &str) -> Vec<u8> {
    format!("tokens_v1\0access\0{token_id}").into_bytes()
}

fn refresh_context(token_id: &str) -> Vec<u8> {
    format!("tokens_v1\0refresh\0{token_id}").into_bytes()
}

fn open_secret(redb: &Redb, context: &[u8], sealed: &[u8]) -> Result<Secret, StoreError> {
    let bytes = redb.sealer.open(context, sealed)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        StoreError::Invalid("a sealed token is not UTF-8 (corrupted database?)".into())
    })?;
    Ok(Secret::new(text))
}

impl Redb {
    /// Store the tokens of a submission: new ones are inserted sealed; a known one keeps its
    /// refresh token and state, becomes managed if this submission manages it, and is marked
    /// as submitted now. Per token: whether it is ready for transfers (unmanaged or exchanged).
    pub fn put_tokens(&self, tokens: &[NewToken], now: i64) -> Result<Vec<bool>, StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(schema::TOKENS)?;
            let mut ready = Vec::with_capacity(tokens.len());
            for token in tokens {
                let existing: Option<TokenRow> = table
                    .get(token.token_id.as_str())?
                    .map(|v| codec::decode(v.value()))
                    .transpose()?;
                let row = match existing {
                    Some(mut row) => {
                        row.unmanaged = row.unmanaged && token.unmanaged;
                        row.submitted_at = now;
                        row
                    }
                    None => TokenRow {
                        issuer: token.issuer.clone(),
                        scope: token.scope.clone(),
                        audience: token.audience.clone(),
                        not_before: token.not_before,
                        expiry: token.expiry,
                        refresh_after: token.refresh_after(),
                        unmanaged: token.unmanaged,
                        sealed_access: self.sealer.seal(
                            &access_context(&token.token_id),
                            token.access_token.expose().as_bytes(),
                        )?,
                        sealed_refresh: None,
                        exchange_message: None,
                        refresh_message: None,
                        submitted_at: now,
                        updated_at: now,
                    },
                };
                ready.push(row.unmanaged || row.sealed_refresh.is_some());
                table.insert(token.token_id.as_str(), codec::encode(&row).as_slice())?;
            }
            Ok(ready)
        })
    }

    /// A token with its secrets unsealed.
    pub fn token(&self, token_id: &str) -> Result<Option<TokenMaterial>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::TOKENS)?;
        let Some(value) = table.get(token_id)? else {
            return Ok(None);
        };
        let row: TokenRow = codec::decode(value.value())?;
        Ok(Some(self.material(token_id, row)?))
    }

    fn material(&self, token_id: &str, row: TokenRow) -> Result<TokenMaterial, StoreError> {
        let access_token = open_secret(self, &access_context(token_id), &row.sealed_access)?;
        let refresh_token = match &row.sealed_refresh {
            Some(sealed) => Some(open_secret(self, &refresh_context(token_id), sealed)?),
            None => None,
        };
        Ok(TokenMaterial {
            token_id: token_id.to_string(),
            access_token,
            refresh_token,
            issuer: row.issuer,
            scope: row.scope,
            audience: row.audience,
            expiry: row.expiry,
            unmanaged: row.unmanaged,
            exchange_message: row.exchange_message,
            refresh_message: row.refresh_message,
        })
    }

    /// Apply `change` to a stored token; false when there is no such token.
    pub fn update_token(
        &self,
        token_id: &str,
        change: &TokenChange,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(schema::TOKENS)?;
            let Some(mut row) = table
                .get(token_id)?
                .map(|v| codec::decode::<TokenRow>(v.value()))
                .transpose()?
            else {
                return Ok(false);
            };
            let mut material = self.material(token_id, row.clone())?;
            material.apply(change);
            row.sealed_access = self.sealer.seal(
                &access_context(token_id),
                material.access_token.expose().as_bytes(),
            )?;
            row.sealed_refresh = match &material.refresh_token {
                Some(rt) => Some(
                    self.sealer
                        .seal(&refresh_context(token_id), rt.expose().as_bytes())?,
                ),
                None => None,
            };
            row.expiry = material.expiry;
            row.exchange_message = material.exchange_message;
            row.refresh_message = material.refresh_message;
            row.updated_at = now;
            table.insert(token_id, codec::encode(&row).as_slice())?;
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::model::token::{NewToken, Secret, TokenChange, token_id};
    use crate::store::Redb;

    #[test]
    fn tokens_are_never_in_clear_in_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let access = "eyJhbGciOiJSUzI1NiJ9.ACCESS-TOKEN-PAYLOAD.SIGNATURE-abcdef";
        let refresh = "REFRESH-TOKEN-0123456789-opaque";
        {
            let store = Redb::open(dir.path()).unwrap();
            let token = NewToken {
                token_id: token_id(access),
                access_token: Secret::new(access),
                issuer: "https://iam.example/".into(),
                scope: "storage.read:/".into(),
                audience: None,
                not_before: 1,
                expiry: 2,
                unmanaged: false,
            };
            store.put_tokens(&[token], 1).unwrap();
            let change = TokenChange::Exchanged {
                access_token: None,
                refresh_token: Secret::new(refresh),
                expiry: 3,
            };
            assert!(store.update_token(&token_id(access), &change, 2).unwrap());
            let back = store.token(&token_id(access)).unwrap().unwrap();
            assert_eq!(back.access_token.expose(), access);
        }
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                bytes.extend(std::fs::read(&path).unwrap());
            }
        }
        let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(!bytes.is_empty());
        assert!(!contains("ACCESS-TOKEN-PAYLOAD"), "access token in clear");
        assert!(
            !contains("REFRESH-TOKEN-0123456789"),
            "refresh token in clear"
        );
        // The row itself is there (its issuer is not secret).
        assert!(contains("https://iam.example/"));
    }
}

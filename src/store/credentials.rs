//! Delegated credentials: pending requests (a CSR and its private key) and delegated proxies
//! (the proxy, its private key, the chain). Private keys are sealed (`seal.rs`) before they
//! touch the database and are only returned unsealed to the caller that needs them.

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::{Redb, StoreError, codec, schema};
use crate::model::credential::{
    CredentialInfo, NewCredential, PendingRequest, ProxyMaterial, StoreOutcome,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingRow {
    pub csr_pem: String,
    pub key_bits: u32,
    /// SubjectPublicKeyInfo (DER) of the pending key: what the proxy's key must be.
    pub spki_der: Vec<u8>,
    pub sealed_key: Vec<u8>,
    pub created_at: i64,
}

impl codec::Record for PendingRow {
    const NAME: &'static str = "credential_request";
    const VERSION: u8 = 1;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialRow {
    pub proxy_pem: String,
    pub chain_pem: String,
    pub sealed_key: Vec<u8>,
    pub voms_attrs: Vec<String>,
    pub termination_time: i64,
    pub delegated_at: i64,
}

impl codec::Record for CredentialRow {
    const NAME: &'static str = "credential";
    const VERSION: u8 = 1;
}

fn pending_context(dlg_id: &str, dn: &str) -> Vec<u8> {
    format!("credential_requests_v1\0{dlg_id}\0{dn}").into_bytes()
}

fn credential_context(dlg_id: &str, dn: &str) -> Vec<u8> {
    format!("credentials_v1\0{dlg_id}\0{dn}").into_bytes()
}

impl Redb {
    pub fn pending_request(
        &self,
        dlg_id: &str,
        dn: &str,
    ) -> Result<Option<PendingRequest>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::CREDENTIAL_REQUESTS)?;
        let Some(value) = table.get((dlg_id, dn))? else {
            return Ok(None);
        };
        let row: PendingRow = codec::decode(value.value())?;
        Ok(Some(PendingRequest {
            csr_pem: row.csr_pem,
            key_bits: row.key_bits,
            spki_der: row.spki_der,
        }))
    }

    /// Save (or replace) the pending request of `(dlg_id, dn)`; `key_pem` is sealed first.
    pub fn save_pending_request(
        &self,
        dlg_id: &str,
        dn: &str,
        request: &PendingRequest,
        key_pem: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        let sealed_key = self.sealer.seal(&pending_context(dlg_id, dn), key_pem)?;
        let row = PendingRow {
            csr_pem: request.csr_pem.clone(),
            key_bits: request.key_bits,
            spki_der: request.spki_der.clone(),
            sealed_key,
            created_at: now,
        };
        self.write(|tx| {
            tx.open_table(schema::CREDENTIAL_REQUESTS)?
                .insert((dlg_id, dn), codec::encode(&row).as_slice())?;
            Ok(())
        })
    }

    /// Turn the pending request into a delegated credential, in one transaction: the pending
    /// key moves (re-sealed for its new row) to the credential, which replaces any previous one,
    /// and the request is consumed so a replayed upload cannot reuse it.
    pub fn store_credential(
        &self,
        dlg_id: &str,
        dn: &str,
        new: &NewCredential,
        now: i64,
    ) -> Result<StoreOutcome, StoreError> {
        self.write(|tx| {
            let mut requests = tx.open_table(schema::CREDENTIAL_REQUESTS)?;
            let pending: PendingRow = match requests.get((dlg_id, dn))? {
                Some(v) => codec::decode(v.value())?,
                None => return Ok(StoreOutcome::NoPending),
            };
            if pending.spki_der != new.spki_der {
                return Ok(StoreOutcome::KeyChanged);
            }
            let key = self
                .sealer
                .open(&pending_context(dlg_id, dn), &pending.sealed_key)?;
            let row = CredentialRow {
                proxy_pem: new.proxy_pem.clone(),
                chain_pem: new.chain_pem.clone(),
                sealed_key: self.sealer.seal(&credential_context(dlg_id, dn), &key)?,
                voms_attrs: new.voms_attrs.clone(),
                termination_time: new.termination_time,
                delegated_at: now,
            };
            requests.remove((dlg_id, dn))?;
            tx.open_table(schema::CREDENTIALS)?
                .insert((dlg_id, dn), codec::encode(&row).as_slice())?;
            Ok(StoreOutcome::Stored)
        })
    }

    pub fn credential(&self, dlg_id: &str, dn: &str) -> Result<Option<CredentialInfo>, StoreError> {
        Ok(self.credential_row(dlg_id, dn)?.map(|row| CredentialInfo {
            termination_time: row.termination_time,
            voms_attrs: row.voms_attrs,
            delegated_at: row.delegated_at,
        }))
    }

    fn credential_row(&self, dlg_id: &str, dn: &str) -> Result<Option<CredentialRow>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::CREDENTIALS)?;
        let Some(value) = table.get((dlg_id, dn))? else {
            return Ok(None);
        };
        Ok(Some(codec::decode(value.value())?))
    }

    /// Delete a delegated credential (and any pending request). True if one existed.
    pub fn delete_credential(&self, dlg_id: &str, dn: &str) -> Result<bool, StoreError> {
        self.write(|tx| {
            tx.open_table(schema::CREDENTIAL_REQUESTS)?
                .remove((dlg_id, dn))?;
            let existed = tx
                .open_table(schema::CREDENTIALS)?
                .remove((dlg_id, dn))?
                .is_some();
            Ok(existed)
        })
    }

    /// The delegated proxy with its private key unsealed, for writing a proxy file.
    pub fn credential_material(
        &self,
        dlg_id: &str,
        dn: &str,
    ) -> Result<Option<ProxyMaterial>, StoreError> {
        let Some(row) = self.credential_row(dlg_id, dn)? else {
            return Ok(None);
        };
        let key_pem = self
            .sealer
            .open(&credential_context(dlg_id, dn), &row.sealed_key)?;
        Ok(Some(ProxyMaterial {
            proxy_pem: row.proxy_pem,
            key_pem,
            chain_pem: row.chain_pem,
            termination_time: row.termination_time,
        }))
    }
}

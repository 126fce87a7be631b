//! The trusted CAs and their CRLs, read from a directory in the `/etc/grid-security/certificates`
//! layout: `<hash>.N` files hold CA certificates, `<hash>.rN` files hold CRLs (PEM).
//! `*.pem` files are read as CA certificates too; everything else (`.signing_policy`,
//! `.namespaces`, `.info`, `.crl_url`) is ignored.
//!
//! Every CA in the directory is an anchor (IGTF style): a sub-CA present in the directory works
//! even when a client does not send it.

use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, TrustAnchor, pem::PemObject};

use super::AuthError;

/// Anchors and CRLs loaded from one directory.
pub struct TrustStore {
    dir: PathBuf,
    anchors: Vec<TrustAnchor<'static>>,
    crls: Vec<webpki::CertRevocationList<'static>>,
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustStore")
            .field("dir", &self.dir)
            .field("anchors", &self.anchors.len())
            .field("crls", &self.crls.len())
            .finish()
    }
}

/// What kind of file a trust-directory entry is, from its name.
enum Entry {
    Ca,
    Crl,
    Other,
}

fn classify(name: &str) -> Entry {
    let Some((_, ext)) = name.rsplit_once('.') else {
        return Entry::Other;
    };
    if ext == "pem" || (!ext.is_empty() && ext.bytes().all(|b| b.is_ascii_digit())) {
        Entry::Ca
    } else if ext.len() > 1 && ext.starts_with('r') && ext[1..].bytes().all(|b| b.is_ascii_digit())
    {
        Entry::Crl
    } else {
        Entry::Other
    }
}

impl TrustStore {
    /// Load every CA and CRL in `dir`. A file that cannot be read or parsed is skipped with a
    /// warning (a broken CA package must not take the service down for everybody else), but a
    /// directory without any usable CA is an error: nobody could authenticate.
    pub fn load(dir: &Path) -> Result<TrustStore, AuthError> {
        let read_dir = std::fs::read_dir(dir).map_err(|e| AuthError::TrustStore {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut paths: Vec<PathBuf> = read_dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        let mut store = TrustStore {
            dir: dir.to_path_buf(),
            anchors: Vec::new(),
            crls: Vec::new(),
        };
        for path in paths {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let result = match classify(name) {
                Entry::Ca => store.add_ca_file(&path),
                Entry::Crl => store.add_crl_file(&path),
                Entry::Other => Ok(()),
            };
            if let Err(reason) = result {
                tracing::warn!(file = %path.display(), %reason, "skipping unusable trust-store file");
            }
        }
        if store.anchors.is_empty() {
            return Err(AuthError::TrustStore {
                path: dir.to_path_buf(),
                reason: "no CA certificate found (expected <hash>.0 files)".to_string(),
            });
        }
        tracing::info!(dir = %dir.display(), anchors = store.anchors.len(), crls = store.crls.len(), "trust store loaded");
        Ok(store)
    }

    fn add_ca_file(&mut self, path: &Path) -> Result<(), String> {
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| e.to_string())?;
        for cert in certs {
            let cert = cert.map_err(|e| e.to_string())?;
            let anchor = webpki::anchor_from_trusted_cert(&cert)
                .map_err(|e| format!("not a usable CA certificate: {e:?}"))?;
            self.anchors.push(anchor.to_owned());
        }
        Ok(())
    }

    fn add_crl_file(&mut self, path: &Path) -> Result<(), String> {
        let crls = CertificateRevocationListDer::pem_file_iter(path).map_err(|e| e.to_string())?;
        for crl in crls {
            let crl = crl.map_err(|e| e.to_string())?;
            let owned = webpki::OwnedCertRevocationList::from_der(crl.as_ref())
                .map_err(|e| format!("not a usable CRL: {e:?}"))?;
            self.crls.push(owned.into());
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    pub fn crls(&self) -> &[webpki::CertRevocationList<'static>] {
        &self.crls
    }

    /// webpki revocation options over every CRL: the whole chain is checked, and a certificate
    /// whose CA published no CRL is accepted (the IGTF distribution does not guarantee one).
    pub fn revocation_options<'a>(
        crl_refs: &'a [&'a webpki::CertRevocationList<'a>],
    ) -> Option<webpki::RevocationOptions<'a>> {
        let builder = webpki::RevocationOptionsBuilder::new(crl_refs).ok()?;
        Some(
            builder
                .with_depth(webpki::RevocationCheckDepth::Chain)
                .with_status_policy(webpki::UnknownStatusPolicy::Allow)
                .build(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_classified_like_the_grid_layout() {
        assert!(matches!(classify("1a2b3c4d.0"), Entry::Ca));
        assert!(matches!(classify("1a2b3c4d.12"), Entry::Ca));
        assert!(matches!(classify("ca.pem"), Entry::Ca));
        assert!(matches!(classify("1a2b3c4d.r0"), Entry::Crl));
        assert!(matches!(classify("1a2b3c4d.signing_policy"), Entry::Other));
        assert!(matches!(classify("1a2b3c4d.namespaces"), Entry::Other));
        assert!(matches!(classify("1a2b3c4d.r"), Entry::Other));
        assert!(matches!(classify("README"), Entry::Other));
    }
}

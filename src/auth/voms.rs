//! PLACEHOLDER until the VOMS module lands: no attribute certificate is trusted.
use std::path::Path;

use super::{signature::Algorithms, trust::TrustStore};

pub const OID_VOMS_ACSEQ: &str = "1.3.6.1.4.1.8005.100.100.5";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VomsError(String);

pub struct VomsDir;
impl VomsDir {
    pub fn load(_dir: &Path) -> Result<VomsDir, VomsError> {
        Ok(VomsDir)
    }
    pub fn empty() -> VomsDir {
        VomsDir
    }
}

pub struct AcVerifier<'a> {
    pub vomsdir: &'a VomsDir,
    pub trust: &'a TrustStore,
    pub algs: Algorithms,
}

impl AcVerifier<'_> {
    pub fn fqans_of_chain(
        &self,
        _chain: &[x509_parser::certificate::X509Certificate<'_>],
        _eec: usize,
        _now: i64,
    ) -> Vec<String> {
        Vec::new()
    }
}

//! Authorization before a request body is read: the caller's identity and level come from the
//! TLS handshake, so a write endpoint can refuse a caller who may not use it before taking a
//! byte of the body (a flood of anonymous uploads then costs no memory).
//!
//! Each check is the first check the endpoint's use case makes, with its message, so a caller
//! who passes it meets the same rules again there, and one who fails gets the answer the use case
//! would have given. Checks that need the body (which job, which storage) stay in the use case.

use super::{Service, ServiceError, config::require_certificate};
use crate::model::identity::{Operation, User};

/// What a body-taking endpoint requires of its caller, checked before the body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyAccess<'a> {
    /// Submissions and job changes: a transfer level (the reference's `@authorize(TRANSFER)`).
    /// Deviation: `POST /jobs/{ids}` answers a caller without any transfer level with one 403
    /// instead of one per job.
    Transfer,
    /// Bans, most of `/config`, the optimizer's values.
    Config,
    /// `/config/activity_shares`, `/config/authorize`: a certificate, then the config level.
    CertificateAndConfig,
    /// `/admin/force-start`: a certificate, then the admin level.
    CertificateAndAdmin,
    /// `PUT /delegation/{id}/credential`: a certificate whose delegation id is this one.
    DelegationOwner(&'a str),
}

impl Service {
    /// May `user` send a body to an endpoint that requires `access`?
    pub fn admit_body(&self, user: &User, access: BodyAccess<'_>) -> Result<(), ServiceError> {
        let level = |op: Operation| {
            if user.granted_level_for(op).is_none() {
                Err(ServiceError::Forbidden("Not enough permissions".into()))
            } else {
                Ok(())
            }
        };
        match access {
            BodyAccess::Transfer => level(Operation::Transfer),
            BodyAccess::Config => level(Operation::Config),
            BodyAccess::CertificateAndConfig => {
                require_certificate(user)?;
                level(Operation::Config)
            }
            BodyAccess::CertificateAndAdmin => {
                require_certificate(user)?;
                level(Operation::Admin)
            }
            BodyAccess::DelegationOwner(id) => super::delegation::check_owner(user, id, true),
        }
    }
}

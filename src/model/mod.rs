//! Pure domain types: identities and the authorization vocabulary. No I/O, nothing internal
//! imported; every other layer may use these.

pub mod identity;

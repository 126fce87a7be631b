//! Pure domain types: identities, the authorization vocabulary, FTS3 timestamps. No I/O, nothing internal
//! imported; every other layer may use these.

pub mod audit;
pub mod ban;
pub mod change;
pub mod config;
pub mod credential;
pub mod identity;
pub mod job;
pub mod lifecycle;
pub mod message;
pub mod monitor;
pub mod optimizer;
pub mod query;
pub mod submit;
pub mod submit_schema;
pub mod time;
pub mod token;
pub mod transfer;

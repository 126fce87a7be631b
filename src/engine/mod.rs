//! The transfer engine: scheduler, transfer agent and storage backends.
//!
//! - [`agent`]: one transfer's execution steps (stat, checksums, overwrite, copy under timeout
//!   and cancellation, verification), bring-online and archive monitoring, error classification.
//! - [`backends`]: one file per protocol behind the `Backend`/`Session` traits.
//! - [`checksum`]: checksum algorithms, the comparison rule and the checksum modes.

pub mod agent;
pub mod backends;
pub mod checksum;

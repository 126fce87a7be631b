//! The transfer engine: scheduler, transfer agent and storage backends.

pub mod backends;

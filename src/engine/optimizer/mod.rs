//! The optimizer: every `optimizer_interval`, one decision per link with queued or running
//! files (engine spec §3). `core` decides; this module measures and stores.

pub mod core;
pub mod sim;

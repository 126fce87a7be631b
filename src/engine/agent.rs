//! TEMPORARY stub of the transfer agent (replaced by the real one on merge).
#![allow(dead_code, unused_variables)]

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::backends::{Progress, Registry};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumMode {
    None,
    Source,
    Target,
    Both,
}

impl ChecksumMode {
    pub fn from_method(m: Option<&str>) -> ChecksumMode {
        ChecksumMode::None
    }
}

#[derive(Debug, Clone)]
pub struct TransferSpec {
    pub job_id: String,
    pub file_id: u64,
    pub source: String,
    pub destination: String,
    pub user_filesize: u64,
    pub checksum: Option<String>,
    pub checksum_mode: ChecksumMode,
    pub overwrite: bool,
    pub strict_copy: bool,
    pub timeout: u64,
    pub sec_per_mb: u64,
    pub nostreams: u32,
}

#[derive(Debug, Clone)]
pub struct TransferReport {
    pub filesize: u64,
    pub transferred: u64,
    pub duration: f64,
    pub throughput: f64,
}

#[derive(Debug, Clone)]
pub struct TransferFailure {
    pub scope: &'static str,
    pub phase: &'static str,
    pub errno: i32,
    pub message: String,
}

impl TransferFailure {
    pub fn reason(&self) -> String {
        format!("{} [{}] {}", self.scope, self.errno, self.message)
    }
    pub fn recoverable(&self) -> bool {
        true
    }
    pub fn scope_name(&self) -> &str {
        self.scope
    }
    pub fn phase_name(&self) -> &str {
        self.phase
    }
    pub fn errno_class(&self) -> String {
        "EIO".into()
    }
}

pub struct TransferLog;

impl TransferLog {
    pub fn create(path: &Path) -> std::io::Result<TransferLog> {
        Ok(TransferLog)
    }
    pub fn sink() -> TransferLog {
        TransferLog
    }
    pub fn line(&mut self, s: &str) {}
}

pub async fn run(
    spec: &TransferSpec,
    registry: &Registry,
    progress: &Progress,
    cancel: &CancellationToken,
    log: &mut TransferLog,
) -> Result<TransferReport, TransferFailure> {
    tokio::select! {
        _ = tokio::time::sleep(std::time::Duration::from_millis(300)) => Ok(TransferReport { filesize: 1, transferred: 1, duration: 0.3, throughput: 0.0 }),
        _ = cancel.cancelled() => Err(TransferFailure { scope: "TRANSFER", phase: "TRANSFER", errno: 125, message: "Transfer canceled".into() }),
    }
}

pub async fn bring_online(
    url: &str,
    pin_lifetime: i64,
    timeout: i64,
    registry: &Registry,
    cancel: &CancellationToken,
    log: &mut TransferLog,
) -> Result<(), TransferFailure> {
    Ok(())
}

pub async fn archive_monitor(
    url: &str,
    archive_timeout: i64,
    registry: &Registry,
    cancel: &CancellationToken,
    log: &mut TransferLog,
) -> Result<(), TransferFailure> {
    Ok(())
}

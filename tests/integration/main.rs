//! ftsd integration tests: one binary, one file per area. Each test starts the real server
//! in-process on an ephemeral port with a throwaway PKI and talks HTTPS to it.

mod bans;
mod check_config;
mod common;
mod config;
mod delegation;
mod engine;
mod first_hour;
mod gfal2;
mod hardening;
mod http_conventions;
mod interop;
mod jobs;
mod messages;
mod monitoring;
mod oidc_issuer;
mod optimizer;
mod peers;
mod protocols;
mod rucio;
mod service_binary;
mod tape;
mod tls_auth;
mod token_secrecy;
mod token_storage;
mod tokens;
mod web;

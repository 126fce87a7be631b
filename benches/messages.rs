//! Monitoring-message benchmarks against a running STOMP broker (`--broker host:port`; the
//! RabbitMQ recipe is in BENCHMARKS.md).
//!
//! Phases (`--phases`, both by default):
//! - `publish`: `--messages` state messages put in a fresh store's outbox, then the publisher
//!   (release build, in this process) sends them with a `receipt` each and removes each from
//!   the outbox when its RECEIPT arrives: messages/s from start to an empty outbox.
//! - `engine`: the `ftsd` release binary runs `--files` mock transfers (jobs of 100, no transfer
//!   time), once with `[messages]` off and once on (all four kinds, to the broker): files/s from
//!   the first submission to the last job terminal, and for "on" how long the outbox took to
//!   drain after that.
//!
//! Run: `cargo bench --bench messages -- --broker 127.0.0.1:61613`.

#![recursion_limit = "256"]

#[path = "../tests/integration/common.rs"]
#[allow(unused_imports)]
mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use serde_json::{Value, json};

use common::{Client, TEST_USER, delegate_test_user, post_json, spawn_ftsd_with};
use ftsd::{
    messages::{self, Settings, Stats, connection::Login},
    model::{
        job::{File, FileState, Job, JobState, JobType, JsonText},
        message::{Endpoint, Kind, Kinds},
    },
    store::{Redb, RedbStore, Store},
};

type BoxError = Box<dyn std::error::Error>;

#[derive(Parser, Debug)]
#[command(about = "ftsd monitoring-message benchmarks against a STOMP broker")]
struct Args {
    /// The broker, host:port.
    #[arg(long)]
    broker: String,
    #[arg(long, default_value = "/")]
    vhost: String,
    #[arg(long, default_value = "fts")]
    user: String,
    #[arg(long, default_value = "ftspass")]
    password: String,
    /// Phases: publish, engine.
    #[arg(long, value_delimiter = ',', default_values_t = ["publish".to_string(), "engine".into()])]
    phases: Vec<String>,
    /// Messages of the publish phase.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Transfers of the engine phase.
    #[arg(long, default_value_t = 2_000)]
    files: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    for p in &args.phases {
        let result = match p.as_str() {
            "publish" => publish(&args),
            "engine" => engine(&args),
            other => Err(format!("unknown phase {other:?}").into()),
        };
        if let Err(e) = result {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}

fn job(id: &str, files: usize) -> (Job, Vec<File>) {
    let json = json!({
        "job_id": id, "job_state": "Submitted", "job_type": "Normal", "cancel_job": false,
        "source_se": "mock://a", "dest_se": "mock://b", "user_dn": "/CN=bench", "cred_id": "c",
        "vo_name": "bench", "voms_cred": null, "reason": null, "submit_time": 0,
        "submit_host": "h", "priority": 3, "max_time_in_queue": null,
        "destination_spacetoken": null, "source_spacetoken": null, "internal_job_params": null,
        "overwrite_flag": null, "job_finished": null, "copy_pin_lifetime": -1,
        "checksum_method": null, "bring_online": -1, "archive_timeout": -1, "retry": 0,
        "retry_delay": 0, "target_qos": null, "job_metadata": null, "dst_file_report": false,
        "os_project_id": null
    });
    let mut j: Job = serde_json::from_value(json).expect("a valid job");
    j.job_state = JobState::Submitted;
    j.job_type = JobType::Normal;
    j.job_metadata = JsonText(Some(r#"{"issuer":"rucio"}"#.into()));
    let files = (0..files)
        .map(|i| {
            let f = json!({
                "file_id": 0, "file_index": i, "job_id": id, "file_state": "Submitted",
                "transfer_host": null, "source_surl": format!("mock://a/{id}/{i}"),
                "dest_surl": format!("mock://b/{id}/{i}"), "source_se": "mock://a",
                "dest_se": "mock://b", "staging_host": null, "reason": null,
                "current_failures": 0, "filesize": null, "checksum": null, "finish_time": null,
                "start_time": null, "internal_file_params": null, "pid": null,
                "tx_duration": null, "throughput": null, "retry": 0, "user_filesize": 0.0,
                "file_metadata": null, "selection_strategy": "auto", "staging_start": null,
                "staging_finished": null, "bringonline_token": null, "retry_timestamp": null,
                "log_file": null, "log_debug": false, "hashed_id": 0, "vo_name": "bench",
                "activity": "default", "transferred": 0, "priority": 3,
                "dest_surl_uuid": null, "archive_start_time": null,
                "archive_finish_time": null, "staging_metadata": null,
                "archive_metadata": null, "scitag": null, "src_token_id": null,
                "dst_token_id": null, "file_state_initial": null, "error_scope": null,
                "error_phase": null, "reason_class": null
            });
            let mut f: File = serde_json::from_value(f).expect("a valid file");
            f.file_state = FileState::Submitted;
            f
        })
        .collect();
    (j, files)
}

fn publish(args: &Args) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let db = Redb::open(dir.path())?;
    db.set_message_policy(Kinds::of(&[Kind::State]), u64::MAX)?;
    let per_job = 100;
    for j in 0..args.messages.div_ceil(per_job) {
        db.insert_jobs(&mut [job(&format!("bench-{j}"), per_job)])?;
    }
    let count = db.outbox_stats()?.depth;
    let store: Arc<dyn Store> = Arc::new(RedbStore::new(db)?);
    let runtime = tokio::runtime::Runtime::new()?;
    let stats = Arc::new(Stats::default());
    let settings = Settings {
        brokers: vec![args.broker.clone()],
        login: Login {
            tls: None,
            username: Some(args.user.clone()),
            password: Some(args.password.clone()),
            vhost: args.vhost.clone(),
        },
        topic: true,
        ttl: Duration::from_secs(24 * 3600),
        endpoint: Endpoint {
            alias: "bench.example.org".into(),
            fqdn: None,
        },
    };
    let elapsed = runtime.block_on(async {
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let started = Instant::now();
        let task = tokio::spawn(messages::run(
            store.clone(),
            settings,
            stats.clone(),
            stopping,
        ));
        loop {
            if store.outbox_stats().await?.depth == 0 {
                break;
            }
            if started.elapsed() > Duration::from_secs(600) {
                return Err::<Duration, BoxError>("outbox not drained after 600 s".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = started.elapsed();
        let _ = stop.send(true);
        let _ = task.await;
        Ok(elapsed)
    })?;
    println!(
        "publish: {count} messages acknowledged in {:.2} s: {:.0} messages/s (sent {}, resent {})",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        stats.sent.load(std::sync::atomic::Ordering::Relaxed),
        stats.resent.load(std::sync::atomic::Ordering::Relaxed),
    );
    Ok(())
}

fn engine(args: &Args) -> Result<(), BoxError> {
    let Some(pki) = common::pki() else {
        return Err("the test PKI could not be made".into());
    };
    for on in [false, true] {
        let dir = tempfile::Builder::new().prefix("ftsd-bench-").tempdir()?;
        let data = dir.path().join("data");
        let mut config = "[engine]\nenabled = true\nscheduling_interval = 1\n\
                          default_link_active = 200\nmax_active = 400\noptimizer = false\n"
            .to_string();
        if on {
            config.push_str(&format!(
                "\n[messages]\nbrokers = [\"{}\"]\nusername = \"{}\"\npassword = \"{}\"\nvhost = \"{}\"\n",
                args.broker, args.user, args.password, args.vhost
            ));
        }
        let (mut child, port) = spawn_ftsd_with(pki, &data, &config);
        let user = Client::new(port, &pki.path("ca.pem"), Some(pki.path(TEST_USER)));
        let whoami = user.get("/whoami")?.json();
        let dlg_id = whoami["delegation_id"].as_str().ok_or("no delegation_id")?;
        let (status, body) = delegate_test_user(&user, pki, dlg_id, false);
        if status != 201 {
            return Err(format!("delegation: HTTP {status}: {body}").into());
        }
        let started = Instant::now();
        let mut ids = Vec::new();
        for j in 0..args.files.div_ceil(100) {
            let files: Vec<Value> = (0..100)
                .map(|i| {
                    json!({"sources": [format!("mock://s.example/{j}/{i}?size=1")],
                           "destinations": [format!("mock://d.example/{j}/{i}?size_post=1&time=0")]})
                })
                .collect();
            let reply = post_json(
                &user,
                "/jobs",
                &json!({"files": files, "params": {"retry": -1}}),
            );
            if reply.status != 200 {
                return Err(format!("POST /jobs: {}", reply.text()).into());
            }
            ids.push(reply.json()["job_id"].as_str().unwrap_or("").to_string());
        }
        let path = format!("/jobs/{}", ids.join(","));
        loop {
            let jobs = match user.get(&path)?.json() {
                Value::Array(j) => j,
                j => vec![j],
            };
            if jobs.iter().all(|j| j["job_state"] == "FINISHED") {
                break;
            }
            if started.elapsed() > Duration::from_secs(600) {
                return Err("jobs not done after 600 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let elapsed = started.elapsed();
        let _ = std::process::Command::new("kill")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
        let outbox = if on {
            let db = Redb::open(&data)?;
            format!(", outbox left at stop {}", db.outbox_stats()?.depth)
        } else {
            String::new()
        };
        println!(
            "engine, messages {}: {} transfers in {:.2} s: {:.0} files/s{outbox}",
            if on { "on " } else { "off" },
            ids.len() * 100,
            elapsed.as_secs_f64(),
            (ids.len() * 100) as f64 / elapsed.as_secs_f64(),
        );
    }
    Ok(())
}

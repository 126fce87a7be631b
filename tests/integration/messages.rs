//! Monitoring messages against a real broker: RabbitMQ with its STOMP plugin (Debian
//! `rabbitmq-server`), started once per test run on loopback ports with its data under
//! `target/`, and a consumer written with PyPI `stomp.py` (`.ci/venv-stomp`, made by `.ci/run`).
//!
//! One test runs the same checks through ActiveMQ (Debian `activemq`, started by the test on a
//! loopback port, non-persistent).
//!
//! Each RabbitMQ test has its own virtual host, so tests share the broker without seeing each
//! other's messages. The outage test stops the broker's application: it takes the broker lock
//! for writing, the others for reading.
//!
//! Rucio's receiver is checked with a faithful reimplementation of its filters and mapping
//! ([`rucio_verdict`], from `rucio/daemons/conveyor/receiver.py` and
//! `rucio/transfertool/fts3.py` of Rucio 41): importing Rucio needs its server configuration
//! and database, which this suite does not set up.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{OnceLock, RwLock},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    common::{Client, RC_USER_DN, TestPki, in_ci, pki, spawn_ftsd_with},
    delegation::delegate,
    engine::{engine_server, files, submit, transfer, wait_job},
    tls_auth::independent_delegation_id,
};

const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const RABBITMQCTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";
const USER: &str = "fts";
const PASS: &str = "ftspass";
/// How long messages may take to arrive after the transfers ended.
const ARRIVAL: Duration = Duration::from_secs(60);

/// The keys of FTS3's CO message (msg-ifce.cpp), plus `endpnt` as the publisher sets it.
const CO_KEYS: &[&str] = &[
    "tr_id",
    "job_id",
    "file_id",
    "endpnt",
    "src_srm_v",
    "dest_srm_v",
    "vo",
    "src_url",
    "dst_url",
    "src_hostname",
    "dst_hostname",
    "src_se",
    "dst_se",
    "protocol",
    "src_site_name",
    "dst_site_name",
    "t_channel",
    "timestamp_tr_st",
    "timestamp_tr_comp",
    "timestamp_chk_src_st",
    "timestamp_chk_src_ended",
    "timestamp_checksum_dest_st",
    "timestamp_checksum_dest_ended",
    "t_timeout",
    "chk_timeout",
    "t_error_code",
    "tr_error_scope",
    "t_failure_phase",
    "tr_error_category",
    "t_final_transfer_state",
    "t_final_transfer_state_flag",
    "tr_bt_transfered",
    "nstreams",
    "buf_size",
    "tcp_buf_size",
    "block_size",
    "scitag",
    "f_size",
    "file_size",
    "time_srm_prep_st",
    "time_srm_prep_end",
    "time_srm_fin_st",
    "time_srm_fin_end",
    "srm_space_token_src",
    "srm_space_token_dst",
    "t__error_message",
    "tr_timestamp_start",
    "tr_timestamp_complete",
    "transfer_time",
    "operation_time",
    "throughput",
    "srm_preparation_time",
    "srm_finalization_time",
    "srm_overhead_time",
    "srm_overhead_percentage",
    "timestamp_checksum_src_diff",
    "timestamp_checksum_dst_diff",
    "channel_type",
    "user_dn",
    "file_metadata",
    "job_metadata",
    "activity",
    "retry",
    "retry_max",
    "job_m_replica",
    "job_multihop",
    "transfer_lasthop",
    "is_archiving",
    "job_state",
    "is_recoverable",
    "ipv6",
    "ipver",
    "eviction_code",
    "cleanup_code",
    "final_destination",
    "transfer_type",
    "auth_method",
    "overwrite_on_disk_flag",
    "overwrite_on_disk_deletion_code",
    "src_protocol",
    "dst_protocol",
    "src_transfer_protocol",
    "dst_transfer_protocol",
    "protocol_translation",
];
const ST_KEYS: &[&str] = &[
    "transfer_id",
    "job_id",
    "file_id",
    "endpnt",
    "timestamp",
    "src_srm_v",
    "dest_srm_v",
    "vo",
    "src_url",
    "dst_url",
    "src_hostname",
    "dst_hostname",
    "src_site_name",
    "dst_site_name",
    "t_channel",
    "srm_space_token_src",
    "srm_space_token_dst",
    "user_dn",
    "is_archiving",
    "file_metadata",
    "job_metadata",
];

// ---------------------------------------------------------------------------------------------
// The broker

struct Broker {
    stomp_port: u16,
    env: Vec<(String, String)>,
    node: String,
    /// The watchdog shell: it stops the broker when our end of its stdin closes (this process
    /// exited), so no broker outlives the test run.
    _watchdog: Child,
    _stdin: std::process::ChildStdin,
}

static BROKER: OnceLock<Option<Broker>> = OnceLock::new();
/// Readers: tests that need the broker up; the writer: the outage test.
static BROKER_LOCK: RwLock<()> = RwLock::new(());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn stomp_python() -> Option<PathBuf> {
    let venv = std::env::var_os("STOMP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv-stomp"));
    let python = venv.join("bin/python");
    python.exists().then_some(python)
}

/// The shared broker, started at first use; `None` (a loud skip; a failure in CI) when
/// RabbitMQ or stomp.py is not installed.
fn broker() -> Option<&'static Broker> {
    BROKER
        .get_or_init(|| {
            let missing = if !Path::new(RABBITMQ_SERVER).exists() {
                Some("rabbitmq-server (apt-get install rabbitmq-server)")
            } else if stomp_python().is_none() {
                Some("stomp.py (python3 -m venv .ci/venv-stomp; .ci/venv-stomp/bin/pip install stomp.py)")
            } else {
                None
            };
            if let Some(what) = missing {
                assert!(!in_ci(), "{what} is required in CI (see .ci/run)");
                eprintln!("SKIPPING: {what} not installed");
                return None;
            }
            Some(start_broker())
        })
        .as_ref()
}

fn start_broker() -> Broker {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rabbitmq-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["home", "mnesia", "log"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let (stomp_port, amqp_port, dist_port) = (free_port(), free_port(), free_port());
    std::fs::write(dir.join("empty-env.conf"), "").unwrap();
    std::fs::write(dir.join("enabled_plugins"), "[rabbitmq_stomp].\n").unwrap();
    std::fs::write(
        dir.join("rabbitmq.conf"),
        format!(
            "listeners.tcp.default = 127.0.0.1:{amqp_port}\nstomp.listeners.tcp.1 = \
             127.0.0.1:{stomp_port}\ndefault_user = {USER}\ndefault_pass = {PASS}\n\
             loopback_users = none\nlog.console = false\n"
        ),
    )
    .unwrap();
    let node = format!("ftsdtest{}@localhost", std::process::id());
    let d = |s: &str| dir.join(s).display().to_string();
    let env: Vec<(String, String)> = [
        ("HOME", d("home")),
        ("RABBITMQ_NODENAME", node.clone()),
        ("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf")),
        ("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins")),
        ("RABBITMQ_MNESIA_BASE", d("mnesia")),
        ("RABBITMQ_LOG_BASE", d("log")),
        ("RABBITMQ_PID_FILE", d("rabbit.pid")),
        ("RABBITMQ_CONF_ENV_FILE", d("empty-env.conf")),
        ("RABBITMQ_DIST_PORT", dist_port.to_string()),
        ("ERL_EPMD_ADDRESS", "127.0.0.1".into()),
        (
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
            "-kernel inet_dist_use_interface {127,0,0,1}".into(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let script = format!(
        "{RABBITMQ_SERVER} > {log} 2>&1 &\ncat > /dev/null\n{RABBITMQCTL} -n {node} stop > /dev/null 2>&1\n\
         epmd -names 2>/dev/null | grep -q '^name ' || epmd -kill > /dev/null 2>&1\n\
         rm -rf '{dir}'\n",
        log = d("stdout.log"),
        dir = dir.display(),
    );
    let mut command = Command::new("sh");
    command
        .args(["-c", &script])
        .envs(env.iter().cloned())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut watchdog = command.spawn().expect("cannot start rabbitmq-server");
    let stdin = watchdog.stdin.take().unwrap();
    let broker = Broker {
        stomp_port,
        env,
        node,
        _watchdog: watchdog,
        _stdin: stdin,
    };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", stomp_port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "rabbitmq did not listen on {stomp_port}:\n{}",
            std::fs::read_to_string(dir.join("stdout.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("rabbitmq answers after {:?}", start.elapsed());
    broker
}

impl Broker {
    fn ctl(&self, args: &[&str]) {
        let out = Command::new(RABBITMQCTL)
            .args(["-n", &self.node])
            .args(args)
            .envs(self.env.iter().cloned())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A virtual host of the test's own.
    fn vhost(&self, name: &str) -> String {
        self.ctl(&["add_vhost", name]);
        self.ctl(&["set_permissions", "-p", name, USER, ".*", ".*", ".*"]);
        name.to_string()
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.stomp_port)
    }
}

// ---------------------------------------------------------------------------------------------
// The consumer (stomp.py)

#[derive(Debug, Clone)]
struct Received {
    destination: String,
    headers: BTreeMap<String, String>,
    raw: String,
    body: Value,
}

struct Consumer {
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Consumer {
    fn start(port: u16, vhost: &str, destinations: &[String]) -> Consumer {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("received.jsonl");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/stomp_consumer.py");
        let child = Command::new(stomp_python().unwrap())
            .arg(script)
            .args(["127.0.0.1", &port.to_string(), vhost, USER, PASS])
            .arg(&out)
            .args(destinations)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ready = out.with_extension("jsonl.ready");
        let start = Instant::now();
        while !ready.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "stomp.py consumer never subscribed"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Consumer {
            child,
            out,
            _dir: dir,
        }
    }

    fn received(&self) -> Vec<Received> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| {
                let raw = v["body"].as_str().unwrap_or("").to_string();
                Received {
                    destination: v["destination"].as_str().unwrap_or("").to_string(),
                    headers: v["headers"]
                        .as_object()
                        .map(|h| {
                            h.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                                .collect()
                        })
                        .unwrap_or_default(),
                    body: serde_json::from_str(&raw).unwrap_or(Value::Null),
                    raw,
                }
            })
            .collect()
    }

    /// Wait until `done` holds for what was received.
    fn wait(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.received();
            if done(&got) {
                return got;
            }
            assert!(
                start.elapsed() < ARRIVAL,
                "{what}: only {} messages after {ARRIVAL:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn destinations(kind: &str, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| format!("/{kind}/transfer.fts_monitoring_{n}"))
        .collect()
}

fn of_kind<'a>(got: &'a [Received], name: &str) -> Vec<&'a Received> {
    got.iter()
        .filter(|m| m.destination.ends_with(&format!("fts_monitoring_{name}")))
        .collect()
}

fn messages_config(c: &mut ftsd::config::Config, address: String, vhost: &str, topic: bool) {
    c.messages.brokers = vec![address];
    c.messages.username = Some(USER.into());
    c.messages.password = Some(PASS.into());
    c.messages.vhost = vhost.into();
    c.messages.topic = topic;
    c.messages.alias = Some("fts3-test.example.org".into());
}

fn user(port_client: Client, pki: &TestPki) -> Client {
    let (status, body) = delegate(
        &port_client,
        pki,
        "rc_user.pem",
        &independent_delegation_id(RC_USER_DN, &[]),
    );
    assert_eq!(status, 201, "{body}");
    port_client
}

// ---------------------------------------------------------------------------------------------
// Rucio's receiver

/// What Rucio's conveyor-receiver does with one message (Rucio 41 `Receiver.on_message` and
/// `FTS3Transfertool`'s `FTS3CompletionMessageTransferStatusReport`): `None` when a filter drops
/// it, else the request id and the state it records (`None` for FTS's Abort: nothing).
fn rucio_verdict(raw: &str, voname: &str) -> Option<(String, Option<&'static str>)> {
    // json.loads(frame.body): no stripping of a trailing byte.
    let msg: Value = serde_json::from_str(raw).ok()?;
    if msg["vo"].as_str() != Some(voname) {
        return None;
    }
    let job_metadata = msg.get("job_metadata")?.as_object()?;
    if job_metadata.get("issuer").and_then(Value::as_str) != Some("rucio") {
        return None;
    }
    let job_state = msg.get("job_state")?.as_str()?;
    if job_state == "ACTIVE" && msg["job_multihop"] != Value::Bool(true) {
        return None;
    }
    let request_id = msg["file_metadata"]
        .as_object()?
        .get("request_id")?
        .as_str()?
        .to_string();
    // The job id is the part of tr_id after the last "__".
    let tr_id = msg["tr_id"].as_str()?;
    let job_id = tr_id.rsplit("__").next()?;
    assert_eq!(
        Some(job_id),
        msg["job_id"].as_str(),
        "tr_id ends with the job id"
    );
    let archiving = msg["is_archiving"].as_bool().unwrap_or(false);
    let state = match msg["t_final_transfer_state"].as_str()? {
        "Ok" if archiving => None,
        "Ok" => Some("DONE"),
        "Error" => Some("FAILED"),
        _ => None,
    };
    Some((request_id, state))
}

// ---------------------------------------------------------------------------------------------
// Tests

/// ST, CO and SS of mock transfers reach a stomp.py consumer with FTS3's fields; the `vo` header
/// is on SS only; Rucio's receiver maps FINISHED, FAILED and multihop messages as Rucio does.
#[test]
fn transfer_messages_reach_a_stomp_py_consumer_as_fts3_sends_them() {
    let Some(pki) = pki() else { return };
    let Some(broker) = broker() else { return };
    let _up = BROKER_LOCK.read().unwrap_or_else(|e| e.into_inner());
    let vhost = broker.vhost("fields");
    let consumer = Consumer::start(
        broker.stomp_port,
        &vhost,
        &destinations("topic", &["start", "complete", "state", "queue_state"]),
    );
    let server = engine_server(pki, |c| messages_config(c, broker.address(), &vhost, true));
    let client = user(server.client(pki, Some("rc_user.pem")), pki);
    let meta = json!({"issuer": "rucio", "multi_sources": false});
    let with_meta = |src: &str, dst: &str, request: &str| {
        let mut t = transfer(src, dst);
        t["metadata"] = json!({"request_id": request});
        t
    };
    let ok = submit(
        &client,
        json!([with_meta(
            "mock://s.example/ok?size=10",
            "mock://d.example/ok?size_post=10&time=1",
            "r-ok"
        )]),
        json!({"job_metadata": meta, "retry": -1}),
    );
    let failed = submit(
        &client,
        json!([with_meta(
            "mock://s.example/bad",
            "mock://d.example/bad?transfer_errno=2&time=1",
            "r-bad"
        )]),
        json!({"job_metadata": meta, "retry": -1}),
    );
    let hops = submit(
        &client,
        json!([
            with_meta(
                "mock://s.example/h?size=5",
                "mock://m.example/h?size_post=5&time=1",
                "r-hop1"
            ),
            with_meta(
                "mock://m.example/h?size=5",
                "mock://d.example/h?size_post=5&time=1",
                "r-hop2"
            ),
        ]),
        json!({"job_metadata": meta, "retry": -1, "multihop": true}),
    );
    let vo = wait_job(&client, &ok, Duration::from_secs(60))["vo_name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        wait_job(&client, &failed, Duration::from_secs(60))["job_state"],
        "FAILED"
    );
    assert_eq!(
        wait_job(&client, &hops, Duration::from_secs(60))["job_state"],
        "FINISHED"
    );
    let jobs = [ok.as_str(), failed.as_str(), hops.as_str()];
    let ours = |m: &Received| jobs.contains(&m.body["job_id"].as_str().unwrap_or(""));
    let got = consumer.wait("4 CO and 4 FINISHED/FAILED SS", |got| {
        let co = of_kind(got, "complete")
            .into_iter()
            .filter(|m| ours(m))
            .count();
        let final_ss = of_kind(got, "state")
            .into_iter()
            .filter(|m| {
                ours(m) && matches!(m.body["file_state"].as_str(), Some("FINISHED" | "FAILED"))
            })
            .count();
        co >= 4 && final_ss >= 4
    });
    let got: Vec<Received> = got.into_iter().filter(|m| ours(m)).collect();

    // Bodies: JSON plus one space (never 0x04); endpnt is the alias.
    for m in &got {
        assert!(
            m.raw.ends_with("} ") && !m.raw.contains('\u{4}'),
            "{:?}",
            m.raw
        );
        assert!(m.body.is_object(), "{}", m.raw);
        assert_eq!(m.body["endpnt"], "fts3-test.example.org");
        assert_eq!(
            m.headers.get("persistent").map(String::as_str),
            Some("true")
        );
        let expires: i64 = m.headers["expires"].parse().unwrap();
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        assert!(
            (expires - now_ms - 24 * 3600 * 1000).abs() < 600_000,
            "expires {expires}"
        );
    }
    let keys = |m: &Received| -> BTreeSet<String> {
        m.body.as_object().unwrap().keys().cloned().collect()
    };
    let set = |k: &[&str]| -> BTreeSet<String> { k.iter().map(|s| s.to_string()).collect() };
    let starts = of_kind(&got, "start");
    let completes = of_kind(&got, "complete");
    let states = of_kind(&got, "state");
    assert_eq!(starts.len(), 4, "one ST per transfer");
    assert_eq!(completes.len(), 4, "one CO per transfer");
    for m in &starts {
        assert_eq!(keys(m), set(ST_KEYS));
        assert!(!m.headers.contains_key("vo"), "ST has no vo header");
        assert_eq!(m.body["vo"], vo.as_str());
    }
    for m in &completes {
        assert_eq!(keys(m), set(CO_KEYS));
        assert!(!m.headers.contains_key("vo"), "CO has no vo header");
        assert!(
            m.body["job_metadata"].is_object(),
            "metadata as the client sent it"
        );
    }
    for m in &states {
        assert_eq!(m.headers.get("vo"), Some(&vo), "SS carries the vo header");
        assert_eq!(m.body["vo_name"], vo.as_str());
    }
    let ss_of = |job: &str| -> Vec<String> {
        states
            .iter()
            .filter(|m| m.body["job_id"] == job)
            .map(|m| m.body["file_state"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ss_of(&ok), ["SUBMITTED", "READY", "ACTIVE", "FINISHED"]);
    assert_eq!(ss_of(&failed), ["SUBMITTED", "READY", "ACTIVE", "FAILED"]);

    // Rucio's receiver: FINISHED → DONE, FAILED → FAILED, both hops processed.
    let verdicts: BTreeMap<String, Option<&str>> = completes
        .iter()
        .filter_map(|m| rucio_verdict(&m.raw, &vo))
        .collect();
    let expected: BTreeMap<String, Option<&str>> = [
        ("r-ok", Some("DONE")),
        ("r-bad", Some("FAILED")),
        ("r-hop1", Some("DONE")),
        ("r-hop2", Some("DONE")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(verdicts, expected);
    let hop1 = completes
        .iter()
        .find(|m| m.body["file_metadata"]["request_id"] == "r-hop1")
        .unwrap();
    assert_eq!(hop1.body["job_state"], "ACTIVE", "an intermediate hop");
    assert_eq!(hop1.body["job_multihop"], true);
    let bad = completes
        .iter()
        .find(|m| m.body["file_metadata"]["request_id"] == "r-bad")
        .unwrap();
    assert_eq!(bad.body["t_final_transfer_state"], "Error");
    assert_eq!(bad.body["t_error_code"], 2);
    // And the filters drop what Rucio drops.
    assert_eq!(
        rucio_verdict(&completes[0].raw, "other-vo"),
        None,
        "another VO"
    );
    let mut not_rucio = completes[0].body.clone();
    not_rucio["job_metadata"] = json!("rucio");
    assert_eq!(
        rucio_verdict(&not_rucio.to_string(), &vo),
        None,
        "metadata as a string"
    );
    drop(server);
}

/// The broker stops for a while during a workload, then comes back: every message arrives.
#[test]
fn a_broker_outage_delays_messages_and_loses_none() {
    let Some(pki) = pki() else { return };
    let Some(broker) = broker() else { return };
    let _down = BROKER_LOCK.write().unwrap_or_else(|e| e.into_inner());
    let vhost = broker.vhost("outage");
    // Queues keep what arrives while the consumer reconnects.
    let consumer = Consumer::start(
        broker.stomp_port,
        &vhost,
        &destinations("queue", &["complete", "state"]),
    );
    let server = engine_server(pki, |c| {
        messages_config(c, broker.address(), &vhost, false);
        c.engine.default_link_active = 10;
    });
    let client = user(server.client(pki, Some("rc_user.pem")), pki);
    const N: usize = 40;
    let list: Vec<Value> = (0..N)
        .map(|i| {
            transfer(
                &format!("mock://s.example/o{i}?size=1"),
                &format!("mock://d.example/o{i}?size_post=1&time=1"),
            )
        })
        .collect();
    let job = submit(&client, Value::Array(list), json!({"retry": -1}));
    consumer.wait("the first completions", |got| {
        !of_kind(got, "complete").is_empty()
    });
    broker.ctl(&["stop_app"]);
    let before = of_kind(&consumer.received(), "complete").len();
    let outage = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    broker.ctl(&["start_app"]);
    eprintln!("broker down for {:?}", outage.elapsed());
    assert_eq!(
        wait_job(&client, &job, Duration::from_secs(120))["job_state"],
        "FINISHED"
    );
    let got = consumer.wait("a CO and a FINISHED SS for every file", |got| {
        let co: BTreeSet<u64> = of_kind(got, "complete")
            .iter()
            .filter_map(|m| m.body["file_id"].as_u64())
            .collect();
        let done: BTreeSet<u64> = of_kind(got, "state")
            .iter()
            .filter(|m| m.body["file_state"] == "FINISHED")
            .filter_map(|m| m.body["file_id"].as_u64())
            .collect();
        co.len() == N && done.len() == N
    });
    let co = of_kind(&got, "complete").len();
    eprintln!(
        "{before} CO before the outage, {co} after, for {N} files ({} duplicates)",
        co - N
    );
    assert!(
        before < N,
        "the outage came too late to hold any message back"
    );
    assert_eq!(files(&client, &job).len(), N);
    drop(server);
}

/// `kill -9` of ftsd during a workload: after the restart no message is missing (messages whose
/// receipt was not recorded come twice; counted).
#[test]
fn kill_9_during_a_workload_loses_no_message() {
    let Some(pki) = pki() else { return };
    let Some(broker) = broker() else { return };
    let _up = BROKER_LOCK.read().unwrap_or_else(|e| e.into_inner());
    let vhost = broker.vhost("kill9");
    let consumer = Consumer::start(
        broker.stomp_port,
        &vhost,
        &destinations("queue", &["complete", "state"]),
    );
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("data");
    let config = format!(
        "[engine]\ndefault_link_active = 10\nscheduling_interval = 1\n\n[messages]\nbrokers = \
         [\"{}\"]\nusername = \"{USER}\"\npassword = \"{PASS}\"\nvhost = \"{vhost}\"\ntopic = false\n",
        broker.address()
    );
    let (mut child, port) = spawn_ftsd_with(pki, &dir, &config);
    let client = user(
        Client::new(port, &pki.path("ca.pem"), Some(pki.path("rc_user.pem"))),
        pki,
    );
    const JOBS: usize = 3;
    const FILES: usize = 30;
    let mut ids = Vec::new();
    for j in 0..JOBS {
        let list: Vec<Value> = (0..FILES)
            .map(|i| {
                transfer(
                    &format!("mock://s{j}.example/k{i}?size=1"),
                    &format!("mock://d{j}.example/k{i}?size_post=1&time=2"),
                )
            })
            .collect();
        ids.push(submit(&client, Value::Array(list), json!({"retry": -1})));
    }
    consumer.wait("some completions before the kill", |got| {
        of_kind(got, "complete").len() >= 10
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let before = of_kind(&consumer.received(), "complete").len();
    assert!(before < JOBS * FILES, "the kill came after the workload");
    let (mut child, port) = spawn_ftsd_with(pki, &dir, &config);
    let client = Client::new(port, &pki.path("ca.pem"), Some(pki.path("rc_user.pem")));
    let mut all = BTreeSet::new();
    for id in &ids {
        assert_eq!(
            wait_job(&client, id, Duration::from_secs(120))["job_state"],
            "FINISHED"
        );
        all.extend(
            files(&client, id)
                .iter()
                .filter_map(|f| f["file_id"].as_u64()),
        );
    }
    assert_eq!(all.len(), JOBS * FILES);
    let got = consumer.wait("a CO and a FINISHED SS for every file", |got| {
        let co: BTreeSet<u64> = of_kind(got, "complete")
            .iter()
            .filter_map(|m| m.body["file_id"].as_u64())
            .collect();
        let done: BTreeSet<u64> = of_kind(got, "state")
            .iter()
            .filter(|m| m.body["file_state"] == "FINISHED")
            .filter_map(|m| m.body["file_id"].as_u64())
            .collect();
        co == all && done == all
    });
    let co = of_kind(&got, "complete").len();
    let ss = of_kind(&got, "state").len();
    eprintln!(
        "{before} CO before the kill; after: {co} CO for {} files ({} duplicates), {ss} SS",
        all.len(),
        co - all.len()
    );
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let _ = std::io::stderr().flush();
}

// ---------------------------------------------------------------------------------------------
// ActiveMQ (Debian `activemq`), the broker CERN and Rucio's dev stack use

const ACTIVEMQ_JAR: &str = "/usr/share/activemq/bin/activemq.jar";

/// An ActiveMQ broker on a loopback port, non-persistent, login fts/ftspass; its process group
/// is killed on drop.
struct ActiveMq {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl ActiveMq {
    fn start() -> Option<ActiveMq> {
        if !Path::new(ACTIVEMQ_JAR).exists() || stomp_python().is_none() {
            assert!(
                !in_ci(),
                "activemq and stomp.py are required in CI (see .ci/run)"
            );
            eprintln!("SKIPPING: activemq (apt-get install activemq) or stomp.py not installed");
            return None;
        }
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new()
            .prefix("activemq-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let base = dir.path();
        std::fs::create_dir_all(base.join("conf")).unwrap();
        let port = free_port();
        std::fs::write(
            base.join("conf/activemq.xml"),
            format!(
                r#"<beans xmlns="http://www.springframework.org/schema/beans" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans.xsd http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="ftsdtest" useJmx="false" persistent="false" dataDirectory="{data}">
    <plugins><simpleAuthenticationPlugin><users><authenticationUser username="{USER}" password="{PASS}" groups="users"/></users></simpleAuthenticationPlugin></plugins>
    <transportConnectors><transportConnector name="stomp" uri="stomp://127.0.0.1:{port}"/></transportConnectors>
  </broker>
</beans>
"#,
                data = base.join("data").display()
            ),
        )
        .unwrap();
        let b = base.display().to_string();
        let child = Command::new("java")
            .args(["-Xms64M", "-Xmx256M", "-Dactivemq.home=/usr/share/activemq"])
            .arg(format!("-Dactivemq.base={b}"))
            .arg(format!("-Dactivemq.conf={b}/conf"))
            .arg(format!("-Dactivemq.data={b}/data"))
            .args(["-jar", ACTIVEMQ_JAR, "start"])
            .arg(format!("xbean:file:{b}/conf/activemq.xml"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let broker = ActiveMq {
            child,
            port,
            _dir: dir,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "activemq did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("activemq answers after {:?}", start.elapsed());
        Some(broker)
    }
}

impl Drop for ActiveMq {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// The same messages through ActiveMQ: ST and CO with FTS3's fields, `vo` on SS only, and
/// Rucio's receiver takes the completion.
#[test]
fn transfer_messages_reach_a_stomp_py_consumer_through_activemq() {
    let Some(pki) = pki() else { return };
    let Some(amq) = ActiveMq::start() else { return };
    let consumer = Consumer::start(
        amq.port,
        "/",
        &destinations("topic", &["start", "complete", "state"]),
    );
    let server = engine_server(pki, |c| {
        messages_config(c, format!("127.0.0.1:{}", amq.port), "/", true)
    });
    let client = user(server.client(pki, Some("rc_user.pem")), pki);
    let mut t = transfer(
        "mock://s.example/amq?size=10",
        "mock://d.example/amq?size_post=10&time=1",
    );
    t["metadata"] = json!({"request_id": "r-amq"});
    let id = submit(
        &client,
        json!([t]),
        json!({"job_metadata": {"issuer": "rucio"}, "retry": -1}),
    );
    let vo = wait_job(&client, &id, Duration::from_secs(60))["vo_name"]
        .as_str()
        .unwrap()
        .to_string();
    let ours = |m: &Received| m.body["job_id"] == id.as_str();
    let got = consumer.wait("ST, CO and a FINISHED SS", |got| {
        let n = |k| of_kind(got, k).into_iter().filter(|m| ours(m)).count();
        n("start") >= 1
            && n("complete") >= 1
            && of_kind(got, "state")
                .iter()
                .any(|m| ours(m) && m.body["file_state"] == "FINISHED")
    });
    let got: Vec<Received> = got.into_iter().filter(|m| ours(m)).collect();
    let set = |k: &[&str]| -> BTreeSet<String> { k.iter().map(|s| s.to_string()).collect() };
    let keys = |m: &Received| -> BTreeSet<String> {
        m.body.as_object().unwrap().keys().cloned().collect()
    };
    let co = of_kind(&got, "complete")[0];
    assert_eq!(keys(co), set(CO_KEYS));
    assert_eq!(keys(of_kind(&got, "start")[0]), set(ST_KEYS));
    for m in &got {
        assert!(m.raw.ends_with("} "), "{:?}", m.raw);
        let is_state = m.destination.ends_with("fts_monitoring_state");
        assert_eq!(m.headers.contains_key("vo"), is_state, "{m:?}");
    }
    assert_eq!(
        rucio_verdict(&co.raw, &vo),
        Some(("r-amq".to_string(), Some("DONE")))
    );
    drop(server);
}

//! A real Kafka-protocol broker (tansu, in its own process) and the
//! kpistream service as a child process, for the integration tests.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use serde_json::Value;

use super::fixture;

/// The tansu binary: `KPISTREAM_TANSU`, else where `tests/run.sh` installs it.
pub fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KPISTREAM_TANSU") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").expect("HOME");
    let p = PathBuf::from(home).join(".cache/kpistream-tools/tansu-0.6.0-libsql/bin/tansu");
    assert!(
        p.exists(),
        "tansu is not installed at {}: run `bash tests/run.sh`, which installs it",
        p.display()
    );
    p
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "kpistream-it-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("logs and data kept in {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn wait_for_port(port: u16, timeout: Duration) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < timeout, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tansu broker with sqlite storage, so that it survives a restart.
pub struct Broker {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    pub fn start(dir: &Path) -> Broker {
        let mut b = Broker {
            port: free_port(),
            dir: dir.to_owned(),
            child: None,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .unwrap();
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            // tansu resolves the sqlite path against its working directory.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(20));
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let res = rt
            .block_on(admin.create_topics([&topic], &AdminOptions::new()))
            .unwrap();
        for r in res {
            r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
    }

    /// A consumer of a whole topic from its first offset, in a group of
    /// its own.
    pub fn reader(&self, topic: &str) -> rdkafka::consumer::BaseConsumer {
        use rdkafka::consumer::Consumer;
        let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", format!("reader-{topic}-{}", free_port()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .set("max.poll.interval.ms", "10000")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        consumer
    }

    pub fn producer(&self) -> ThreadedProducer<DefaultProducerContext> {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "0")
            .set("linger.ms", "5")
            .create()
            .unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The message key of events.md: the entity the event belongs to.
pub fn event_key(msg: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(msg).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let kind = s("type")?;
    let by = match kind.as_str() {
        k if k.starts_with("lead.") => "lead_id",
        "call.logged" | "email.sent" if s("lead_id").is_some() => "lead_id",
        k if k.starts_with("meeting.") => "meeting_id",
        k if k.starts_with("deal.") => "deal_id",
        k if k.starts_with("subscription.") || k == "customer.churned" => "account_id",
        "survey.responded" if s("account_id").is_some() => "account_id",
        _ => return s("rep_id").or_else(|| s("team_id")),
    };
    s(by)
}

pub fn golden_lines() -> Vec<Vec<u8>> {
    fs::read(fixture("golden/events.ndjson"))
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Produces messages keyed as events.md says, `per_sec` per second (0: all
/// at once), then flushes.
pub fn produce(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    lines: &[Vec<u8>],
    per_sec: u32,
) {
    let start = Instant::now();
    for (i, l) in lines.iter().enumerate() {
        if per_sec > 0 {
            let due = start + Duration::from_secs_f64(i as f64 / per_sec as f64);
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
        }
        let key = event_key(l);
        let mut rec = BaseRecord::to(topic).payload(l);
        if let Some(k) = &key {
            rec = rec.key(k.as_str());
        }
        let mut rec = rec;
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
}

/// Messages in the golden log, every outcome included.
pub const GOLDEN_MESSAGES: u64 = 12_847;

/// A broker with the input, dead-letter and `extra_topics` topics, the
/// golden log produced to the input, and a service (with `env` on top of
/// [`Service::start`]'s) that has accounted for every message.
pub fn golden_service(
    name: &str,
    extra_topics: &[&str],
    env: &[(&str, &str)],
) -> (Scratch, Broker, Service) {
    let scratch = Scratch::new(name);
    let broker = Broker::start(&scratch.0);
    broker.create_topic("crm-events", 3);
    broker.create_topic("crm-events-dlq", 1);
    for t in extra_topics {
        broker.create_topic(t, 1);
    }
    produce(&broker.producer(), "crm-events", &golden_lines(), 0);
    let svc = Service::start(
        &broker,
        name,
        &scratch.0.join("snapshots"),
        &scratch.0.join("svc.log"),
        env,
    );
    wait_until("every message accounted", Duration::from_secs(120), || {
        svc.accounted() >= GOLDEN_MESSAGES
    });
    (scratch, broker, svc)
}

/// A `kpistream run` child process.
pub struct Service {
    pub http: u16,
    child: Option<Child>,
    env: Vec<(String, String)>,
    log: PathBuf,
}

impl Service {
    /// Starts an instance on the broker, golden teams and event clock.
    pub fn start(
        broker: &Broker,
        group: &str,
        snapshots: &Path,
        log: &Path,
        extra: &[(&str, &str)],
    ) -> Service {
        Service::start_on(&broker.bootstrap(), group, snapshots, log, extra)
    }

    /// As [`Service::start`], on any bootstrap address.
    pub fn start_on(
        bootstrap: &str,
        group: &str,
        snapshots: &Path,
        log: &Path,
        extra: &[(&str, &str)],
    ) -> Service {
        let http = free_port();
        let mut env: Vec<(String, String)> = [
            ("KPISTREAM__KAFKA__BROKERS", bootstrap.to_owned()),
            ("KPISTREAM__KAFKA__TOPICS", "crm-events".into()),
            (
                "KPISTREAM__KAFKA__DEAD_LETTER_TOPIC",
                "crm-events-dlq".into(),
            ),
            ("KPISTREAM__KAFKA__GROUP_ID", group.into()),
            (
                "KPISTREAM__KAFKA__PROPERTIES__SESSION_TIMEOUT_MS",
                "3000".into(),
            ),
            (
                "KPISTREAM__KAFKA__PROPERTIES__MAX_POLL_INTERVAL_MS",
                "3000".into(),
            ),
            (
                "KPISTREAM__KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS",
                "500".into(),
            ),
            ("KPISTREAM__SNAPSHOT__DIR", snapshots.display().to_string()),
            ("KPISTREAM__SNAPSHOT__INTERVAL", "1s".into()),
            ("KPISTREAM__SNAPSHOT__EVERY_EVENTS", "700".into()),
            ("KPISTREAM__CLOCK", "event".into()),
            (
                "KPISTREAM__TEAMS_FILE",
                fixture("golden/teams.json").display().to_string(),
            ),
            ("KPISTREAM__HTTP__LISTEN", format!("127.0.0.1:{http}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut s = Service {
            http,
            child: None,
            env,
            log: log.to_owned(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kpistream"))
            .arg("run")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(
                "RUST_LOG",
                std::env::var("KPISTREAM_TEST_LOG").unwrap_or_else(|_| "info,rdkafka=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_port(self.http, Duration::from_secs(20));
    }

    /// `kill -9`: no snapshot, no commit.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGTERM; returns the exit status and how long the exit took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let mut c = self.child.take().expect("running");
        let start = Instant::now();
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        let status = c.wait().unwrap();
        (status, start.elapsed())
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http, path)
    }

    /// The KPI document, once the API answers.
    pub fn kpis(&self) -> Option<Value> {
        let (status, body) = self.get("/api/v1/kpis")?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// Messages this instance has accounted for (all outcomes).
    pub fn accounted(&self) -> u64 {
        self.kpis().map_or(0, |d| outcomes_total(&d))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn outcomes_total(doc: &Value) -> u64 {
    ["applied", "duplicate", "ignored", "rejected"]
        .iter()
        .map(|k| doc["outcomes"][k].as_u64().unwrap_or(0))
        .sum()
}

/// A minimal HTTP/1.1 GET on loopback: status and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_with(port, path, None)
}

/// As [`http_get`], with an `Authorization` header when given.
pub fn http_get_with(port: u16, path: &str, authorization: Option<&str>) -> Option<(u16, String)> {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    http_request(port, "GET", path, &headers, b"")
}

/// One HTTP/1.1 request on a fresh connection: the status and the body.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method != "GET" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("Connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Waits until `f` holds, or fails the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

//! Configuration: `config/default.toml` (embedded in the binary), an optional
//! `--config FILE` layered on top, then `KPISTREAM__SECTION__KEY` environment
//! variables. [`RawSettings`] is what the file says; [`Settings::from_raw`]
//! validates it into the runtime types, with errors that name the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::crm::{CrmConfig, Format, Mapping, SalesforceObjects};
use crate::event::ParseOptions;
use crate::privacy::Pseudonyms;

/// The shipped defaults, also the base layer of every configuration.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Microseconds in a second.
pub const SECOND: i64 = 1_000_000;

/// The most sliding windows `windows.sliding` may list (the engine keeps
/// one bit per window when adding).
pub const MAX_SLIDING: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// The configuration file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// `event`: T is the largest applied `occurred_at`; `wall`: the system clock.
    pub clock: String,
    /// Path of a JSON object mapping rep id to team id; merged over `teams`.
    pub teams_file: String,
    /// Inline rep id to team id map.
    #[serde(default)]
    pub teams: BTreeMap<String, String>,
    pub windows: RawWindows,
    pub pipeline: RawPipeline,
    pub meetings: RawMeetings,
    pub dedup: RawDedup,
    pub currency: RawCurrency,
    pub limits: RawLimits,
    pub kafka: RawKafka,
    pub snapshot: RawSnapshot,
    pub http: RawHttp,
    pub output: RawOutput,
    pub shutdown: RawShutdown,
    pub crm: RawCrm,
    pub webhooks: RawWebhooks,
    pub privacy: RawPrivacy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrivacy {
    /// Replace every rep id by a keyed pseudonym in all outputs.
    pub pseudonymize_reps: bool,
    /// File holding the pseudonym key (else KPISTREAM_PSEUDONYM_SECRET).
    pub pseudonym_secret_file: String,
}

/// One CRM's id maps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    /// CRM owner or user id to rep id.
    #[serde(default)]
    pub owners: BTreeMap<String, String>,
    /// CRM stage id to pipeline stage.
    #[serde(default)]
    pub stages: BTreeMap<String, String>,
    /// CRM stages that close a deal as won.
    #[serde(default)]
    pub won_stages: Vec<String>,
    /// CRM stages that close a deal as lost.
    #[serde(default)]
    pub lost_stages: Vec<String>,
    /// A JSON file `{"owners": {...}, "stages": {...}}` merged over the maps
    /// above (ids are kept exactly as written there).
    #[serde(default)]
    pub mapping_file: String,
    /// CRM call results to `connected`, `no_answer`, `voicemail`, `busy`
    /// or `other`, over the adapter's built-in ones.
    #[serde(default)]
    pub call_outcomes: BTreeMap<String, String>,
    /// CRM meeting outcomes or statuses to `held`, `no_show` or `canceled`.
    #[serde(default)]
    pub meeting_outcomes: BTreeMap<String, String>,
    /// Zoho: the meeting field holding its outcome.
    #[serde(default)]
    pub meeting_outcome_field: String,
    /// Pipedrive: the activity types that are calls (default `call`).
    #[serde(default)]
    pub call_types: Vec<String>,
    /// Pipedrive: the activity types that are meetings (default `meeting`).
    #[serde(default)]
    pub meeting_types: Vec<String>,
    /// HubSpot: the object type (`0-69`); Zoho: the module whose
    /// `churn_field` reaching one of `churn_values` churns the account.
    #[serde(default)]
    pub churn_object: String,
    #[serde(default)]
    pub churn_field: String,
    #[serde(default)]
    pub churn_values: Vec<String>,
    /// Zoho: lead statuses that mean the lead was converted.
    #[serde(default)]
    pub converted_statuses: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCrm {
    pub hubspot: RawMapping,
    pub pipedrive: RawMapping,
    pub salesforce: RawMapping,
    pub salesforce_objects: SalesforceObjects,
    pub close: RawMapping,
    pub zoho: RawMapping,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhooks {
    /// Input topic the HubSpot route produces to; empty: no route.
    pub hubspot_topic: String,
    /// The URL HubSpot calls (it signs it); empty: https:// + Host + path.
    pub hubspot_url: String,
    /// File holding the HubSpot app's client secret.
    pub hubspot_secret_file: String,
    pub pipedrive_topic: String,
    /// File holding Pipedrive's `user:password`.
    pub pipedrive_secret_file: String,
    pub salesforce_topic: String,
    /// `signature` (the relay signs with a shared secret) or `none` (mutual
    /// TLS is checked by a proxy in front).
    pub salesforce_auth: String,
    pub salesforce_secret_file: String,
    pub close_topic: String,
    /// File holding the webhook subscription's hex `signature_key`.
    pub close_secret_file: String,
    pub zoho_topic: String,
    /// File holding `channel_id=token` pairs and `workflow=token`.
    pub zoho_secret_file: String,
    /// Signed requests older or further ahead than this are refused.
    pub max_age: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// Consumer group: instances with the same id share the partitions.
    pub group_id: String,
    /// Input topics of canonical events.
    pub topics: Vec<String>,
    /// Per input topic, its payload format when not `canonical`.
    #[serde(default)]
    pub formats: BTreeMap<String, String>,
    /// Rejected messages go here with their original bytes; empty disables.
    pub dead_letter_topic: String,
    /// Extra librdkafka properties, with `_` for `.` in the key
    /// (`security_protocol = "SASL_SSL"` sets `security.protocol`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSnapshot {
    /// Directory of the partition snapshots.
    pub dir: String,
    /// Snapshot a partition at least this often while it has new messages.
    pub interval: String,
    /// Snapshot a partition after this many new messages.
    pub every_events: u64,
    /// Snapshots kept per partition (older ones are the fallbacks).
    pub keep: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// Listen address of the metrics, API and health endpoints.
    pub listen: String,
    /// Cardinality guard: reps exported on /metrics; the rest are summed
    /// into `rep="other"` and counted in `kpistream_folded_reps`.
    pub max_exported_reps: usize,
    /// Requests served at once; more are answered 503 at once.
    pub max_concurrent_requests: usize,
    /// Largest request body accepted.
    pub max_request_bytes: usize,
    /// Most results one /api/v1/kpis answer may hold (422 past it).
    pub max_api_results: usize,
    /// `none`, `bearer` or `basic` for /metrics.
    pub metrics_auth: String,
    /// File holding the /metrics secret (token, or `user:password`).
    pub metrics_secret_file: String,
    /// `none`, `bearer` or `basic` for /api.
    pub api_auth: String,
    /// File holding the /api secret.
    pub api_secret_file: String,
    /// PEM certificate chain and private key: HTTPS on the listener when
    /// both are set.
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    /// Topic of the KPI documents, keyed `scope/id/window`; empty disables.
    pub topic: String,
    /// How often the changed documents are produced.
    pub interval: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    /// Longest time from SIGTERM to exit.
    pub timeout: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindows {
    /// Sliding windows as `LENGTH/GRANULARITY`, e.g. `7d/1h`.
    pub sliding: Vec<String>,
    /// Calendar windows: `mtd`, `qtd`.
    pub calendar: Vec<String>,
    /// IANA time zone of the calendar windows.
    pub timezone: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    /// The open deal stages, in order.
    pub stages: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMeetings {
    /// A scheduled meeting with no outcome this long after its time is missed.
    pub no_show_grace: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDedup {
    /// How long (in event time) an applied event id is remembered.
    pub horizon: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCurrency {
    /// ISO 4217 code every amount is converted to.
    pub base: String,
    /// Units of base currency per unit of each currency.
    pub rates: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Larger messages are rejected as `too_large`.
    pub max_message_bytes: usize,
    /// On the wall clock, events further in the future are rejected.
    pub max_clock_skew: String,
    /// Messages nested deeper (objects and arrays) are rejected as `too_deep`.
    pub max_json_depth: usize,
    /// Reps tracked per partition; events of further reps count for `other`.
    pub max_reps: usize,
    /// Teams tracked per partition; further teams count as `other`.
    pub max_teams: usize,
    /// Leads, deals, meetings and accounts held per partition; an event
    /// about a further one is rejected as `over_limit`.
    pub max_entities: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockMode {
    Event,
    Wall,
}

/// Exchange rates to the base currency: a short list, scanned linearly.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    pub base: String,
    table: Vec<(String, f64)>,
}

impl Rates {
    pub fn new(base: &str, table: impl IntoIterator<Item = (String, f64)>) -> Self {
        let mut table: Vec<(String, f64)> = table.into_iter().collect();
        if !table.iter().any(|(c, _)| c == base) {
            table.push((base.to_owned(), 1.0));
        }
        Rates {
            base: base.to_owned(),
            table,
        }
    }

    /// USD 1, EUR 1.08, GBP 1.27, base USD: the golden run's table.
    pub fn default_table() -> Self {
        Rates::new(
            "USD",
            [
                ("USD".to_owned(), 1.0),
                ("EUR".to_owned(), 1.08),
                ("GBP".to_owned(), 1.27),
            ],
        )
    }

    pub fn rate(&self, code: &str) -> Option<f64> {
        self.table.iter().find(|(c, _)| c == code).map(|(_, r)| *r)
    }
}

/// A sliding window: `length` and `granularity` in microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sliding {
    pub name: String,
    pub length: i64,
    pub granularity: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calendar {
    Month,
    Quarter,
}

impl Calendar {
    pub fn name(self) -> &'static str {
        match self {
            Calendar::Month => "mtd",
            Calendar::Quarter => "qtd",
        }
    }
}

/// Everything the pure core needs: windows, pipeline, rules and rates.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub sliding: Vec<Sliding>,
    pub calendar: Vec<Calendar>,
    pub timezone: chrono_tz::Tz,
    pub stages: Vec<String>,
    pub no_show_grace: i64,
    pub dedup_horizon: i64,
    pub teams: BTreeMap<String, String>,
    pub clock: ClockMode,
    pub max_clock_skew: i64,
    pub max_reps: usize,
    pub max_teams: usize,
    pub max_entities: usize,
    pub parse: ParseOptions,
    /// The CRM adapters' maps.
    pub crm: std::sync::Arc<CrmConfig>,
    /// Rep ids are replaced by these pseudonyms when set.
    pub pseudonyms: Option<std::sync::Arc<Pseudonyms>>,
}

impl EngineConfig {
    /// Window names in output order: sliding windows, then calendar ones.
    pub fn window_names(&self) -> Vec<String> {
        self.sliding
            .iter()
            .map(|s| s.name.clone())
            .chain(self.calendar.iter().map(|c| c.name().to_owned()))
            .collect()
    }
}

impl EngineConfig {
    /// The shipped defaults on the event clock (replays and tests).
    pub fn on_event_clock() -> Self {
        EngineConfig {
            clock: ClockMode::Event,
            ..EngineConfig::default()
        }
    }
}

/// The embedded defaults alone: never the process environment, so that a
/// test, bench or fuzz seed does not change with the shell it runs in.
impl Default for EngineConfig {
    fn default() -> Self {
        Settings::load_with_env(None, &Overrides::default(), std::iter::empty())
            .expect("the embedded default configuration is valid")
            .engine
    }
}

/// Kafka settings of `kpistream run`.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub group_id: String,
    pub topics: Vec<String>,
    /// The topics whose format is not `canonical`.
    pub formats: BTreeMap<String, Format>,
    pub dead_letter_topic: Option<String>,
    /// librdkafka properties (dotted keys) passed through.
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct SnapshotSettings {
    pub dir: PathBuf,
    pub interval: std::time::Duration,
    pub every_events: u64,
    pub keep: usize,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub engine: EngineConfig,
    pub kafka: KafkaSettings,
    pub snapshot: SnapshotSettings,
    pub http_listen: std::net::SocketAddr,
    /// Certificate chain and key files: the listener speaks HTTPS.
    pub http_tls: Option<(PathBuf, PathBuf)>,
    pub max_exported_reps: usize,
    pub http_limits: HttpLimits,
    /// Credentials required on /metrics (None: open).
    pub metrics_auth: Option<Credential>,
    /// Credentials required on /api (None: open).
    pub api_auth: Option<Credential>,
    pub output: Option<OutputSettings>,
    pub shutdown_timeout: std::time::Duration,
    /// The CRM webhook receiver; `None` when no route is configured.
    pub webhooks: Option<WebhookSettings>,
}

/// The CRM webhook routes that are on. Its `Debug` never shows secrets.
#[derive(Clone)]
pub struct WebhookSettings {
    /// Topic and client secret of `/webhooks/hubspot`, and the URL it signs.
    pub hubspot: Option<(String, String, Option<String>)>,
    /// Topic and base64 `user:password` of `/webhooks/pipedrive`.
    pub pipedrive: Option<(String, String)>,
    /// Topic and shared secret (`None`: mutual TLS in front) of
    /// `/webhooks/salesforce`.
    pub salesforce: Option<(String, Option<String>)>,
    /// Topic and the decoded signature key of `/webhooks/close`.
    pub close: Option<(String, Vec<u8>)>,
    /// Topic and tokens of `/webhooks/zoho`.
    pub zoho: Option<(String, crate::crm::signature::ZohoTokens)>,
    /// Largest accepted age of a signed request, in milliseconds.
    pub max_age_ms: i64,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field(
                "hubspot",
                &self.hubspot.as_ref().map(|h| (&h.0, "***", &h.2)),
            )
            .field("pipedrive", &self.pipedrive.as_ref().map(|p| (&p.0, "***")))
            .field(
                "salesforce",
                &self
                    .salesforce
                    .as_ref()
                    .map(|s| (&s.0, s.1.as_ref().map(|_| "***"))),
            )
            .field("close", &self.close.as_ref().map(|c| (&c.0, "***")))
            .field("zoho", &self.zoho.as_ref().map(|z| (&z.0, "***")))
            .field("max_age_ms", &self.max_age_ms)
            .finish()
    }
}

/// Request limits of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_concurrent_requests: usize,
    pub max_request_bytes: usize,
    pub max_api_results: usize,
}

/// What a protected endpoint requires. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: Basic base64(user:password)`, kept encoded.
    Basic(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Bearer(_) => f.write_str("Bearer(***)"),
            Credential::Basic(_) => f.write_str("Basic(***)"),
        }
    }
}

/// The environment variables that may hold secrets (read as they are, not
/// as configuration keys).
const SECRET_VARS: [&str; 8] = [
    "KPISTREAM_METRICS_SECRET",
    "KPISTREAM_API_SECRET",
    "KPISTREAM_HUBSPOT_SECRET",
    "KPISTREAM_PIPEDRIVE_SECRET",
    "KPISTREAM_SALESFORCE_SECRET",
    "KPISTREAM_CLOSE_SECRET",
    "KPISTREAM_ZOHO_SECRET",
    "KPISTREAM_PSEUDONYM_SECRET",
];

/// Reads the credential of one endpoint: the scheme from `auth`, the
/// secret from `file`, else from its environment variable in `secrets`
/// (`KPISTREAM_<KEY>_SECRET`, one of [`SECRET_VARS`]); secrets never come
/// from the configuration file itself.
fn credential(
    key: &str,
    auth: &str,
    file: &str,
    secrets: &BTreeMap<String, String>,
) -> Result<Option<Credential>, ConfigError> {
    if auth == "none" {
        return Ok(None);
    }
    if auth != "bearer" && auth != "basic" {
        return Err(invalid(
            format!("http.{key}_auth"),
            format!("`{auth}` is not `none`, `bearer` or `basic`"),
        ));
    }
    let secret = read_secret("http", key, &format!("`{auth}` auth"), file, secrets)?;
    Ok(Some(if auth == "bearer" {
        Credential::Bearer(secret)
    } else {
        Credential::Basic(basic(&format!("http.{key}_secret_file"), &secret)?)
    }))
}

/// HTTP basic credentials, kept base64-encoded: the secret must be
/// `user:password`.
fn basic(setting: &str, secret: &str) -> Result<String, ConfigError> {
    if !secret.contains(':') {
        return Err(invalid(setting, "basic auth needs `user:password`"));
    }
    Ok(base64(secret.as_bytes()))
}

/// Reads the secret of `SECTION.KEY_secret_file`: from that file, else from
/// the environment variable `KPISTREAM_<KEY>_SECRET` (one of
/// [`SECRET_VARS`]); `who` says what needs it.
fn read_secret(
    section: &str,
    key: &str,
    who: &str,
    file: &str,
    secrets: &BTreeMap<String, String>,
) -> Result<String, ConfigError> {
    let var = format!("KPISTREAM_{}_SECRET", key.to_ascii_uppercase());
    debug_assert!(SECRET_VARS.contains(&var.as_str()));
    let setting = format!("{section}.{key}_secret_file");
    let secret = if !file.is_empty() {
        std::fs::read_to_string(file).map_err(|e| invalid(&setting, format!("{file}: {e}")))?
    } else {
        secrets.get(&var).cloned().ok_or_else(|| {
            invalid(
                &setting,
                format!("{who} needs a secret file, or the environment variable {var}"),
            )
        })?
    };
    let secret = secret.trim_end_matches(['\n', '\r']).to_owned();
    if secret.is_empty() {
        return Err(invalid(&setting, "the secret is empty"));
    }
    Ok(secret)
}

/// Standard base64 with padding (for HTTP basic credentials).
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The KPI topic, when `output.topic` is set.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    pub topic: String,
    pub interval: std::time::Duration,
}

/// Command-line values that take precedence over files and environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub teams_file: Option<PathBuf>,
    pub clock: Option<String>,
}

impl Settings {
    /// Loads the embedded defaults, then `file`, then the environment.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::load_with_env(file, overrides, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let mut secrets = BTreeMap::new();
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, v)| {
                if SECRET_VARS.contains(&k.as_str()) {
                    secrets.insert(k.clone(), v.clone());
                }
                k.starts_with("KPISTREAM__")
            })
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("KPISTREAM")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("windows.sliding")
                .with_list_parse_key("windows.calendar")
                .with_list_parse_key("pipeline.stages")
                .with_list_parse_key("kafka.topics")
                .try_parsing(true)
                .source(Some(env)),
        );
        if let Some(path) = &overrides.teams_file {
            builder = builder.set_override("teams_file", path.display().to_string())?;
        }
        if let Some(clock) = &overrides.clock {
            builder = builder.set_override("clock", clock.as_str())?;
        }
        let raw: RawSettings = builder.build()?.try_deserialize()?;
        Self::from_raw_with_secrets(raw, &secrets)
    }

    /// Validates the raw settings; every error names its key. Secrets given
    /// in the environment are read from the process environment.
    pub fn from_raw(raw: RawSettings) -> Result<Self, ConfigError> {
        let secrets = std::env::vars()
            .filter(|(k, _)| SECRET_VARS.contains(&k.as_str()))
            .collect();
        Self::from_raw_with_secrets(raw, &secrets)
    }

    /// As [`Settings::from_raw`], with the secret environment variables given.
    pub fn from_raw_with_secrets(
        raw: RawSettings,
        secrets: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let clock = match raw.clock.as_str() {
            "event" => ClockMode::Event,
            "wall" => ClockMode::Wall,
            other => {
                return Err(invalid(
                    "clock",
                    format!("`{other}` is not `event` or `wall`"),
                ))
            }
        };
        if raw.windows.sliding.len() > MAX_SLIDING {
            return Err(invalid(
                "windows.sliding",
                format!(
                    "{} windows listed, at most {MAX_SLIDING} are supported",
                    raw.windows.sliding.len()
                ),
            ));
        }
        let mut sliding = Vec::new();
        for (i, spec) in raw.windows.sliding.iter().enumerate() {
            let key = format!("windows.sliding[{i}]");
            let (len, gran) = spec
                .split_once('/')
                .ok_or_else(|| invalid(&key, format!("`{spec}` is not LENGTH/GRANULARITY")))?;
            let length = parse_duration(len.trim()).map_err(|p| invalid(&key, p))?;
            let granularity = parse_duration(gran.trim()).map_err(|p| invalid(&key, p))?;
            if length % granularity != 0 {
                return Err(invalid(
                    &key,
                    format!("length {len} is not a multiple of granularity {gran}"),
                ));
            }
            if length / granularity > 100_000 {
                return Err(invalid(&key, "more than 100000 buckets"));
            }
            let name = len.trim().to_owned();
            if sliding.iter().any(|s: &Sliding| s.name == name) {
                return Err(invalid(&key, format!("window `{name}` is listed twice")));
            }
            sliding.push(Sliding {
                name,
                length,
                granularity,
            });
        }
        let mut calendar = Vec::new();
        for (i, c) in raw.windows.calendar.iter().enumerate() {
            let cal = match c.as_str() {
                "mtd" => Calendar::Month,
                "qtd" => Calendar::Quarter,
                other => {
                    return Err(invalid(
                        format!("windows.calendar[{i}]"),
                        format!("`{other}` is not `mtd` or `qtd`"),
                    ))
                }
            };
            if calendar.contains(&cal) {
                return Err(invalid(format!("windows.calendar[{i}]"), "listed twice"));
            }
            calendar.push(cal);
        }
        if sliding.is_empty() && calendar.is_empty() {
            return Err(invalid("windows", "at least one window is needed"));
        }
        let timezone: chrono_tz::Tz = raw.windows.timezone.parse().map_err(|_| {
            invalid(
                "windows.timezone",
                format!("`{}` is not an IANA time zone", raw.windows.timezone),
            )
        })?;
        let stages = raw.pipeline.stages.clone();
        if stages.is_empty() || stages.len() > 64 {
            return Err(invalid("pipeline.stages", "needs 1 to 64 stages"));
        }
        for (i, s) in stages.iter().enumerate() {
            if s.is_empty() || stages[..i].contains(s) {
                return Err(invalid(
                    format!("pipeline.stages[{i}]"),
                    "stages must be non-empty and distinct",
                ));
            }
        }
        let no_show_grace = parse_duration(&raw.meetings.no_show_grace)
            .map_err(|p| invalid("meetings.no_show_grace", p))?;
        let dedup_horizon =
            parse_duration(&raw.dedup.horizon).map_err(|p| invalid("dedup.horizon", p))?;
        let base = raw.currency.base.to_ascii_uppercase();
        if !is_currency_code(&base) {
            return Err(invalid(
                "currency.base",
                "must be a three-letter ISO 4217 code",
            ));
        }
        let mut table = Vec::new();
        for (code, rate) in &raw.currency.rates {
            let code = code.to_ascii_uppercase();
            let key = format!("currency.rates.{code}");
            if !is_currency_code(&code) {
                return Err(invalid(key, "must be a three-letter ISO 4217 code"));
            }
            if !(rate.is_finite() && *rate > 0.0) {
                return Err(invalid(key, "must be a positive number"));
            }
            table.push((code, *rate));
        }
        if let Some((_, r)) = table.iter().find(|(c, _)| *c == base) {
            if *r != 1.0 {
                return Err(invalid(
                    format!("currency.rates.{base}"),
                    "the base currency's rate must be 1",
                ));
            }
        }
        if raw.limits.max_message_bytes < 64 {
            return Err(invalid("limits.max_message_bytes", "must be at least 64"));
        }
        if !(2..=128).contains(&raw.limits.max_json_depth) {
            return Err(invalid(
                "limits.max_json_depth",
                "must be 2 to 128 (serde_json's own limit)",
            ));
        }
        for (key, v) in [
            ("limits.max_reps", raw.limits.max_reps),
            ("limits.max_teams", raw.limits.max_teams),
            ("limits.max_entities", raw.limits.max_entities),
            ("http.max_api_results", raw.http.max_api_results),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let max_clock_skew = parse_duration(&raw.limits.max_clock_skew)
            .map_err(|p| invalid("limits.max_clock_skew", p))?;
        let mut teams = raw.teams.clone();
        if !raw.teams_file.is_empty() {
            let text = std::fs::read_to_string(&raw.teams_file)
                .map_err(|e| invalid("teams_file", format!("{}: {e}", raw.teams_file)))?;
            let map: BTreeMap<String, String> = serde_json::from_str(&text).map_err(|e| {
                invalid(
                    "teams_file",
                    format!(
                        "{} is not a JSON object of rep id to team id: {e}",
                        raw.teams_file
                    ),
                )
            })?;
            teams.extend(map);
        }
        for (rep, team) in &teams {
            if rep.is_empty() || rep.len() > 128 || team.is_empty() || team.len() > 128 {
                return Err(invalid(
                    "teams",
                    "rep and team ids must be 1 to 128 bytes long",
                ));
            }
        }
        let std_duration = |key: &str, v: &str| {
            parse_duration(v)
                .map(|us| std::time::Duration::from_micros(us as u64))
                .map_err(|p| invalid(key, p))
        };
        let topics: Vec<String> = raw
            .kafka
            .topics
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        for (i, t) in topics.iter().enumerate() {
            if !is_topic_name(t) {
                return Err(invalid(
                    format!("kafka.topics[{i}]"),
                    "topic names are 1 to 249 of a-z A-Z 0-9 . _ -",
                ));
            }
        }
        if topics.is_empty() {
            return Err(invalid(
                "kafka.topics",
                "at least one input topic is needed",
            ));
        }
        let dlq = raw.kafka.dead_letter_topic.trim().to_owned();
        if !dlq.is_empty() && !is_topic_name(&dlq) {
            return Err(invalid(
                "kafka.dead_letter_topic",
                "topic names are 1 to 249 of a-z A-Z 0-9 . _ -",
            ));
        }
        if topics.contains(&dlq) {
            return Err(invalid(
                "kafka.dead_letter_topic",
                "must not be one of the input topics",
            ));
        }
        if raw.kafka.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        let properties = raw
            .kafka
            .properties
            .iter()
            .map(|(k, v)| (k.replace('_', "."), v.clone()))
            .collect();
        let output_topic = raw.output.topic.trim().to_owned();
        if !output_topic.is_empty() {
            if !is_topic_name(&output_topic) {
                return Err(invalid(
                    "output.topic",
                    "topic names are 1 to 249 of a-z A-Z 0-9 . _ -",
                ));
            }
            if topics.contains(&output_topic) || output_topic == dlq {
                return Err(invalid(
                    "output.topic",
                    "must differ from the input and dead-letter topics",
                ));
            }
        }
        if raw.snapshot.every_events == 0 {
            return Err(invalid("snapshot.every_events", "must be at least 1"));
        }
        if raw.snapshot.keep == 0 {
            return Err(invalid("snapshot.keep", "must be at least 1"));
        }
        if raw.http.max_concurrent_requests == 0 {
            return Err(invalid(
                "http.max_concurrent_requests",
                "must be at least 1",
            ));
        }
        let pseudonyms = if raw.privacy.pseudonymize_reps {
            let key = read_secret(
                "privacy",
                "pseudonym",
                "privacy.pseudonymize_reps",
                &raw.privacy.pseudonym_secret_file,
                secrets,
            )?;
            Some(std::sync::Arc::new(Pseudonyms::new(key.as_bytes())))
        } else {
            None
        };
        if let Some(p) = &pseudonyms {
            teams = teams
                .into_iter()
                .map(|(rep, team)| (p.rep(&rep), team))
                .collect();
        }
        let mut formats = BTreeMap::new();
        for (topic, format) in &raw.kafka.formats {
            let key = format!("kafka.formats.{topic}");
            let format: Format = format.parse().map_err(|p: String| invalid(&key, p))?;
            if !topics.contains(topic) {
                return Err(invalid(key, "is not one of kafka.topics"));
            }
            if format != Format::Canonical {
                formats.insert(topic.clone(), format);
            }
        }
        let crm = std::sync::Arc::new(CrmConfig {
            hubspot: mapping("crm.hubspot", &raw.crm.hubspot)?,
            pipedrive: mapping("crm.pipedrive", &raw.crm.pipedrive)?,
            salesforce: mapping("crm.salesforce", &raw.crm.salesforce)?,
            salesforce_objects: raw.crm.salesforce_objects.clone(),
            close: mapping("crm.close", &raw.crm.close)?,
            zoho: mapping("crm.zoho", &raw.crm.zoho)?,
        });
        let webhooks = webhooks(&raw.webhooks, &formats, secrets)?;
        let http_tls = match (raw.http.tls_cert_file.trim(), raw.http.tls_key_file.trim()) {
            ("", "") => None,
            (cert, key) if !cert.is_empty() && !key.is_empty() => {
                for (k, f) in [("http.tls_cert_file", cert), ("http.tls_key_file", key)] {
                    std::fs::metadata(f).map_err(|e| invalid(k, format!("{f}: {e}")))?;
                }
                Some((PathBuf::from(cert), PathBuf::from(key)))
            }
            _ => {
                return Err(invalid(
                    "http.tls_cert_file",
                    "HTTPS needs both http.tls_cert_file and http.tls_key_file",
                ))
            }
        };
        let http_listen = raw.http.listen.parse().map_err(|_| {
            invalid(
                "http.listen",
                format!("`{}` is not an ip:port address", raw.http.listen),
            )
        })?;
        Ok(Settings {
            kafka: KafkaSettings {
                brokers: raw.kafka.brokers.clone(),
                group_id: raw.kafka.group_id.clone(),
                topics,
                formats,
                dead_letter_topic: (!dlq.is_empty()).then_some(dlq),
                properties,
            },
            snapshot: SnapshotSettings {
                dir: PathBuf::from(&raw.snapshot.dir),
                interval: std_duration("snapshot.interval", &raw.snapshot.interval)?,
                every_events: raw.snapshot.every_events,
                keep: raw.snapshot.keep,
            },
            http_listen,
            http_tls,
            max_exported_reps: raw.http.max_exported_reps,
            http_limits: HttpLimits {
                max_concurrent_requests: raw.http.max_concurrent_requests,
                max_request_bytes: raw.http.max_request_bytes,
                max_api_results: raw.http.max_api_results,
            },
            metrics_auth: credential(
                "metrics",
                &raw.http.metrics_auth,
                &raw.http.metrics_secret_file,
                secrets,
            )?,
            api_auth: credential(
                "api",
                &raw.http.api_auth,
                &raw.http.api_secret_file,
                secrets,
            )?,
            output: if output_topic.is_empty() {
                None
            } else {
                let interval = std_duration("output.interval", &raw.output.interval)?;
                if interval.is_zero() {
                    return Err(invalid("output.interval", "must be more than zero"));
                }
                Some(OutputSettings {
                    topic: output_topic,
                    interval,
                })
            },
            shutdown_timeout: std_duration("shutdown.timeout", &raw.shutdown.timeout)?,
            webhooks,
            engine: EngineConfig {
                sliding,
                calendar,
                timezone,
                stages,
                no_show_grace,
                dedup_horizon,
                teams,
                clock,
                max_clock_skew,
                max_reps: raw.limits.max_reps,
                max_teams: raw.limits.max_teams,
                max_entities: raw.limits.max_entities,
                parse: ParseOptions {
                    max_message_bytes: raw.limits.max_message_bytes,
                    max_json_depth: raw.limits.max_json_depth,
                    rates: Rates::new(&base, table),
                },
                crm,
                pseudonyms,
            },
        })
    }
}

/// One CRM's maps, with its mapping file merged over them.
fn mapping(section: &str, raw: &RawMapping) -> Result<Mapping, ConfigError> {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        owners: BTreeMap<String, String>,
        #[serde(default)]
        stages: BTreeMap<String, String>,
    }
    let mut m = Mapping {
        owners: raw.owners.clone(),
        stages: raw.stages.clone(),
        won_stages: raw.won_stages.iter().cloned().collect(),
        lost_stages: raw.lost_stages.iter().cloned().collect(),
        call_outcomes: raw.call_outcomes.clone(),
        meeting_outcomes: raw.meeting_outcomes.clone(),
        meeting_outcome_field: raw.meeting_outcome_field.clone(),
        call_types: raw.call_types.iter().cloned().collect(),
        meeting_types: raw.meeting_types.iter().cloned().collect(),
        churn_object: raw.churn_object.clone(),
        churn_field: raw.churn_field.clone(),
        churn_values: raw.churn_values.iter().cloned().collect(),
        converted_statuses: raw.converted_statuses.iter().cloned().collect(),
    };
    for (value, o) in &m.call_outcomes {
        if !["connected", "no_answer", "voicemail", "busy", "other"].contains(&o.as_str()) {
            return Err(invalid(
                format!("{section}.call_outcomes.{value}"),
                "a call outcome is connected, no_answer, voicemail, busy or other",
            ));
        }
    }
    for (value, o) in &m.meeting_outcomes {
        if !["held", "no_show", "canceled"].contains(&o.as_str()) {
            return Err(invalid(
                format!("{section}.meeting_outcomes.{value}"),
                "a meeting outcome is held, no_show or canceled",
            ));
        }
    }
    if !raw.mapping_file.is_empty() {
        let key = format!("{section}.mapping_file");
        let text = std::fs::read_to_string(&raw.mapping_file)
            .map_err(|e| invalid(&key, format!("{}: {e}", raw.mapping_file)))?;
        let f: File = serde_json::from_str(&text).map_err(|e| {
            invalid(
                &key,
                format!(
                    "{} is not a JSON object {{\"owners\": {{...}}, \"stages\": {{...}}}}: {e}",
                    raw.mapping_file
                ),
            )
        })?;
        m.owners.extend(f.owners);
        m.stages.extend(f.stages);
    }
    for (crm, rep) in &m.owners {
        if rep.is_empty() || rep.len() > 128 {
            return Err(invalid(
                format!("{section}.owners.{crm}"),
                "rep ids are 1 to 128 bytes long",
            ));
        }
    }
    if let Some(s) = m.won_stages.intersection(&m.lost_stages).next() {
        return Err(invalid(
            format!("{section}.lost_stages"),
            format!("`{s}` is also a won stage"),
        ));
    }
    Ok(m)
}

/// The webhook routes that are on, with their secrets.
fn webhooks(
    raw: &RawWebhooks,
    formats: &BTreeMap<String, Format>,
    secrets: &BTreeMap<String, String>,
) -> Result<Option<WebhookSettings>, ConfigError> {
    let route = |key: &str, topic: &str, want: Format| -> Result<Option<String>, ConfigError> {
        let topic = topic.trim();
        if topic.is_empty() {
            return Ok(None);
        }
        if formats.get(topic) != Some(&want) {
            return Err(invalid(
                format!("webhooks.{key}_topic"),
                format!("`{topic}` must be an input topic with kafka.formats.{topic} = \"{want}\""),
            ));
        }
        Ok(Some(topic.to_owned()))
    };
    let hubspot = match route("hubspot", &raw.hubspot_topic, Format::Hubspot)? {
        None => None,
        Some(topic) => {
            let secret = read_secret(
                "webhooks",
                "hubspot",
                "the HubSpot route",
                &raw.hubspot_secret_file,
                secrets,
            )?;
            let url = raw.hubspot_url.trim();
            if !(url.is_empty() || url.starts_with("https://") || url.starts_with("http://")) {
                return Err(invalid(
                    "webhooks.hubspot_url",
                    "must be an http:// or https:// URL",
                ));
            }
            Some((topic, secret, (!url.is_empty()).then(|| url.to_owned())))
        }
    };
    let pipedrive = match route("pipedrive", &raw.pipedrive_topic, Format::Pipedrive)? {
        None => None,
        Some(topic) => {
            let secret = read_secret(
                "webhooks",
                "pipedrive",
                "the Pipedrive route",
                &raw.pipedrive_secret_file,
                secrets,
            )?;
            Some((topic, basic("webhooks.pipedrive_secret_file", &secret)?))
        }
    };
    let salesforce = match route("salesforce", &raw.salesforce_topic, Format::SalesforceCdc)? {
        None => None,
        Some(topic) => match raw.salesforce_auth.as_str() {
            "none" => Some((topic, None)),
            "signature" => {
                let secret = read_secret(
                    "webhooks",
                    "salesforce",
                    "the Salesforce route",
                    &raw.salesforce_secret_file,
                    secrets,
                )?;
                Some((topic, Some(secret)))
            }
            other => {
                return Err(invalid(
                    "webhooks.salesforce_auth",
                    format!("`{other}` is not `signature` or `none`"),
                ))
            }
        },
    };
    let close = match route("close", &raw.close_topic, Format::Close)? {
        None => None,
        Some(topic) => {
            let secret = read_secret(
                "webhooks",
                "close",
                "the Close route",
                &raw.close_secret_file,
                secrets,
            )?;
            let key = crate::crm::signature::unhex(&secret).ok_or_else(|| {
                invalid(
                    "webhooks.close_secret_file",
                    "the signature_key Close returned is hex",
                )
            })?;
            Some((topic, key))
        }
    };
    let zoho = match route("zoho", &raw.zoho_topic, Format::Zoho)? {
        None => None,
        Some(topic) => {
            let secret = read_secret(
                "webhooks",
                "zoho",
                "the Zoho route",
                &raw.zoho_secret_file,
                secrets,
            )?;
            let tokens = crate::crm::signature::ZohoTokens::parse(&secret)
                .map_err(|e| invalid("webhooks.zoho_secret_file", e))?;
            Some((topic, tokens))
        }
    };
    let max_age_ms =
        parse_duration(&raw.max_age).map_err(|p| invalid("webhooks.max_age", p))? / 1000;
    if hubspot.is_none()
        && pipedrive.is_none()
        && salesforce.is_none()
        && close.is_none()
        && zoho.is_none()
    {
        return Ok(None);
    }
    Ok(Some(WebhookSettings {
        hubspot,
        pipedrive,
        salesforce,
        close,
        zoho,
        max_age_ms,
    }))
}

fn is_topic_name(s: &str) -> bool {
    (1..=249).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_currency_code(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// Parses `90s`, `30m`, `1h`, `7d`, `2w` (and `500ms`) into microseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` has no unit (ms, s, m, h, d, w)"))?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("`{s}` does not start with a whole number"))?;
    let unit_us = match unit {
        "ms" => 1_000,
        "s" => SECOND,
        "m" => 60 * SECOND,
        "h" => 3_600 * SECOND,
        "d" => 86_400 * SECOND,
        "w" => 7 * 86_400 * SECOND,
        _ => return Err(format!("`{s}` has an unknown unit (ms, s, m, h, d, w)")),
    };
    match n.checked_mul(unit_us) {
        Some(v) if v > 0 => Ok(v),
        _ => Err(format!(
            "`{s}` must be positive and at most a few thousand years"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_env(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_with_env(
            None,
            &Overrides::default(),
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn the_shipped_defaults_are_the_golden_run_settings() {
        let s = load_env(&[]).unwrap().engine;
        assert_eq!(
            s.window_names(),
            ["1h", "24h", "7d", "30d", "90d", "mtd", "qtd"]
        );
        assert_eq!(s.sliding[1].granularity, 15 * 60 * SECOND);
        assert_eq!(s.parse.rates.rate("EUR"), Some(1.08));
        assert_eq!(s.parse.rates.rate("GBP"), Some(1.27));
        assert_eq!(s.parse.rates.base, "USD");
        assert_eq!(s.no_show_grace, 30 * 60 * SECOND);
        assert_eq!(s.dedup_horizon, 7 * 86_400 * SECOND);
        assert_eq!(s.clock, ClockMode::Wall);
        assert_eq!(s.stages.len(), 5);
    }

    #[test]
    fn environment_overrides_any_key() {
        let s = load_env(&[
            ("KPISTREAM__CLOCK", "event"),
            ("KPISTREAM__WINDOWS__SLIDING", "1h/5m,7d/1d"),
            ("KPISTREAM__MEETINGS__NO_SHOW_GRACE", "10m"),
            ("KPISTREAM__CURRENCY__RATES__CHF", "1.1"),
        ])
        .unwrap()
        .engine;
        assert_eq!(s.clock, ClockMode::Event);
        assert_eq!(s.window_names(), ["1h", "7d", "mtd", "qtd"]);
        assert_eq!(s.no_show_grace, 10 * 60 * SECOND);
        assert_eq!(s.parse.rates.rate("CHF"), Some(1.1));
    }

    #[test]
    fn service_settings_from_the_documented_environment_names() {
        let s = load_env(&[
            ("KPISTREAM__KAFKA__BROKERS", "k1:9092,k2:9092"),
            ("KPISTREAM__KAFKA__TOPICS", "crm-a,crm-b"),
            ("KPISTREAM__KAFKA__GROUP_ID", "kpi-prod"),
            (
                "KPISTREAM__KAFKA__PROPERTIES__SECURITY_PROTOCOL",
                "SASL_SSL",
            ),
            ("KPISTREAM__SNAPSHOT__DIR", "/var/lib/kpistream"),
            ("KPISTREAM__HTTP__LISTEN", "127.0.0.1:9999"),
        ])
        .unwrap();
        assert_eq!(s.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(s.kafka.topics, ["crm-a", "crm-b"]);
        assert_eq!(s.kafka.group_id, "kpi-prod");
        assert_eq!(s.kafka.properties["security.protocol"], "SASL_SSL");
        assert_eq!(s.snapshot.dir, PathBuf::from("/var/lib/kpistream"));
        assert_eq!(s.http_listen.port(), 9999);
    }

    #[test]
    fn endpoint_secrets_come_from_files_or_the_environment_and_never_show() {
        let dir = std::env::temp_dir().join(format!("kpistream-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("metrics-token");
        std::fs::write(&file, "t0ken\n").unwrap();
        let s = load_env(&[
            ("KPISTREAM__HTTP__METRICS_AUTH", "bearer"),
            (
                "KPISTREAM__HTTP__METRICS_SECRET_FILE",
                file.to_str().unwrap(),
            ),
            ("KPISTREAM__HTTP__API_AUTH", "basic"),
            ("KPISTREAM_API_SECRET", "ann:pw"),
        ])
        .unwrap();
        assert_eq!(s.metrics_auth, Some(Credential::Bearer("t0ken".into())));
        assert_eq!(s.api_auth, Some(Credential::Basic(base64(b"ann:pw"))));
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("t0ken") && !shown.contains(&base64(b"ann:pw")),
            "{shown}"
        );
        assert!(shown.contains("Bearer(***)"));

        for (vars, says) in [
            (
                &[("KPISTREAM__HTTP__API_AUTH", "digest")][..],
                "`digest` is not `none`, `bearer` or `basic`",
            ),
            (
                &[("KPISTREAM__HTTP__API_AUTH", "bearer")][..],
                "or the environment variable KPISTREAM_API_SECRET",
            ),
            (
                &[
                    ("KPISTREAM__HTTP__API_AUTH", "basic"),
                    ("KPISTREAM_API_SECRET", "nocolon"),
                ][..],
                "basic auth needs `user:password`",
            ),
        ] {
            let err = load_env(vars).unwrap_err().to_string();
            assert!(
                err.contains("http.api_secret_file") || err.contains("http.api_auth"),
                "{err}"
            );
            assert!(err.contains(says), "{err}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn invalid_settings_name_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("KPISTREAM__CLOCK", "sundial")], "clock"),
            (
                &[("KPISTREAM__WINDOWS__SLIDING", "1h/7m")],
                "windows.sliding[0]",
            ),
            (
                &[("KPISTREAM__WINDOWS__TIMEZONE", "Mars/Olympus")],
                "windows.timezone",
            ),
            (&[("KPISTREAM__DEDUP__HORIZON", "7 days")], "dedup.horizon"),
            (
                &[("KPISTREAM__CURRENCY__RATES__EUR", "-1")],
                "currency.rates.EUR",
            ),
            (
                &[("KPISTREAM__TEAMS_FILE", "/nonexistent/teams.json")],
                "teams_file",
            ),
            (
                &[("KPISTREAM__KAFKA__FORMATS__CRM-EVENTS", "sugarcrm")],
                "kafka.formats.crm-events",
            ),
            (
                &[("KPISTREAM__KAFKA__FORMATS__ELSEWHERE", "hubspot")],
                "kafka.formats.elsewhere",
            ),
            (
                &[("KPISTREAM__WEBHOOKS__HUBSPOT_TOPIC", "crm-events")],
                "webhooks.hubspot_topic",
            ),
            (
                &[
                    ("KPISTREAM__KAFKA__FORMATS__CRM-EVENTS", "pipedrive"),
                    ("KPISTREAM__WEBHOOKS__PIPEDRIVE_TOPIC", "crm-events"),
                ],
                "webhooks.pipedrive_secret_file",
            ),
            (
                &[("KPISTREAM__CRM__SALESFORCE__LOST_STAGES", "Closed Won")],
                "crm.salesforce.lost_stages",
            ),
        ];
        for (vars, key) in cases {
            let err = load_env(vars).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{err} should name {key}");
        }
    }

    #[test]
    fn at_most_32_sliding_windows() {
        let list = |n: usize| {
            (1..=n)
                .map(|m| format!("{m}m/1m"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let s = load_env(&[("KPISTREAM__WINDOWS__SLIDING", &list(MAX_SLIDING))]).unwrap();
        assert_eq!(s.engine.sliding.len(), 32);
        let err = load_env(&[("KPISTREAM__WINDOWS__SLIDING", &list(MAX_SLIDING + 1))])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`windows.sliding`") && err.contains("33 windows listed, at most 32"),
            "{err}"
        );
    }

    #[test]
    fn webhook_routes_take_their_secrets_from_the_environment_and_hide_them() {
        let s = load_env(&[
            ("KPISTREAM__KAFKA__TOPICS", "hs,pd,sf"),
            ("KPISTREAM__KAFKA__FORMATS__HS", "hubspot"),
            ("KPISTREAM__KAFKA__FORMATS__PD", "pipedrive"),
            ("KPISTREAM__KAFKA__FORMATS__SF", "salesforce_cdc"),
            ("KPISTREAM__WEBHOOKS__HUBSPOT_TOPIC", "hs"),
            ("KPISTREAM__WEBHOOKS__PIPEDRIVE_TOPIC", "pd"),
            ("KPISTREAM__WEBHOOKS__SALESFORCE_TOPIC", "sf"),
            ("KPISTREAM__WEBHOOKS__SALESFORCE_AUTH", "none"),
            ("KPISTREAM_HUBSPOT_SECRET", "hs-client-secret"),
            ("KPISTREAM_PIPEDRIVE_SECRET", "pd:pw"),
        ])
        .unwrap();
        assert_eq!(s.kafka.formats.len(), 3);
        let w = s.webhooks.clone().unwrap();
        assert_eq!(w.hubspot.as_ref().unwrap().1, "hs-client-secret");
        assert_eq!(w.pipedrive.as_ref().unwrap().1, base64(b"pd:pw"));
        assert_eq!(w.salesforce, Some(("sf".to_owned(), None)));
        assert_eq!(w.max_age_ms, 300_000);
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hs-client-secret") && !shown.contains(&base64(b"pd:pw")),
            "{shown}"
        );
    }

    #[test]
    fn unknown_keys_stop_start_up() {
        let err = load_env(&[("KPISTREAM__LIMITS__MAX_MESAGE_BYTES", "5")]).unwrap_err();
        assert!(err.to_string().contains("max_mesage_bytes"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Ok(15 * 60 * SECOND));
        assert_eq!(parse_duration("2w"), Ok(14 * 86_400 * SECOND));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5y").is_err());
    }
}

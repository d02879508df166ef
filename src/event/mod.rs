//! Canonical events (`docs/events.md`): parsing and validation.
//!
//! [`parse`] turns the bytes of one message into an [`Event`] borrowing from
//! those bytes, a [`Parsed::Unknown`] envelope (a valid `id`, `type` and
//! `occurred_at` with a type we do not know), or a [`Rejection`] with a reason
//! code from the fixed set of [`RejectReason`]. It never panics.
//!
//! Times are microseconds since the Unix epoch; amounts are micro-units of the
//! base currency and durations micro-seconds, so that every sum the engine
//! keeps is an exact integer.

use std::borrow::Cow;
use std::fmt;

use serde::de::IgnoredAny;

use crate::config::Rates;
use json::{Field, Fields, Tok};

mod json;

/// One micro-unit: amounts and durations are stored as integers of 1e-6.
pub const MICRO: f64 = 1_000_000.0;
/// Largest accepted amount or mrr, in currency units.
pub const MAX_AMOUNT: f64 = 1e12;
/// Largest accepted duration, in seconds (one year).
pub const MAX_DURATION_SECONDS: f64 = 31_536_000.0;

/// Why a message was rejected; a small fixed set, used as a metric label and
/// as the dead-letter `reason` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    TooLarge,
    NotUtf8,
    InvalidJson,
    NotObject,
    MissingField,
    WrongType,
    BadTimestamp,
    OutOfRange,
    UnknownCurrency,
    FutureTimestamp,
    Unmappable,
    TooDeep,
    OverLimit,
    /// A CRM payload format version kpistream does not read (Pipedrive v1).
    UnsupportedVersion,
    /// A CRM payload that says a record changed but not how (Salesforce
    /// gap and overflow events, wildcard record ids; Zoho callbacks without
    /// values): dead-lettered to be reconciled from the CRM.
    IncompletePayload,
    /// Salesforce Pub/Sub `changedFields` as a bitmap without the schema
    /// to decode it.
    EncodedFields,
}

impl RejectReason {
    pub const ALL: [RejectReason; 16] = [
        RejectReason::TooLarge,
        RejectReason::NotUtf8,
        RejectReason::InvalidJson,
        RejectReason::NotObject,
        RejectReason::MissingField,
        RejectReason::WrongType,
        RejectReason::BadTimestamp,
        RejectReason::OutOfRange,
        RejectReason::UnknownCurrency,
        RejectReason::FutureTimestamp,
        RejectReason::Unmappable,
        RejectReason::TooDeep,
        RejectReason::OverLimit,
        RejectReason::UnsupportedVersion,
        RejectReason::IncompletePayload,
        RejectReason::EncodedFields,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::TooLarge => "too_large",
            RejectReason::NotUtf8 => "not_utf8",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::NotObject => "not_object",
            RejectReason::MissingField => "missing_field",
            RejectReason::WrongType => "wrong_type",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::UnknownCurrency => "unknown_currency",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::Unmappable => "unmappable",
            RejectReason::TooDeep => "too_deep",
            RejectReason::OverLimit => "over_limit",
            RejectReason::UnsupportedVersion => "unsupported_version",
            RejectReason::IncompletePayload => "incomplete_payload",
            RejectReason::EncodedFields => "encoded_fields",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected message: the reason code and a human-readable detail that
/// names the field (never its value, which may be personal data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl std::error::Error for Rejection {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Connected,
    NoAnswer,
    Voicemail,
    Busy,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SurveyKind {
    Nps,
    Csat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeCategory {
    Selling,
    Admin,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendCategory {
    Sales,
    Marketing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaPeriod {
    Month,
    Quarter,
}

/// A validated canonical event. Strings borrow from the message bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub id: Cow<'a, str>,
    /// `occurred_at`, microseconds since the Unix epoch.
    pub at: i64,
    pub rep: Option<Cow<'a, str>>,
    pub team: Option<Cow<'a, str>>,
    pub body: Body<'a>,
}

/// The type-specific part of an event. Amounts are micro-units of the base
/// currency, durations micro-seconds, times microseconds since the epoch.
#[derive(Debug, Clone, PartialEq)]
pub enum Body<'a> {
    LeadCreated {
        lead: Cow<'a, str>,
    },
    LeadConverted {
        lead: Cow<'a, str>,
    },
    CallLogged {
        lead: Option<Cow<'a, str>>,
        duration: i64,
        outcome: CallOutcome,
    },
    EmailSent {
        lead: Option<Cow<'a, str>>,
    },
    MeetingScheduled {
        meeting: Cow<'a, str>,
        scheduled_for: i64,
        lead: Option<Cow<'a, str>>,
    },
    MeetingRescheduled {
        meeting: Cow<'a, str>,
        scheduled_for: i64,
    },
    MeetingHeld {
        meeting: Cow<'a, str>,
    },
    MeetingCanceled {
        meeting: Cow<'a, str>,
    },
    MeetingNoShow {
        meeting: Cow<'a, str>,
    },
    DealCreated {
        deal: Cow<'a, str>,
        amount: i64,
        stage: Option<Cow<'a, str>>,
    },
    DealStageChanged {
        deal: Cow<'a, str>,
        to_stage: Cow<'a, str>,
        amount: Option<i64>,
    },
    DealAmountChanged {
        deal: Cow<'a, str>,
        amount: i64,
    },
    DealWon {
        deal: Cow<'a, str>,
        amount: Option<i64>,
    },
    DealLost {
        deal: Cow<'a, str>,
    },
    SubscriptionStarted {
        account: Cow<'a, str>,
        mrr: i64,
    },
    SubscriptionChanged {
        account: Cow<'a, str>,
        mrr: i64,
    },
    /// `subscription.canceled` and `customer.churned`: the same effect.
    SubscriptionCanceled {
        account: Cow<'a, str>,
    },
    SurveyResponded {
        kind: SurveyKind,
        score: u8,
        account: Option<Cow<'a, str>>,
    },
    TimeLogged {
        category: TimeCategory,
        duration: i64,
    },
    SpendRecorded {
        amount: i64,
        category: SpendCategory,
    },
    QuotaSet {
        period: QuotaPeriod,
        amount: i64,
    },
}

impl Body<'_> {
    /// The lead this event names, if any.
    pub fn lead(&self) -> Option<&str> {
        match self {
            Body::LeadCreated { lead } | Body::LeadConverted { lead } => Some(lead),
            Body::CallLogged { lead, .. }
            | Body::EmailSent { lead }
            | Body::MeetingScheduled { lead, .. } => lead.as_deref(),
            _ => None,
        }
    }

    /// The meeting this event is about, for `meeting.*` events.
    pub fn meeting(&self) -> Option<&str> {
        match self {
            Body::MeetingScheduled { meeting, .. }
            | Body::MeetingRescheduled { meeting, .. }
            | Body::MeetingHeld { meeting }
            | Body::MeetingCanceled { meeting }
            | Body::MeetingNoShow { meeting } => Some(meeting),
            _ => None,
        }
    }

    /// The deal this event is about, for `deal.*` events.
    pub fn deal(&self) -> Option<&str> {
        match self {
            Body::DealCreated { deal, .. }
            | Body::DealStageChanged { deal, .. }
            | Body::DealAmountChanged { deal, .. }
            | Body::DealWon { deal, .. }
            | Body::DealLost { deal } => Some(deal),
            _ => None,
        }
    }
}

/// The result of parsing one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed<'a> {
    Event(Event<'a>),
    /// A valid envelope whose `type` is not one of events.md: ignored.
    Unknown {
        id: Cow<'a, str>,
        at: i64,
    },
}

/// What the parser needs from the configuration.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    pub max_message_bytes: usize,
    /// Deepest nesting of objects and arrays accepted.
    pub max_json_depth: usize,
    pub rates: Rates,
}

/// Parses and validates one message.
pub fn parse<'a>(bytes: &'a [u8], opts: &ParseOptions) -> Result<Parsed<'a>, Rejection> {
    parse_with(bytes, opts, |_| {})
}

/// As [`parse`], calling `envelope` with the id as soon as the envelope
/// (`id`, `type`, `occurred_at`) is valid, before the type-specific fields
/// are looked at, so that the caller can tell a redelivery even when the
/// rest of it is corrupted (a duplicate, not a rejection).
pub fn parse_with<'a>(
    bytes: &'a [u8],
    opts: &ParseOptions,
    envelope: impl FnOnce(&str),
) -> Result<Parsed<'a>, Rejection> {
    check_size(bytes, opts.max_message_bytes)?;
    let pre = json::Prescan::of(bytes);
    let text = if pre.ascii {
        // SAFETY: ASCII is UTF-8.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    } else {
        std::str::from_utf8(bytes).map_err(|e| {
            Rejection::new(
                RejectReason::NotUtf8,
                format!("invalid utf-8 at byte {}", e.valid_up_to()),
            )
        })?
    };
    let first = text.bytes().find(|b| !b.is_ascii_whitespace());
    if first != Some(b'{') {
        check_depth(bytes, opts.max_json_depth)?;
        return Err(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => Rejection::new(RejectReason::NotObject, "message is not a json object"),
            Err(e) => json_error(&e),
        });
    }
    let mut fields = json::Fields::default();
    json::scan(text, Some(&pre), opts.max_json_depth, &mut fields).map_err(|stop| match stop {
        json::Stop::Invalid(at) => invalid_json(text, at),
        json::Stop::TooDeep => too_deep(opts.max_json_depth),
    })?;
    let id = req_str(fields.take(Field::Id), "id", ID_LEN)?;
    let kind = match fields.take(Field::Type) {
        Tok::Absent | Tok::Null => return Err(missing("type")),
        Tok::Str { raw, escaped } => Tok::text(raw, escaped),
        _ => return Err(wrong_type("type", "a string")),
    };
    let at = timestamp(fields.get(Field::OccurredAt), "occurred_at")?;
    envelope(&id);
    let Some(kind) = Kind::of(&kind) else {
        return Ok(Parsed::Unknown { id, at });
    };
    validate(&mut fields, id, kind, at, opts)
}

fn json_error(e: &serde_json::Error) -> Rejection {
    Rejection::new(
        RejectReason::InvalidJson,
        format!("invalid json at line {} column {}", e.line(), e.column()),
    )
}

/// The rejection of text that stops being JSON at byte `at`, placed as
/// serde_json places its errors (line from 1, column of bytes from 1).
fn invalid_json(text: &str, at: usize) -> Rejection {
    let before = &text.as_bytes()[..at.min(text.len())];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let column = 1 + before.iter().rev().take_while(|&&b| b != b'\n').count();
    Rejection::new(
        RejectReason::InvalidJson,
        format!("invalid json at line {line} column {column}"),
    )
}

type R<T> = Result<T, Rejection>;

fn missing(field: &str) -> Rejection {
    Rejection::new(
        RejectReason::MissingField,
        format!("missing field `{field}`"),
    )
}

fn wrong_type(field: &str, expected: &str) -> Rejection {
    Rejection::new(
        RejectReason::WrongType,
        format!("field `{field}` must be {expected}"),
    )
}

fn out_of_range(field: &str, what: &str) -> Rejection {
    Rejection::new(RejectReason::OutOfRange, format!("field `{field}` {what}"))
}

/// An optional string; `null` counts as absent. Inlined: returned from a
/// call, the string went through a stack copy that the CPU could not
/// forward (two 8-byte stores read back as one 16-byte load), which cost
/// some 4% of a replay.
#[inline(always)]
fn opt_str<'a>(v: Tok<'a>, field: &str, max_len: usize) -> R<Option<Cow<'a, str>>> {
    let s = match v {
        Tok::Absent | Tok::Null => return Ok(None),
        Tok::Str { raw, escaped } => Tok::text(raw, escaped),
        _ => return Err(wrong_type(field, "a string")),
    };
    if s.is_empty() || s.len() > max_len {
        return Err(out_of_range(
            field,
            &format!("must be 1 to {max_len} bytes long"),
        ));
    }
    Ok(Some(s))
}

#[inline(always)]
fn req_str<'a>(v: Tok<'a>, field: &str, max_len: usize) -> R<Cow<'a, str>> {
    opt_str(v, field, max_len)?.ok_or_else(|| missing(field))
}

macro_rules! kinds {
    ($($variant:ident = $name:literal,)*) => {
        /// The event types of events.md; any other is ignored, not rejected.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Kind {
            $($variant,)*
        }

        impl Kind {
            fn of(name: &str) -> Option<Kind> {
                match name {
                    $($name => Some(Kind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    LeadCreated = "lead.created",
    LeadConverted = "lead.converted",
    CallLogged = "call.logged",
    EmailSent = "email.sent",
    MeetingScheduled = "meeting.scheduled",
    MeetingRescheduled = "meeting.rescheduled",
    MeetingHeld = "meeting.held",
    MeetingCanceled = "meeting.canceled",
    MeetingNoShow = "meeting.no_show",
    DealCreated = "deal.created",
    DealStageChanged = "deal.stage_changed",
    DealAmountChanged = "deal.amount_changed",
    DealWon = "deal.won",
    DealLost = "deal.lost",
    SubscriptionStarted = "subscription.started",
    SubscriptionChanged = "subscription.changed",
    SubscriptionCanceled = "subscription.canceled",
    CustomerChurned = "customer.churned",
    SurveyResponded = "survey.responded",
    TimeLogged = "time.logged",
    SpendRecorded = "spend.recorded",
    QuotaSet = "quota.set",
}

const ID_LEN: usize = 256;
const REP_LEN: usize = 128;

fn opt_num(v: Tok<'_>, field: &str) -> R<Option<f64>> {
    match v {
        Tok::Absent | Tok::Null => Ok(None),
        Tok::Int(i) => Ok(Some(i as f64)),
        Tok::Float(f) => Ok(Some(f)),
        _ => Err(wrong_type(field, "a number")),
    }
}

fn timestamp(v: Tok<'_>, field: &str) -> R<i64> {
    match v {
        Tok::Absent | Tok::Null => Err(missing(field)),
        Tok::Str { raw, escaped } => parse_timestamp(&Tok::text(raw, escaped)).ok_or_else(|| {
            Rejection::new(
                RejectReason::BadTimestamp,
                format!("field `{field}` is not an rfc 3339 timestamp with offset"),
            )
        }),
        _ => Err(wrong_type(field, "an rfc 3339 timestamp string")),
    }
}

/// Rejects a message larger than `max` bytes.
pub fn check_size(bytes: &[u8], max: usize) -> Result<(), Rejection> {
    if bytes.len() > max {
        return Err(Rejection::new(
            RejectReason::TooLarge,
            format!(
                "message of {} bytes exceeds the limit of {max} bytes",
                bytes.len()
            ),
        ));
    }
    Ok(())
}

/// Rejects JSON nested deeper than `max` (objects and arrays, outside
/// strings). Costs one counting pass for the usual flat message: only one
/// with more than `max` opening brackets is walked.
pub fn check_depth(bytes: &[u8], max: usize) -> Result<(), Rejection> {
    // `[` is 0x5B and `{` 0x7B: one compare per byte finds both, and the
    // count vectorizes.
    let opening = bytes.iter().filter(|&&b| b | 0x20 == b'{').count();
    if opening <= max {
        return Ok(());
    }
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(too_deep(max));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn too_deep(max: usize) -> Rejection {
    Rejection::new(
        RejectReason::TooDeep,
        format!("nested deeper than limits.max_json_depth ({max})"),
    )
}

/// RFC 3339 with an offset, to microseconds since the epoch.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    if let Some(t) = canonical_timestamp(s.as_bytes()) {
        return Some(t);
    }
    let dt = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    dt.timestamp_micros().into()
}

/// The common shape of a timestamp, read without chrono (which costs a
/// tenth of parsing a whole message): `YYYY-MM-DDTHH:MM:SS`, an optional
/// fraction of one to nine digits, then `Z` or `+HH:MM`/`-HH:MM`, every
/// field in range and the second below 60. Anything else is `None`, and
/// left to chrono, so this never accepts what chrono refuses nor reads a
/// value chrono would read differently (a property test holds the two
/// together).
fn canonical_timestamp(b: &[u8]) -> Option<i64> {
    let head: &[u8; 19] = b.get(..19)?.try_into().ok()?;
    if head[4] != b'-'
        || head[7] != b'-'
        || head[10] != b'T'
        || head[13] != b':'
        || head[16] != b':'
    {
        return None;
    }
    // Every digit position checked at once, without a branch per digit.
    let mut d = [0i64; 19];
    let mut bad = false;
    for i in [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18] {
        let x = head[i].wrapping_sub(b'0');
        bad |= x > 9;
        d[i] = i64::from(x);
    }
    if bad {
        return None;
    }
    let year = d[0] * 1000 + d[1] * 100 + d[2] * 10 + d[3];
    let (month, day) = (d[5] * 10 + d[6], d[8] * 10 + d[9]);
    let (hour, minute, second) = (d[11] * 10 + d[12], d[14] * 10 + d[15], d[17] * 10 + d[18]);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > month_days {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0;
    if let [b'.', frac @ ..] = rest {
        const SCALE: [i64; 6] = [100_000, 10_000, 1_000, 100, 10, 1];
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        for (c, scale) in frac.iter().zip(SCALE).take(digits) {
            micros += i64::from(c - b'0') * scale;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let [h1, h2, m1, m2] = [h1, h2, m1, m2].map(|c| i64::from(c.wrapping_sub(b'0')));
            if [h1, h2, m1, m2].iter().any(|&x| x > 9) {
                return None;
            }
            let (h, m) = (h1 * 10 + h2, m1 * 10 + m2);
            if h > 23 || m > 59 {
                return None;
            }
            let o = (h * 60 + m) * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    // Days since 1970-01-01 in the proleptic Gregorian calendar
    // (H. Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset;
    Some(seconds * 1_000_000 + micros)
}

/// Formats microseconds since the epoch as RFC 3339 UTC with microseconds.
pub fn format_timestamp(micros: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(dt) => dt.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => String::from("invalid"),
    }
}

/// Validates the type-specific fields of a message whose envelope is valid.
fn validate<'a>(
    f: &mut Fields<'a>,
    id: Cow<'a, str>,
    kind: Kind,
    at: i64,
    opts: &ParseOptions,
) -> R<Parsed<'a>> {
    let rep = opt_str(f.take(Field::RepId), "rep_id", REP_LEN)?;
    let team = opt_str(f.take(Field::TeamId), "team_id", REP_LEN)?;
    if !matches!(
        f.take(Field::Source),
        Tok::Absent | Tok::Null | Tok::Str { .. }
    ) {
        return Err(wrong_type("source", "a string"));
    }
    let need_rep = |rep: &Option<Cow<'a, str>>| {
        if rep.is_none() {
            Err(missing("rep_id"))
        } else {
            Ok(())
        }
    };
    // Money is converted once, here, into base-currency micro-units.
    let currency = opt_str(f.get(Field::Currency), "currency", 16)?;
    let rate = match &currency {
        None => 1.0,
        Some(c) => opts.rates.rate(c).ok_or_else(|| {
            Rejection::new(
                RejectReason::UnknownCurrency,
                "field `currency` has no configured exchange rate",
            )
        })?,
    };
    let money = |v: Tok<'_>, field: &str| -> R<Option<i64>> {
        match opt_num(v, field)? {
            None => Ok(None),
            Some(x) if !(0.0..=MAX_AMOUNT).contains(&x) => Err(out_of_range(
                field,
                &format!("must be between 0 and {MAX_AMOUNT}"),
            )),
            Some(x) => Ok(Some((x * rate * MICRO).round() as i64)),
        }
    };
    let duration = |v: Tok<'_>, positive: bool| -> R<Option<i64>> {
        match opt_num(v, "duration_seconds")? {
            None => Ok(None),
            Some(x) if !(0.0..=MAX_DURATION_SECONDS).contains(&x) || (positive && x == 0.0) => {
                Err(out_of_range(
                    "duration_seconds",
                    if positive {
                        "must be > 0 and at most one year"
                    } else {
                        "must be >= 0 and at most one year"
                    },
                ))
            }
            Some(x) => Ok(Some((x * MICRO).round() as i64)),
        }
    };
    let body = match kind {
        Kind::LeadCreated => Body::LeadCreated {
            lead: req_str(f.take(Field::LeadId), "lead_id", ID_LEN)?,
        },
        Kind::LeadConverted => {
            opt_str(f.take(Field::DealId), "deal_id", ID_LEN)?;
            Body::LeadConverted {
                lead: req_str(f.take(Field::LeadId), "lead_id", ID_LEN)?,
            }
        }
        Kind::CallLogged => {
            req_str(f.take(Field::CallId), "call_id", ID_LEN)?;
            need_rep(&rep)?;
            opt_str(f.take(Field::DealId), "deal_id", ID_LEN)?;
            let outcome = match opt_str(f.take(Field::Outcome), "outcome", 32)?.as_deref() {
                None | Some("other") => CallOutcome::Other,
                Some("connected") => CallOutcome::Connected,
                Some("no_answer") => CallOutcome::NoAnswer,
                Some("voicemail") => CallOutcome::Voicemail,
                Some("busy") => CallOutcome::Busy,
                Some(_) => return Err(out_of_range("outcome", "is not a known call outcome")),
            };
            Body::CallLogged {
                lead: opt_str(f.take(Field::LeadId), "lead_id", ID_LEN)?,
                duration: duration(f.get(Field::DurationSeconds), false)?.unwrap_or(0),
                outcome,
            }
        }
        Kind::EmailSent => {
            req_str(f.take(Field::EmailId), "email_id", ID_LEN)?;
            need_rep(&rep)?;
            opt_str(f.take(Field::DealId), "deal_id", ID_LEN)?;
            Body::EmailSent {
                lead: opt_str(f.take(Field::LeadId), "lead_id", ID_LEN)?,
            }
        }
        Kind::MeetingScheduled => {
            let meeting = req_str(f.take(Field::MeetingId), "meeting_id", ID_LEN)?;
            need_rep(&rep)?;
            opt_str(f.take(Field::DealId), "deal_id", ID_LEN)?;
            Body::MeetingScheduled {
                meeting,
                scheduled_for: timestamp(f.get(Field::ScheduledFor), "scheduled_for")?,
                lead: opt_str(f.take(Field::LeadId), "lead_id", ID_LEN)?,
            }
        }
        Kind::MeetingRescheduled => Body::MeetingRescheduled {
            meeting: req_str(f.take(Field::MeetingId), "meeting_id", ID_LEN)?,
            scheduled_for: timestamp(f.get(Field::ScheduledFor), "scheduled_for")?,
        },
        Kind::MeetingHeld => Body::MeetingHeld {
            meeting: req_str(f.take(Field::MeetingId), "meeting_id", ID_LEN)?,
        },
        Kind::MeetingCanceled => Body::MeetingCanceled {
            meeting: req_str(f.take(Field::MeetingId), "meeting_id", ID_LEN)?,
        },
        Kind::MeetingNoShow => Body::MeetingNoShow {
            meeting: req_str(f.take(Field::MeetingId), "meeting_id", ID_LEN)?,
        },
        Kind::DealCreated => {
            let deal = req_str(f.take(Field::DealId), "deal_id", ID_LEN)?;
            need_rep(&rep)?;
            Body::DealCreated {
                deal,
                amount: money(f.get(Field::Amount), "amount")?.unwrap_or(0),
                stage: opt_str(f.take(Field::Stage), "stage", ID_LEN)?,
            }
        }
        Kind::DealStageChanged => {
            let deal = req_str(f.take(Field::DealId), "deal_id", ID_LEN)?;
            let to_stage = req_str(f.take(Field::ToStage), "to_stage", ID_LEN)?;
            opt_str(f.take(Field::FromStage), "from_stage", ID_LEN)?;
            Body::DealStageChanged {
                deal,
                to_stage,
                amount: money(f.get(Field::Amount), "amount")?,
            }
        }
        Kind::DealAmountChanged => {
            let deal = req_str(f.take(Field::DealId), "deal_id", ID_LEN)?;
            Body::DealAmountChanged {
                deal,
                amount: money(f.get(Field::Amount), "amount")?.ok_or_else(|| missing("amount"))?,
            }
        }
        Kind::DealWon => Body::DealWon {
            deal: req_str(f.take(Field::DealId), "deal_id", ID_LEN)?,
            amount: money(f.get(Field::Amount), "amount")?,
        },
        Kind::DealLost => {
            let deal = req_str(f.take(Field::DealId), "deal_id", ID_LEN)?;
            opt_str(f.take(Field::Reason), "reason", 1024)?;
            Body::DealLost { deal }
        }
        Kind::SubscriptionStarted | Kind::SubscriptionChanged => {
            let account = req_str(f.take(Field::AccountId), "account_id", ID_LEN)?;
            let mrr = money(f.get(Field::Mrr), "mrr")?.ok_or_else(|| missing("mrr"))?;
            if kind == Kind::SubscriptionStarted {
                Body::SubscriptionStarted { account, mrr }
            } else {
                Body::SubscriptionChanged { account, mrr }
            }
        }
        Kind::SubscriptionCanceled | Kind::CustomerChurned => Body::SubscriptionCanceled {
            account: req_str(f.take(Field::AccountId), "account_id", ID_LEN)?,
        },
        Kind::SurveyResponded => {
            let kind = match opt_str(f.take(Field::Kind), "kind", 16)?.as_deref() {
                None => return Err(missing("kind")),
                Some("nps") => SurveyKind::Nps,
                Some("csat") => SurveyKind::Csat,
                Some(_) => return Err(out_of_range("kind", "must be nps or csat")),
            };
            let score = match f.take(Field::Score) {
                Tok::Absent | Tok::Null => return Err(missing("score")),
                Tok::Int(i) => i,
                _ => return Err(wrong_type("score", "an integer")),
            };
            let range = match kind {
                SurveyKind::Nps => 0..=10,
                SurveyKind::Csat => 1..=5,
            };
            if !range.contains(&score) {
                return Err(out_of_range("score", "is outside the scale of its kind"));
            }
            Body::SurveyResponded {
                kind,
                score: score as u8,
                account: opt_str(f.take(Field::AccountId), "account_id", ID_LEN)?,
            }
        }
        Kind::TimeLogged => {
            need_rep(&rep)?;
            let category = match opt_str(f.take(Field::Category), "category", 16)?.as_deref() {
                None => return Err(missing("category")),
                Some("selling") => TimeCategory::Selling,
                Some("admin") => TimeCategory::Admin,
                Some("other") => TimeCategory::Other,
                Some(_) => return Err(out_of_range("category", "must be selling, admin or other")),
            };
            Body::TimeLogged {
                category,
                duration: duration(f.get(Field::DurationSeconds), true)?
                    .ok_or_else(|| missing("duration_seconds"))?,
            }
        }
        Kind::SpendRecorded => {
            let category = match opt_str(f.take(Field::Category), "category", 16)?.as_deref() {
                None => return Err(missing("category")),
                Some("sales") => SpendCategory::Sales,
                Some("marketing") => SpendCategory::Marketing,
                Some(_) => return Err(out_of_range("category", "must be sales or marketing")),
            };
            Body::SpendRecorded {
                amount: money(f.get(Field::Amount), "amount")?.ok_or_else(|| missing("amount"))?,
                category,
            }
        }
        Kind::QuotaSet => {
            need_rep(&rep)?;
            let period = match opt_str(f.take(Field::Period), "period", 16)?.as_deref() {
                None => return Err(missing("period")),
                Some("month") => QuotaPeriod::Month,
                Some("quarter") => QuotaPeriod::Quarter,
                Some(_) => return Err(out_of_range("period", "must be month or quarter")),
            };
            Body::QuotaSet {
                period,
                amount: money(f.get(Field::Amount), "amount")?.ok_or_else(|| missing("amount"))?,
            }
        }
    };
    Ok(Parsed::Event(Event {
        id,
        at,
        rep,
        team,
        body,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn by_chrono(s: &str) -> Option<i64> {
        let dt = chrono::DateTime::parse_from_rfc3339(s).ok()?;
        Some(dt.timestamp_micros())
    }

    /// Timestamps near the canonical shape: fields one past their ranges,
    /// leap days, leap seconds, long fractions, other separators and
    /// offsets, lowercase letters.
    fn near_canonical() -> impl Strategy<Value = String> {
        let frac = prop_oneof![Just(String::new()), Just(".".to_string()), "\\.[0-9]{1,12}",];
        let offset = prop_oneof![
            Just("Z".to_string()),
            Just("z".to_string()),
            Just(String::new()),
            (prop::sample::select(vec!['+', '-']), 0u32..26, 0u32..62)
                .prop_map(|(s, h, m)| format!("{s}{h:02}:{m:02}")),
            Just("+0100".to_string()),
        ];
        (
            prop_oneof![
                0u32..3,
                1899u32..1901,
                1969u32..1971,
                1999u32..2101,
                9998u32..10000
            ],
            0u32..14,
            0u32..33,
            prop::sample::select(vec!['T', 't', ' ', '_']),
            (0u32..25, 0u32..61, 0u32..62),
            frac,
            offset,
        )
            .prop_map(|(y, mo, d, sep, (h, mi, s), frac, off)| {
                format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{off}")
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn timestamps_read_as_chrono_reads_them(s in near_canonical()) {
            prop_assert_eq!(parse_timestamp(&s), by_chrono(&s), "{}", s);
        }

        #[test]
        fn any_text_reads_as_chrono_reads_it(s in "[0-9T:.Z+-]{18,32}") {
            prop_assert_eq!(parse_timestamp(&s), by_chrono(&s), "{}", s);
        }
    }

    #[test]
    fn the_canonical_shape_is_read_without_chrono() {
        for (s, expected) in [
            ("1970-01-01T00:00:00Z", 0),
            ("1969-12-31T23:59:59.999999Z", -1),
            ("2024-02-29T12:00:00.5+01:30", 1_709_202_600_500_000),
            ("2000-03-01T00:00:00.123456789-00:00", 951_868_800_123_456),
            ("0001-01-01T00:00:00Z", -62_135_596_800_000_000),
            ("9999-12-31T23:59:59Z", 253_402_300_799_000_000),
        ] {
            assert_eq!(canonical_timestamp(s.as_bytes()), Some(expected), "{s}");
            assert_eq!(by_chrono(s), Some(expected), "{s}");
        }
        for s in [
            "2023-02-29T00:00:00Z",
            "2026-01-01T00:00:60Z",
            "2026-01-01t00:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00.1234567890Z",
            "2026-01-01T00:00:00+24:00",
        ] {
            assert_eq!(canonical_timestamp(s.as_bytes()), None, "{s}");
        }
    }

    fn opts() -> ParseOptions {
        ParseOptions {
            max_message_bytes: 1024,
            max_json_depth: 32,
            rates: Rates::default_table(),
        }
    }

    fn reason(msg: &str) -> RejectReason {
        parse(msg.as_bytes(), &opts()).unwrap_err().reason
    }

    const CALL: &str = r#"{"id":"e1","type":"call.logged","occurred_at":"2026-03-08T10:00:00+01:00","call_id":"c1","rep_id":"r1","duration_seconds":12.5,"outcome":"connected","extra":{"x":[1,2]}}"#;

    #[test]
    fn parses_a_call_with_offset_and_unknown_fields() {
        let Parsed::Event(e) = parse(CALL.as_bytes(), &opts()).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(e.id, "e1");
        assert_eq!(e.at, parse_timestamp("2026-03-08T09:00:00Z").unwrap());
        assert_eq!(e.rep.as_deref(), Some("r1"));
        assert_eq!(
            e.body,
            Body::CallLogged {
                lead: None,
                duration: 12_500_000,
                outcome: CallOutcome::Connected
            }
        );
    }

    #[test]
    fn unknown_type_with_valid_envelope_is_unknown() {
        let p = parse(
            br#"{"id":"x","type":"note.added","occurred_at":"2026-03-08T10:00:00Z"}"#,
            &opts(),
        )
        .unwrap();
        assert!(matches!(p, Parsed::Unknown { .. }));
    }

    #[test]
    fn unknown_type_is_ignored_whatever_its_other_fields() {
        let p = parse(
            br#"{"id":"x","type":"note.added","occurred_at":"2026-03-08T10:00:00Z","rep_id":7,"currency":"XXX"}"#,
            &opts(),
        )
        .unwrap();
        assert!(matches!(p, Parsed::Unknown { .. }));
    }

    #[test]
    fn converts_currency_to_base_micro_units() {
        let msg = r#"{"id":"d","type":"deal.created","occurred_at":"2026-03-08T10:00:00Z","deal_id":"d1","rep_id":"r","amount":100,"currency":"EUR"}"#;
        let Parsed::Event(e) = parse(msg.as_bytes(), &opts()).unwrap() else {
            panic!()
        };
        assert!(matches!(
            e.body,
            Body::DealCreated {
                amount: 108_000_000,
                ..
            }
        ));
    }

    #[test]
    fn every_reject_reason() {
        let big = format!(r#"{{"id":"{}"}}"#, "x".repeat(2000));
        assert_eq!(reason(&big), RejectReason::TooLarge);
        assert_eq!(
            parse(b"\xff\xfe garbage", &opts()).unwrap_err().reason,
            RejectReason::NotUtf8
        );
        assert_eq!(reason("{not json"), RejectReason::InvalidJson);
        assert_eq!(reason(r#"{"id":"a","id":"b"}"#), RejectReason::InvalidJson);
        assert_eq!(reason(r#"[{"id":"a"}]"#), RejectReason::NotObject);
        assert_eq!(reason("42"), RejectReason::NotObject);
        assert_eq!(
            reason(r#"{"id":"e","type":"call.logged","call_id":"c","rep_id":"r"}"#),
            RejectReason::MissingField
        );
        assert_eq!(
            reason(
                r#"{"id":"e","type":"call.logged","occurred_at":"2026-03-08T10:00:00Z","call_id":"c","rep_id":null}"#
            ),
            RejectReason::MissingField
        );
        assert_eq!(
            reason(
                r#"{"id":"e","type":"call.logged","occurred_at":"2026-03-08T10:00:00Z","call_id":"c","rep_id":7}"#
            ),
            RejectReason::WrongType
        );
        assert_eq!(
            reason(
                r#"{"id":"e","type":"lead.created","occurred_at":"2026-03-08 10:00","lead_id":"l"}"#
            ),
            RejectReason::BadTimestamp
        );
        assert_eq!(
            reason(
                r#"{"id":"e","type":"lead.created","occurred_at":"2026-03-08T10:00:00","lead_id":"l"}"#
            ),
            RejectReason::BadTimestamp
        );
        assert_eq!(
            reason(
                r#"{"id":"e","type":"deal.created","occurred_at":"2026-03-08T10:00:00Z","deal_id":"d","rep_id":"r","amount":-5}"#
            ),
            RejectReason::OutOfRange
        );
        assert_eq!(
            reason(
                r#"{"id":"e","type":"survey.responded","occurred_at":"2026-03-08T10:00:00Z","kind":"csat","score":0}"#
            ),
            RejectReason::OutOfRange
        );
        assert_eq!(
            reason(
                r#"{"id":"","type":"lead.created","occurred_at":"2026-03-08T10:00:00Z","lead_id":"l"}"#
            ),
            RejectReason::OutOfRange
        );
        assert_eq!(
            reason(
                r#"{"id":"e","type":"deal.won","occurred_at":"2026-03-08T10:00:00Z","deal_id":"d","amount":10,"currency":"XXX"}"#
            ),
            RejectReason::UnknownCurrency
        );
    }

    #[test]
    fn score_must_be_an_integer_token() {
        assert_eq!(
            reason(
                r#"{"id":"e","type":"survey.responded","occurred_at":"2026-03-08T10:00:00Z","kind":"nps","score":9.5}"#
            ),
            RejectReason::WrongType
        );
    }

    #[test]
    fn time_logged_needs_a_positive_duration() {
        assert_eq!(
            reason(
                r#"{"id":"e","type":"time.logged","occurred_at":"2026-03-08T10:00:00Z","rep_id":"r","category":"selling","duration_seconds":0}"#
            ),
            RejectReason::OutOfRange
        );
    }

    #[test]
    fn escaped_strings_are_owned_not_lost() {
        let msg = r#"{"id":"e\u0031","type":"lead.created","occurred_at":"2026-03-08T10:00:00Z","lead_id":"l"}"#;
        let Parsed::Event(e) = parse(msg.as_bytes(), &opts()).unwrap() else {
            panic!()
        };
        assert_eq!(e.id, "e1");
    }

    #[test]
    fn timestamps_round_trip_in_utc() {
        let t = parse_timestamp("2026-04-26T23:52:57.059+00:00").unwrap();
        assert_eq!(format_timestamp(t), "2026-04-26T23:52:57.059000Z");
    }
}

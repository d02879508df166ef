//! The pure message path: bytes in, one [`Outcome`] out, state updated.
//!
//! A [`Processor`] owns one partition's [`Engine`] and counts outcomes. It
//! parses and validates the message, checks the clock skew on the wall
//! clock, then offers the event to the engine. No I/O, no clock reads: the
//! caller passes the wall time in.
//!
//! On a topic with a CRM format, the processor's [`Adapter`] first maps the
//! native payload to canonical events; each then takes the path above and
//! has its own outcome. A payload the adapter rejects is one rejection; one
//! that maps to no event is one ignore.

use crate::config::{ClockMode, EngineConfig};
use crate::crm::{Adapted, Adapter, Format};
use crate::engine::{Engine, Skip};
use crate::event::{self, Parsed, RejectReason, Rejection};

/// Why a valid message was dropped without changing any KPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IgnoreReason {
    /// An unknown event type, or a CRM object or subscription kpistream
    /// does not track.
    UnknownType,
    ClosedDeal,
    /// A CRM payload that changes no KPI (a deletion, an untracked field).
    NoKpiChange,
}

impl IgnoreReason {
    pub const ALL: [IgnoreReason; 3] = [
        IgnoreReason::UnknownType,
        IgnoreReason::ClosedDeal,
        IgnoreReason::NoKpiChange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IgnoreReason::UnknownType => "unknown_type",
            IgnoreReason::ClosedDeal => "closed_deal",
            IgnoreReason::NoKpiChange => "no_kpi_change",
        }
    }
}

/// What became of one message: exactly one of these, always.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    Ignored(IgnoreReason),
    Rejected(Rejection),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored(_) => "ignored",
            Outcome::Rejected(_) => "rejected",
        }
    }
}

/// Outcome counts, with rejections and ignores by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub applied: u64,
    pub duplicate: u64,
    pub ignored: [u64; IgnoreReason::ALL.len()],
    pub rejected: [u64; RejectReason::ALL.len()],
}

impl Counts {
    pub fn record(&mut self, o: &Outcome) {
        match o {
            Outcome::Applied => self.applied += 1,
            Outcome::Duplicate => self.duplicate += 1,
            Outcome::Ignored(r) => self.ignored[*r as usize] += 1,
            Outcome::Rejected(r) => self.rejected[r.reason as usize] += 1,
        }
    }

    pub fn ignored_total(&self) -> u64 {
        self.ignored.iter().sum()
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    pub fn total(&self) -> u64 {
        self.applied + self.duplicate + self.ignored_total() + self.rejected_total()
    }

    pub fn merge(&mut self, other: &Counts) {
        self.applied += other.applied;
        self.duplicate += other.duplicate;
        for (a, b) in self.ignored.iter_mut().zip(other.ignored) {
            *a += b;
        }
        for (a, b) in self.rejected.iter_mut().zip(other.rejected) {
            *a += b;
        }
    }

    /// The `outcomes` object of the replay document.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "applied": self.applied,
            "duplicate": self.duplicate,
            "ignored": self.ignored_total(),
            "rejected": self.rejected_total(),
        })
    }
}

pub struct Processor {
    pub engine: Engine,
    pub counts: Counts,
    /// Maps native payloads; `None` on a canonical topic.
    adapter: Option<Adapter>,
}

impl Processor {
    pub fn new(cfg: EngineConfig) -> Self {
        Processor {
            engine: Engine::new(cfg),
            counts: Counts::default(),
            adapter: None,
        }
    }

    /// A processor restored from its engine and counts (canonical until
    /// [`Processor::with_format`]).
    pub fn from_parts(engine: Engine, counts: Counts) -> Self {
        Processor {
            engine,
            counts,
            adapter: None,
        }
    }

    /// The processor of a topic in `format`, with the CRM maps of its own
    /// configuration.
    pub fn with_format(mut self, format: Format) -> Self {
        self.adapter = (format != Format::Canonical).then(|| Adapter {
            format,
            config: self.engine.config().crm.clone(),
        });
        self
    }

    /// Processes one message of the processor's format, calling `each` with
    /// every outcome: one for a canonical message, one per mapped event (or
    /// one rejection or ignore) for a native payload.
    pub fn process_each(&mut self, bytes: &[u8], wall_now: i64, mut each: impl FnMut(&Outcome)) {
        let Some(adapter) = &self.adapter else {
            let outcome = self.process(bytes, wall_now);
            each(&outcome);
            return;
        };
        let outcome = match adapter.adapt(bytes, &self.engine.config().parse, &self.engine) {
            Err(r) => Outcome::Rejected(r),
            Ok(Adapted::UnknownKind) => Outcome::Ignored(IgnoreReason::UnknownType),
            Ok(Adapted::NothingToDo) => Outcome::Ignored(IgnoreReason::NoKpiChange),
            Ok(Adapted::Events(events)) => {
                for ev in events {
                    let bytes = serde_json::to_vec(&ev).expect("a JSON value serializes");
                    let outcome = self.process(&bytes, wall_now);
                    each(&outcome);
                }
                return;
            }
        };
        self.counts.record(&outcome);
        each(&outcome);
    }

    /// Processes one message. `wall_now` (microseconds since the epoch) is
    /// only read on the wall clock.
    pub fn process(&mut self, bytes: &[u8], wall_now: i64) -> Outcome {
        let outcome = self.classify(bytes, wall_now);
        self.counts.record(&outcome);
        outcome
    }

    fn classify(&mut self, bytes: &[u8], wall_now: i64) -> Outcome {
        let cfg = self.engine.config();
        let wall = cfg.clock == ClockMode::Wall;
        let skew = cfg.max_clock_skew;
        // A message with a valid envelope and a known id is a duplicate,
        // whatever the rest of it holds.
        let mut key = None;
        let parsed = event::parse_with(bytes, &cfg.parse, |id| {
            key = Some(crate::engine::id_key(id));
        });
        if key.is_some_and(|k| self.engine.is_duplicate_key(k)) {
            return Outcome::Duplicate;
        }
        let mut ev = match parsed {
            Err(r) => return Outcome::Rejected(r),
            Ok(Parsed::Unknown { .. }) => return Outcome::Ignored(IgnoreReason::UnknownType),
            Ok(Parsed::Event(ev)) => ev,
        };
        let id = key.unwrap_or_else(|| crate::engine::id_key(&ev.id));
        if let (Some(p), Some(rep)) = (&cfg.pseudonyms, &mut ev.rep) {
            *rep = std::borrow::Cow::Owned(p.rep(rep));
        }
        if wall {
            if ev.at > wall_now.saturating_add(skew) {
                return Outcome::Rejected(Rejection::new(
                    RejectReason::FutureTimestamp,
                    "occurred_at is further ahead of the wall clock than limits.max_clock_skew",
                ));
            }
            self.engine.set_now(wall_now);
        }
        match self.engine.offer_unseen(&ev, id) {
            Ok(()) => Outcome::Applied,
            Err(Skip::Duplicate) => Outcome::Duplicate,
            Err(Skip::ClosedDeal) => Outcome::Ignored(IgnoreReason::ClosedDeal),
            Err(Skip::OverLimit) => Outcome::Rejected(Rejection::new(
                RejectReason::OverLimit,
                "a new lead, deal, meeting or account past limits.max_entities",
            )),
        }
    }
}

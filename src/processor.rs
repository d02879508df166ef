//! The pure message path: bytes in, one [`Outcome`] out, state updated.
//!
//! A [`Processor`] owns one partition's [`Engine`] and counts outcomes. It
//! parses and validates the message, checks the clock skew on the wall
//! clock, then offers the event to the engine. No I/O, no clock reads: the
//! caller passes the wall time in.
//!
//! On a topic with a CRM format, the processor's [`Adapter`] first maps the
//! native payload to its elements (a HubSpot batch's notifications, the
//! records of a change naming several) and their canonical events; each
//! event then takes the path above and has its own outcome. An element the
//! adapter rejects is one rejection, one that maps to no event one ignore;
//! a payload that is not even a document of its format is one rejection.

use crate::config::{ClockMode, EngineConfig};
use crate::crm::{Adapted, Adapter, Format};
use crate::engine::{Ahead, Engine, Key, Keys, Pass, Skip};
use crate::event::{self, Parsed, RejectReason, Rejection};

/// Messages parsed ahead of their application by [`Processor::process_run`]:
/// enough for their lookups to overlap, few enough that what they fetched
/// is still in cache when each is applied.
pub const RUN: usize = 256;

/// Why a valid message was dropped without changing any KPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IgnoreReason {
    /// An unknown event type, or a CRM object or subscription kpistream
    /// does not track.
    UnknownType,
    ClosedDeal,
    /// A CRM payload that changes no KPI (a deletion, an untracked field).
    NoKpiChange,
    /// An element of a CRM payload whose content went into another
    /// element's events (HubSpot's property notices of a creation).
    Merged,
}

impl IgnoreReason {
    pub const ALL: [IgnoreReason; 4] = [
        IgnoreReason::UnknownType,
        IgnoreReason::ClosedDeal,
        IgnoreReason::NoKpiChange,
        IgnoreReason::Merged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IgnoreReason::UnknownType => "unknown_type",
            IgnoreReason::ClosedDeal => "closed_deal",
            IgnoreReason::NoKpiChange => "no_kpi_change",
            IgnoreReason::Merged => "merged",
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

/// Outcome counts, with rejections and ignores by reason. Snapshots store
/// the per-reason counts as sequences, so that a build with more reasons
/// reads an older snapshot (the reasons missing there count 0).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub applied: u64,
    pub duplicate: u64,
    #[serde(with = "by_reason")]
    pub ignored: [u64; IgnoreReason::ALL.len()],
    #[serde(with = "by_reason")]
    pub rejected: [u64; RejectReason::ALL.len()],
}

/// Counts by reason as a length-prefixed sequence.
mod by_reason {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(v: &[u64; N], s: S) -> Result<S::Ok, S::Error> {
        v.as_slice().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u64; N], D::Error> {
        let v = Vec::<u64>::deserialize(d)?;
        if v.len() > N {
            return Err(serde::de::Error::invalid_length(
                v.len(),
                &"at most this build's reasons",
            ));
        }
        let mut out = [0; N];
        out[..v.len()].copy_from_slice(&v);
        Ok(out)
    }
}

/// Counts as snapshot format 4 stored them: fixed arrays of the reasons
/// of that build (3 ignore and 13 reject reasons).
#[derive(serde::Deserialize)]
pub(crate) struct CountsV4 {
    applied: u64,
    duplicate: u64,
    ignored: [u64; 3],
    rejected: [u64; 13],
}

impl From<CountsV4> for Counts {
    fn from(c: CountsV4) -> Self {
        let mut out = Counts {
            applied: c.applied,
            duplicate: c.duplicate,
            ..Counts::default()
        };
        out.ignored[..3].copy_from_slice(&c.ignored);
        out.rejected[..13].copy_from_slice(&c.rejected);
        out
    }
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

    /// Whether the processor reads canonical messages (no CRM adapter).
    pub fn is_canonical(&self) -> bool {
        self.adapter.is_none()
    }

    /// Processes one message of the processor's format, calling `each` with
    /// every outcome: one for a canonical message, one per mapped event (or
    /// one rejection or ignore) of each element of a native payload.
    pub fn process_each(&mut self, bytes: &[u8], wall_now: i64, mut each: impl FnMut(&Outcome)) {
        self.process_elements(bytes, wall_now, |o, _| each(o));
    }

    /// As [`Processor::process_each`], with each outcome's element: its
    /// index in a native payload of several (a HubSpot batch, a change of
    /// several records), `None` for a canonical message or a payload that
    /// is one element.
    pub fn process_elements(
        &mut self,
        bytes: &[u8],
        wall_now: i64,
        mut each: impl FnMut(&Outcome, Option<usize>),
    ) {
        self.process_traced(bytes, wall_now, |o, element, _| each(o, element));
    }

    /// As [`Processor::process_elements`], with the canonical event each
    /// outcome is of (`None` for an element that became no event, and on a
    /// canonical topic): what `kpistream adapt` prints.
    pub fn process_traced(
        &mut self,
        bytes: &[u8],
        wall_now: i64,
        mut each: impl FnMut(&Outcome, Option<usize>, Option<&serde_json::Value>),
    ) {
        let Some(adapter) = &self.adapter else {
            let outcome = self.process(bytes, wall_now);
            each(&outcome, None, None);
            return;
        };
        let elements = match adapter.adapt(bytes, &self.engine.config().parse, &self.engine) {
            Ok(elements) => elements,
            Err(r) => {
                let outcome = Outcome::Rejected(r);
                self.counts.record(&outcome);
                each(&outcome, None, None);
                return;
            }
        };
        for element in elements {
            let outcome = match element.result {
                Err(r) => Outcome::Rejected(r),
                Ok(Adapted::UnknownKind) => Outcome::Ignored(IgnoreReason::UnknownType),
                Ok(Adapted::NothingToDo) => Outcome::Ignored(IgnoreReason::NoKpiChange),
                Ok(Adapted::Merged) => Outcome::Ignored(IgnoreReason::Merged),
                Ok(Adapted::Events(events)) => {
                    for ev in events {
                        let bytes = serde_json::to_vec(&ev).expect("a JSON value serializes");
                        let outcome = self.process(&bytes, wall_now);
                        each(&outcome, element.index, Some(&ev));
                    }
                    continue;
                }
            };
            self.counts.record(&outcome);
            each(&outcome, element.index, None);
        }
    }

    /// Processes one message. `wall_now` (microseconds since the epoch) is
    /// only read on the wall clock.
    pub fn process(&mut self, bytes: &[u8], wall_now: i64) -> Outcome {
        let outcome = self.classify(bytes, wall_now);
        self.counts.record(&outcome);
        outcome
    }

    /// Processes messages in order with exactly the outcomes and the state
    /// of [`Processor::process_each`] on each. On a canonical topic it
    /// parses up to [`RUN`] of them first, then reads what each will look
    /// up in the state (its id among the applied ones, its lead, deal or
    /// meeting, the meetings whose timers the run will make due) in two
    /// tight loops, so that those memory fetches overlap instead of
    /// following one another, and then applies them one by one. Parsing
    /// reads no state and the reading loops change none, so the order of
    /// effects is that of one message at a time.
    pub fn process_run(&mut self, msgs: &[&[u8]], wall_now: i64, mut each: impl FnMut(&Outcome)) {
        if self.adapter.is_some() {
            for m in msgs {
                self.process_each(m, wall_now, &mut each);
            }
            return;
        }
        let mut parsed = Vec::with_capacity(RUN.min(msgs.len()));
        let mut ahead = Vec::with_capacity(RUN.min(msgs.len()));
        for run in msgs.chunks(RUN) {
            parsed.clear();
            parsed.extend(run.iter().map(|m| self.parse(m)));
            ahead.clear();
            ahead.extend(parsed.iter().map(|(id, p)| Self::ahead(*id, p)));
            // The meetings whose timers the run's event times will make due.
            let until = parsed
                .iter()
                .filter_map(|(_, p)| match p {
                    Ok(Parsed::Event(ev)) => Some(ev.at),
                    _ => None,
                })
                .max();
            // Two passes: the second reads the tags the first fetched.
            for pass in [Pass::Tags, Pass::Entries] {
                for a in &ahead {
                    self.engine.warm(a, pass);
                }
                if let Some(t) = until {
                    self.engine.warm_timers(t, pass);
                }
            }
            for ((_, p), a) in parsed.iter_mut().zip(&ahead) {
                let outcome = self.settle(a, p, wall_now);
                self.counts.record(&outcome);
                each(&outcome);
            }
        }
    }

    fn parse<'m>(&self, bytes: &'m [u8]) -> (Option<Key>, Result<Parsed<'m>, Rejection>) {
        let mut key = None;
        let parsed = event::parse_with(bytes, &self.engine.config().parse, |id| {
            key = Some(crate::engine::id_key(id));
        });
        (key, parsed)
    }

    /// The keys of a parsed message whose envelope id's key is `id`.
    fn ahead(id: Option<Key>, parsed: &Result<Parsed<'_>, Rejection>) -> Ahead {
        Ahead {
            id,
            keys: match parsed {
                Ok(Parsed::Event(ev)) => Keys::of(ev),
                _ => Keys::default(),
            },
        }
    }

    fn classify(&mut self, bytes: &[u8], wall_now: i64) -> Outcome {
        let (id, mut parsed) = self.parse(bytes);
        let ahead = Self::ahead(id, &parsed);
        self.settle(&ahead, &mut parsed, wall_now)
    }

    /// The outcome of a parsed message whose keys are `ahead`. Takes it by
    /// reference, so that a run's events (144 bytes each) are not copied
    /// once more on their way to the engine.
    fn settle(
        &mut self,
        ahead: &Ahead,
        parsed: &mut Result<Parsed<'_>, Rejection>,
        wall_now: i64,
    ) -> Outcome {
        // A message with a valid envelope and a known id is a duplicate,
        // whatever the rest of it holds.
        if ahead.id.is_some_and(|k| self.engine.is_duplicate_key(k)) {
            return Outcome::Duplicate;
        }
        let ev = match parsed {
            Err(r) => {
                return Outcome::Rejected(Rejection {
                    reason: r.reason,
                    detail: std::mem::take(&mut r.detail),
                })
            }
            Ok(Parsed::Unknown { .. }) => return Outcome::Ignored(IgnoreReason::UnknownType),
            Ok(Parsed::Event(ev)) => ev,
        };
        let id = ahead.id.unwrap_or_else(|| crate::engine::id_key(&ev.id));
        let cfg = self.engine.config();
        let wall = cfg.clock == ClockMode::Wall;
        let skew = cfg.max_clock_skew;
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
        match self.engine.offer_unseen(ev, id, &ahead.keys) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kpi::{self, Filter, Layout};
    use crate::sim::{SimConfig, Simulator};

    /// `n` simulated messages (with faults) of seed `seed`, and the engine
    /// configuration of their teams on the event clock.
    fn simulated(seed: u64, n: usize) -> (EngineConfig, Vec<Vec<u8>>) {
        let mut sim = Simulator::new(SimConfig {
            seed,
            events_per_second: 0.05,
            ..SimConfig::default()
        });
        let cfg = EngineConfig {
            teams: sim.teams(),
            ..EngineConfig::on_event_clock()
        };
        let msgs = (0..n).map(|_| sim.next_message().payload).collect();
        (cfg, msgs)
    }

    /// Runs hold redeliveries of messages in the same run and in earlier
    /// ones; the outcomes, counts and KPIs are those of one by one.
    #[test]
    fn a_run_is_processed_exactly_as_one_message_at_a_time() {
        let (cfg, mut msgs) = simulated(3, 20_000);
        // A redelivery inside the run that applies the original.
        msgs.insert(101, msgs[100].clone());
        let lines: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();

        let mut one = Processor::new(cfg.clone());
        let singly: Vec<Outcome> = lines.iter().map(|l| one.process(l, 0)).collect();
        let mut run = Processor::new(cfg.clone());
        let mut batched = Vec::new();
        run.process_run(&lines, 0, |o| batched.push(o.clone()));

        assert_eq!(batched, singly);
        assert_eq!(singly[101], Outcome::Duplicate);
        assert!(run.counts.duplicate > 1 && run.counts.rejected_total() > 0);
        assert_eq!(run.counts, one.counts);
        let layout = Layout::new(&cfg);
        let doc = |p: &mut Processor| kpi::document(&layout, &p.engine.view(), &Filter::default());
        assert_eq!(doc(&mut run), doc(&mut one));
    }

    /// An engine offered events without their keys hashes the ids itself,
    /// to the same state as with them.
    #[test]
    fn keys_not_hashed_ahead_are_hashed_on_application() {
        let (cfg, msgs) = simulated(5, 5_000);
        let mut ahead = Engine::new(cfg.clone());
        let mut late = Engine::new(cfg.clone());
        let mut applied = 0;
        for m in &msgs {
            let Ok(Parsed::Event(ev)) = event::parse(m, &cfg.parse) else {
                continue;
            };
            let id = crate::engine::id_key(&ev.id);
            if ahead.is_duplicate_key(id) {
                assert!(late.is_duplicate_key(id));
                continue;
            }
            let a = ahead.offer_unseen(&ev, id, &Keys::of(&ev));
            assert_eq!(late.offer_unseen(&ev, id, &Keys::default()), a);
            applied += usize::from(a.is_ok());
        }
        assert!(applied > 4_000, "{applied}");
        let layout = Layout::new(&cfg);
        let doc = |e: &mut Engine| kpi::document(&layout, &e.view(), &Filter::default());
        assert_eq!(doc(&mut late), doc(&mut ahead));
    }
}

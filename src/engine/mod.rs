//! The KPI engine: entity state, windowed parts and gauges for one partition.
//!
//! [`Engine::offer`] applies one validated event in arrival order; it is pure
//! and synchronous, and its only notion of time is the clock T it is given
//! ([`Engine::set_now`]) or, on the event clock, the largest `occurred_at` it
//! has applied. [`Engine::view`] copies the state needed to render KPIs.

mod ids;
pub mod parts;
mod timers;
pub mod window;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

use crate::config::{EngineConfig, SECOND};
use crate::event::{Body, CallOutcome, Event, QuotaPeriod, SurveyKind, TimeCategory};
pub use ids::Pass;
use ids::{IdMap, IdSet};
use parts::*;
use timers::Timers;
use window::{Clock, Series, WindowPlan, DAWN};

type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A map keyed by id hashes: a [`Key`] is already a hash (xxh3), so it is
/// its own hash, not hashed once more on every lookup.
type KeyMap<V> = std::collections::HashMap<Key, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// Hashes a [`Key`] to its words' exclusive or (see [`KeyMap`]).
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, _: &[u8]) {
        unreachable!("a Key hashes as two u64s")
    }

    fn write_u64(&mut self, x: u64) {
        self.0 ^= x;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The rep and team of contributions that name neither.
pub const UNASSIGNED: &str = "unassigned";

/// Why a valid event was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    /// Its id was applied within the dedup horizon.
    Duplicate,
    /// It is about a deal that is already won or lost.
    ClosedDeal,
    /// It would add a lead, deal, meeting or account while the partition
    /// holds `limits.max_entities` of them.
    OverLimit,
}

/// Where reps and teams past `limits.max_reps` / `limits.max_teams` go.
pub const OTHER: &str = "other";

const REP: u8 = 1;
const TEAM: u8 = 2;

/// Interned rep and team names, each marked as a rep, a team or both once
/// admitted as one (against `limits.max_reps` / `limits.max_teams`).
#[derive(Debug, Clone, Default)]
struct Names {
    /// The ids of recently looked up names, by their bytes.
    recent: Recent,
    /// By the [`id_key`] of each name: names are looked up for nearly
    /// every event, and an id key is what the other tables take (the same
    /// 128-bit hash the dedup trusts to tell ids apart).
    ids: IdMap<u32>,
    names: Vec<Box<str>>,
    kinds: Vec<u8>,
    /// Names admitted as reps, as teams.
    counts: [usize; 2],
    /// Events whose rep, team was folded into `other`.
    folded: [u64; 2],
}

impl Names {
    fn intern(&mut self, name: &str) -> u32 {
        let k = key(name);
        if let Some(&id) = self.ids.get(k) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.into());
        self.kinds.push(0);
        self.ids.insert(k, id);
        id
    }

    /// Marks `id` as a `kind` (counted), whatever the limit.
    fn mark(&mut self, id: u32, kind: u8) {
        let k = &mut self.kinds[id as usize];
        if *k & kind == 0 {
            *k |= kind;
            self.counts[(kind >> 1) as usize] += 1;
        }
    }

    /// The id of `name` as a `kind`: admitted while fewer than `max` names
    /// are, else `other` (interned as `other`), counted as folded. A name
    /// past the limit is not even interned, so a flood of ids costs nothing.
    fn admit(&mut self, name: &str, kind: u8, max: usize, other: u32) -> u32 {
        let slot = (kind >> 1) as usize;
        match self.find(name) {
            Some(id) if self.kinds[id as usize] & kind != 0 => id,
            _ if self.counts[slot] >= max => {
                self.folded[slot] += 1;
                other
            }
            found => {
                let id = found.unwrap_or_else(|| self.intern(name));
                self.mark(id, kind);
                id
            }
        }
    }

    fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    /// The id of an interned name: from [`Recent`] when it is there, else
    /// by its key (and then kept in `recent`).
    fn find(&mut self, name: &str) -> Option<u32> {
        let packed = Packed::of(name.as_bytes());
        if let Some(id) = packed.and_then(|p| self.recent.get(p)) {
            return Some(id);
        }
        let id = *self.ids.get(key(name))?;
        if let Some(p) = packed {
            self.recent.put(p, id);
        }
        Some(id)
    }
}

/// A name of 1 to 16 bytes as two words and its length: the bytes
/// themselves, zero-padded, so equal values are equal names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Packed {
    lo: u64,
    hi: u64,
    len: u8,
}

impl Packed {
    fn of(b: &[u8]) -> Option<Packed> {
        let n = b.len();
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("eight bytes"));
        let half =
            |at: usize| u64::from(u32::from_le_bytes(b[at..at + 4].try_into().expect("four")));
        // The last bytes are read in one load that ends at the name's end,
        // and shifted down past the ones the first load has.
        let (lo, hi) = match n {
            0 => return None,
            1..=3 => (b.iter().rev().fold(0, |w, &c| w << 8 | u64::from(c)), 0),
            4..=7 => (half(0) | (half(n - 4) >> (8 * (8 - n))) << 32, 0),
            8..=16 => (
                word(0),
                word(n - 8).checked_shr(8 * (16 - n) as u32).unwrap_or(0),
            ),
            _ => return None,
        };
        Some(Packed {
            lo,
            hi,
            len: n as u8,
        })
    }

    fn slot(self) -> usize {
        let h = (self.lo ^ self.hi.rotate_left(29) ^ u64::from(self.len))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> (64 - RECENT_BITS)) as usize
    }
}

const RECENT_BITS: u32 = 6;

/// A direct-mapped cache of name ids, for the few reps and teams that
/// nearly every event names: their ids found by comparing two words,
/// without hashing the name or looking it up in [`Names::ids`]. An entry
/// is only ever replaced, never wrong: a name's id does not change.
#[derive(Debug, Clone)]
struct Recent(Box<[(Packed, u32); 1 << RECENT_BITS]>);

impl Default for Recent {
    fn default() -> Self {
        Recent(Box::new([(Packed::default(), 0); 1 << RECENT_BITS]))
    }
}

impl Recent {
    fn get(&self, p: Packed) -> Option<u32> {
        let (q, id) = self.0[p.slot()];
        (q == p).then_some(id)
    }

    fn put(&mut self, p: Packed, id: u32) {
        self.0[p.slot()] = (p, id);
    }
}

/// What one (rep, team) pair has: windowed parts and current-state gauges.
/// `rep` is `None` for team-only contributions (spend), `team` is `None` for
/// org-only ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Agg {
    rep: Option<u32>,
    team: Option<u32>,
    series: Series,
    gauges: Vec<i64>,
}

/// The ledger: every (rep, team) aggregate, the window plan and the clock.
#[derive(Debug, Clone)]
struct Book {
    plan: WindowPlan,
    clock: Clock,
    names: Names,
    aggs: Vec<Agg>,
    index: Map<(u32, u32), u32>,
    n_gauges: usize,
}

const NONE: u32 = u32::MAX;

/// A contribution of nothing, to pad a fixed-size list of parts: adding
/// zero changes no sum, and [`Series::add_many`] does not store it.
const NO_PART: (usize, i64) = (0, 0);

impl Book {
    fn agg(&mut self, rep: Option<u32>, team: Option<u32>) -> u32 {
        let key = (rep.unwrap_or(NONE), team.unwrap_or(NONE));
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.aggs.len() as u32;
        self.aggs.push(Agg {
            rep,
            team,
            series: Series::new(&self.plan, &self.clock),
            gauges: vec![0; self.n_gauges],
        });
        self.index.insert(key, i);
        i
    }

    fn add(&mut self, agg: u32, t: i64, part: usize, v: i64) {
        self.add_many(agg, t, &[(part, v)]);
    }

    fn add_many(&mut self, agg: u32, t: i64, parts: &[(usize, i64)]) {
        self.aggs[agg as usize]
            .series
            .add_many(&self.plan, &self.clock, t, parts);
    }

    fn gauge(&mut self, agg: u32, g: usize, v: i64) {
        let x = &mut self.aggs[agg as usize].gauges[g];
        *x = x.wrapping_add(v);
    }
}

/// 24 bytes: leads are the most numerous entities (every lead idle for
/// less than the longest window is kept), so no `Option` padding here.
/// `Default` only fills the empty entries of their table; a lead starts as
/// [`Lead::new`].
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Lead {
    /// When its `lead.created` was applied; [`UNSEEN`] before.
    created_at: i64,
    last: i64,
    /// The rep of its `lead.created`; [`NONE`] before.
    owner: u32,
    created: bool,
    converted: bool,
    touched: bool,
}

/// A time not seen yet.
const UNSEEN: i64 = i64::MIN;

impl Lead {
    fn new(t: i64) -> Lead {
        Lead {
            created_at: UNSEEN,
            last: t,
            owner: NONE,
            created: false,
            converted: false,
            touched: false,
        }
    }
}

/// `Default` only fills the empty entries of their table.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Deal {
    owner: Option<u32>,
    /// The aggregate its current-state gauges live in.
    agg: u32,
    amount: i64,
    /// Index in the pipeline; `None` when unknown or not a pipeline stage.
    stage: Option<u8>,
    created_at: i64,
    /// Opened by a `deal.created` (not only implicitly).
    opened: bool,
    closed: bool,
    last: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
enum MeetingStatus {
    #[default]
    Scheduled,
    Held,
    Canceled,
    NoShow,
}

/// The meeting contributions currently counted, at `sf`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Counted {
    sf: i64,
    due: bool,
    held: bool,
    missed: bool,
    upcoming: bool,
}

/// `Default` only fills the empty entries of their table.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Meeting {
    agg: u32,
    sf: Option<i64>,
    status: MeetingStatus,
    counted: Counted,
    last: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Account {
    owner: Option<u32>,
    agg: u32,
    active: bool,
    mrr: i64,
    last: i64,
}

/// A rep's latest quota per period: (aggregate, amount).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Quota {
    month: Option<(u32, i64)>,
    quarter: Option<(u32, i64)>,
}

/// Applied event ids, remembered for the dedup horizon of event time.
#[derive(Debug, Clone, Default)]
struct Dedup {
    seen: IdSet,
}

impl Dedup {
    fn is_duplicate(&self, key: Key, horizon_start: i64) -> bool {
        self.seen.get(key).is_some_and(|&t| t >= horizon_start)
    }

    /// Remembers `key` as applied at `t`. An id applied before
    /// `horizon_start` is no longer a duplicate's, but its entry is only
    /// dropped when the table is full: a pass over the whole table then
    /// drops every such entry, and the table grows only if that frees
    /// less than an eighth of it. Dropping them earlier would free no
    /// memory (a table never shrinks), only its slots, sooner than needed,
    /// and each pass costs a read of the whole table. Passes are thus at
    /// least an eighth of the table's insertions apart, and a table holds
    /// at most 9/4 of the most ids a horizon had when it last grew.
    fn insert(&mut self, key: Key, t: i64, horizon_start: i64) {
        if self.seen.room() == 0 {
            self.seen.retain(|&t| t >= horizon_start);
            if self.seen.room() < self.seen.len() / 8 {
                self.seen.grow();
            }
        }
        self.seen.insert(key, t);
    }
}

/// Counts of what the engine holds, for memory and cardinality metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    pub aggregates: usize,
    pub leads: usize,
    pub deals: usize,
    pub meetings: usize,
    pub accounts: usize,
    /// Applied ids held, with those past the horizon that the table has
    /// not yet needed the room of (see `Dedup::insert`).
    pub dedup_ids: usize,
}

/// The state of one partition.
#[derive(Debug, Clone)]
pub struct Engine {
    cfg: EngineConfig,
    book: Book,
    /// By rep name id: the team and aggregate of its last contribution (a
    /// rep almost always books to one team), to skip a map lookup.
    last_agg: Vec<(u32, u32)>,
    teams: Map<u32, u32>,
    unassigned: u32,
    /// `other`: where reps and teams past their limits are folded.
    other: u32,
    stage_ids: Map<String, u8>,
    leads: IdMap<Lead>,
    deals: IdMap<Deal>,
    meetings: IdMap<Meeting>,
    accounts: KeyMap<Account>,
    quotas: Map<u32, Quota>,
    dedup: Dedup,
    timers: Timers,
    /// The largest `occurred_at` this engine applied. The dedup horizon and
    /// forgetting count from it, not from T, so that this state is a function
    /// of its own events alone, whenever it is read at whatever instance clock.
    max_at: i64,
    /// Entities idle longer than this are forgotten.
    retention: i64,
    next_sweep: i64,
}

/// What a message will look up, as [`id_key`]s, for [`Engine::warm`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Ahead {
    pub id: Option<Key>,
    pub keys: Keys,
}

/// The [`id_key`]s of the lead and the deal or meeting an event names:
/// hashed once, for the read-ahead and for the event's application.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keys {
    lead: Option<Key>,
    entity: Option<Entity>,
}

/// The deal or meeting an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entity {
    Deal(Key),
    Meeting(Key),
}

impl Keys {
    /// The keys of what `ev` names.
    pub fn of(ev: &Event<'_>) -> Keys {
        let entity = match (ev.body.deal(), ev.body.meeting()) {
            (Some(d), _) => Some(Entity::Deal(key(d))),
            (None, Some(m)) => Some(Entity::Meeting(key(m))),
            (None, None) => None,
        };
        Keys {
            lead: ev.body.lead().map(key),
            entity,
        }
    }

    /// The key of the event's lead `lead`. Each of these three falls back
    /// on hashing the id, so that keys that were not made for the event
    /// (`Keys::default()`) cost a hash, not a wrong entity.
    fn lead(&self, lead: &str) -> Key {
        self.lead.unwrap_or_else(|| key(lead))
    }

    /// The key of the event's deal `deal`.
    fn deal(&self, deal: &str) -> Key {
        match self.entity {
            Some(Entity::Deal(k)) => k,
            _ => key(deal),
        }
    }

    /// The key of the event's meeting `meeting`.
    fn meeting(&self, meeting: &str) -> Key {
        match self.entity {
            Some(Entity::Meeting(k)) => k,
            _ => key(meeting),
        }
    }
}

/// A 128-bit hash of an id, kept as two words: 8-byte aligned, so map
/// entries are not padded to 16 bytes as a `u128`'s would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key(u64, u64);

fn key(id: &str) -> Key {
    let h = xxh3_128(id.as_bytes());
    Key((h >> 64) as u64, h as u64)
}

/// The key an event id is remembered by for deduplication.
pub fn id_key(id: &str) -> Key {
    key(id)
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        let plan = WindowPlan::new(&cfg, parts::count(cfg.stages.len()));
        let clock = Clock::new(&plan);
        let mut book = Book {
            plan,
            clock,
            names: Names::default(),
            aggs: Vec::new(),
            index: Map::default(),
            n_gauges: gauge_count(cfg.stages.len()),
        };
        let unassigned = book.names.intern(UNASSIGNED);
        let other = book.names.intern(OTHER);
        let teams = cfg
            .teams
            .iter()
            .map(|(rep, team)| (book.names.intern(rep), book.names.intern(team)))
            .collect();
        let stage_ids = cfg
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u8))
            .collect();
        let longest = cfg.sliding.iter().map(|s| s.length).max().unwrap_or(0);
        let retention = longest.max(92 * 86_400 * SECOND).max(cfg.no_show_grace);
        Engine {
            cfg,
            book,
            last_agg: Vec::new(),
            teams,
            unassigned,
            other,
            stage_ids,
            leads: IdMap::default(),
            deals: IdMap::default(),
            meetings: IdMap::default(),
            accounts: KeyMap::default(),
            quotas: Map::default(),
            dedup: Dedup::default(),
            timers: Timers::new(DAWN),
            max_at: DAWN,
            retention,
            next_sweep: DAWN,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The clock T, microseconds since the epoch; `None` before any event.
    pub fn now(&self) -> Option<i64> {
        (self.book.clock.now > DAWN).then_some(self.book.clock.now)
    }

    pub fn sizes(&self) -> Sizes {
        Sizes {
            aggregates: self.book.aggs.len(),
            leads: self.leads.len(),
            deals: self.deals.len(),
            meetings: self.meetings.len(),
            accounts: self.accounts.len(),
            dedup_ids: self.dedup.seen.len(),
        }
    }

    /// Moves the clock T forward to `now` (never back): expires windows,
    /// makes meetings due or missed, forgets what no window can need.
    pub fn set_now(&mut self, now: i64) {
        if now <= self.book.clock.now {
            return;
        }
        self.book.clock.set(&self.book.plan, now);
        while let Some(meeting) = self.timers.pop_due(now) {
            self.recount_meeting(meeting);
        }
    }

    /// Drops entities no rule can need any more. An entity idle past the
    /// retention is already treated as unknown; this reclaims its memory,
    /// so it runs only every eighth of the retention (at most 1/8 extra).
    fn sweep(&mut self) {
        let idle = self.idle_since();
        self.leads.retain(|l| l.last >= idle);
        self.deals.retain(|d| !d.closed || d.last >= idle);
        self.meetings
            .retain(|m| m.last >= idle || m.sf.is_some_and(|sf| sf >= idle));
        self.accounts.retain(|_, a| a.active || a.last >= idle);
    }

    fn idle_since(&self) -> i64 {
        self.max_at - self.retention
    }

    /// True when an event with this id was applied within the dedup horizon.
    pub fn is_duplicate(&self, id: &str) -> bool {
        self.is_duplicate_key(key(id))
    }

    /// Starts bringing into cache what applying a message will look up
    /// first: its id's place among the applied ones, and its lead, deal or
    /// meeting, in two passes over a run ([`Pass`]). Changes nothing, and
    /// waits for nothing.
    pub fn warm(&self, ahead: &Ahead, pass: Pass) {
        if let (Some(id), Pass::Tags) = (ahead.id, pass) {
            self.dedup.seen.prefetch(id);
        }
        if let Some(lead) = ahead.keys.lead {
            self.leads.warm(lead, pass);
        }
        match ahead.keys.entity {
            Some(Entity::Deal(k)) => self.deals.warm(k, pass),
            Some(Entity::Meeting(k)) => self.meetings.warm(k, pass),
            None => {}
        }
    }

    /// As [`Engine::warm`], for the meetings whose timers will be due once
    /// the clock is at `until`.
    pub fn warm_timers(&self, until: i64, pass: Pass) {
        self.timers
            .each_due_by(until, |k| self.meetings.warm(k, pass));
    }

    /// As [`Engine::is_duplicate`], for an [`id_key`].
    pub fn is_duplicate_key(&self, id: Key) -> bool {
        self.dedup
            .is_duplicate(id, self.max_at - self.cfg.dedup_horizon)
    }

    /// Applies one event in arrival order, or says why it was skipped.
    pub fn offer(&mut self, ev: &Event<'_>) -> Result<(), Skip> {
        let id = key(&ev.id);
        if self.is_duplicate_key(id) {
            return Err(Skip::Duplicate);
        }
        self.offer_unseen(ev, id, &Keys::of(ev))
    }

    /// As [`Engine::offer`], for an event whose [`id_key`] the caller has
    /// just found not to be a duplicate, and whose other keys it has
    /// ([`Keys::of`] the event).
    pub fn offer_unseen(&mut self, ev: &Event<'_>, id: Key, keys: &Keys) -> Result<(), Skip> {
        debug_assert!(*keys == Keys::default() || *keys == Keys::of(ev));
        if self.entities() >= self.cfg.max_entities && self.names_new_entity(ev) {
            return Err(Skip::OverLimit);
        }
        if let Some(deal) = ev.body.deal() {
            if let Some(d) = self.deals.get(keys.deal(deal)) {
                if d.closed && d.last >= self.idle_since() {
                    return Err(Skip::ClosedDeal);
                }
            }
        }
        // Its entry is written after the event is applied: fetch it now.
        self.dedup.seen.prefetch(id);
        self.set_now(ev.at);
        self.max_at = self.max_at.max(ev.at);
        self.apply(ev, keys);
        let horizon_start = self.max_at - self.cfg.dedup_horizon;
        if ev.at >= horizon_start {
            self.dedup.insert(id, ev.at, horizon_start);
        }
        if self.max_at >= self.next_sweep {
            self.sweep();
            self.next_sweep = self.max_at + self.retention / 8;
        }
        Ok(())
    }

    /// A rep named by an event, within `limits.max_reps`.
    fn rep_id(&mut self, name: &str) -> u32 {
        self.book
            .names
            .admit(name, REP, self.cfg.max_reps, self.other)
    }

    /// A team named by an event, within `limits.max_teams`.
    fn team_id(&mut self, name: &str) -> u32 {
        self.book
            .names
            .admit(name, TEAM, self.cfg.max_teams, self.other)
    }

    /// Events whose rep, and whose team, were folded into `other`.
    pub fn folded(&self) -> [u64; 2] {
        self.book.names.folded
    }

    /// Leads, deals, meetings and accounts held.
    fn entities(&self) -> usize {
        self.leads.len() + self.deals.len() + self.meetings.len() + self.accounts.len()
    }

    /// Whether the event names a lead, deal, meeting or account this
    /// partition does not hold.
    fn names_new_entity(&self, ev: &Event<'_>) -> bool {
        let b = &ev.body;
        if let Body::SubscriptionStarted { account, .. }
        | Body::SubscriptionChanged { account, .. }
        | Body::SubscriptionCanceled { account } = b
        {
            return !self.accounts.contains_key(&key(account));
        }
        b.lead().is_some_and(|l| !self.leads.contains_key(key(l)))
            || b.meeting().is_some_and(|m| !self.meeting_known(m))
            || b.deal().is_some_and(|d| !self.deals.contains_key(key(d)))
    }

    fn team_of(&self, rep: u32) -> u32 {
        self.teams.get(&rep).copied().unwrap_or(self.unassigned)
    }

    /// The (rep, team) aggregate of a contribution: the event's rep, else the
    /// entity's owner, else unassigned; the event's team, else the rep's team
    /// in the teams map, else unassigned.
    fn target(&mut self, ev: &Event<'_>, owner: Option<u32>) -> (u32, u32) {
        let rep = match &ev.rep {
            Some(r) => self.rep_id(r),
            None => owner.unwrap_or(self.unassigned),
        };
        let team = match &ev.team {
            Some(t) => self.team_id(t),
            None => self.team_of(rep),
        };
        (rep, self.agg_of(rep, team))
    }

    /// `book.agg` of (rep, team), through `last_agg`.
    fn agg_of(&mut self, rep: u32, team: u32) -> u32 {
        let i = rep as usize;
        if let Some(&(t, agg)) = self.last_agg.get(i) {
            if t == team {
                return agg;
            }
        }
        let agg = self.book.agg(Some(rep), Some(team));
        if i >= self.last_agg.len() {
            self.last_agg.resize(i + 1, (NONE, NONE));
        }
        self.last_agg[i] = (team, agg);
        agg
    }

    fn apply(&mut self, ev: &Event<'_>, keys: &Keys) {
        let t = ev.at;
        match &ev.body {
            Body::LeadCreated { lead } => {
                let (rep, agg) = self.target(ev, None);
                let l = self.lead(keys.lead(lead), t);
                if !l.created {
                    l.created = true;
                    l.created_at = t;
                    l.owner = rep;
                    self.book.add(agg, t, LEADS_CREATED, 1);
                }
            }
            Body::LeadConverted { lead } => {
                let k = keys.lead(lead);
                let owner = self.lead(k, t).owner;
                let (_, agg) = self.target(ev, (owner != NONE).then_some(owner));
                let l = self.lead(k, t);
                if !l.converted {
                    l.converted = true;
                    self.book.add(agg, t, LEADS_CONVERTED, 1);
                }
            }
            Body::CallLogged {
                lead,
                duration,
                outcome,
            } => {
                let (_, agg) = self.target(ev, None);
                let connected = i64::from(*outcome == CallOutcome::Connected);
                let [a, b, c, d] = self.touch(lead.as_deref().map(|l| keys.lead(l)), t);
                self.book.add_many(
                    agg,
                    t,
                    &[
                        (CALLS, 1),
                        (CALLS_CONNECTED, connected),
                        (CALL_SECONDS, *duration),
                        a,
                        b,
                        c,
                        d,
                    ],
                );
            }
            Body::EmailSent { lead } => {
                let (_, agg) = self.target(ev, None);
                let [a, b, c, d] = self.touch(lead.as_deref().map(|l| keys.lead(l)), t);
                self.book.add_many(agg, t, &[(EMAILS, 1), a, b, c, d]);
            }
            Body::MeetingScheduled {
                meeting,
                scheduled_for,
                lead,
            } => {
                if let Some(lead) = lead {
                    self.lead(keys.lead(lead), t);
                }
                let m = self.meeting(ev, keys.meeting(meeting), Some(*scheduled_for));
                m.sf = Some(*scheduled_for);
                m.status = MeetingStatus::Scheduled;
                let (_, agg) = self.target(ev, None);
                self.book.add(agg, t, MEETINGS_BOOKED, 1);
                self.recount_meeting(keys.meeting(meeting));
            }
            Body::MeetingRescheduled {
                meeting,
                scheduled_for,
            } => {
                let m = self.meeting(ev, keys.meeting(meeting), Some(*scheduled_for));
                m.sf = Some(*scheduled_for);
                m.status = MeetingStatus::Scheduled;
                self.recount_meeting(keys.meeting(meeting));
            }
            Body::MeetingHeld { meeting } => {
                self.meeting(ev, keys.meeting(meeting), Some(t)).status = MeetingStatus::Held;
                self.recount_meeting(keys.meeting(meeting));
            }
            Body::MeetingCanceled { meeting } => {
                self.meeting(ev, keys.meeting(meeting), None).status = MeetingStatus::Canceled;
                self.recount_meeting(keys.meeting(meeting));
            }
            Body::MeetingNoShow { meeting } => {
                self.meeting(ev, keys.meeting(meeting), None).status = MeetingStatus::NoShow;
                self.recount_meeting(keys.meeting(meeting));
            }
            Body::DealCreated {
                deal,
                amount,
                stage,
            } => {
                let k = keys.deal(deal);
                let live = self.live_deal(k).map(|d| d.opened);
                let known = live.is_some();
                if live == Some(true) {
                    self.deals.get_mut(k).expect("known").last = t;
                    return;
                }
                let (rep, agg) = self.target(ev, None);
                let stage = stage.as_deref().map(|s| self.stage_ids.get(s).copied());
                if known {
                    self.deal_gauges(k, -1);
                    let d = self.deals.get_mut(k).expect("known");
                    d.owner = Some(rep);
                    d.agg = agg;
                    d.amount = *amount;
                    if let Some(stage) = stage {
                        d.stage = stage;
                    }
                    d.created_at = d.created_at.min(t);
                    d.opened = true;
                    d.last = t;
                } else {
                    self.deals.insert(
                        k,
                        Deal {
                            owner: Some(rep),
                            agg,
                            amount: *amount,
                            stage: stage.flatten(),
                            created_at: t,
                            opened: true,
                            closed: false,
                            last: t,
                        },
                    );
                }
                self.book.add(agg, t, DEALS_CREATED, 1);
                self.deal_gauges(k, 1);
            }
            Body::DealStageChanged {
                deal,
                to_stage,
                amount,
            } => {
                let k = self.implicit_deal(ev, keys.deal(deal));
                let owner = self.deal(k).owner;
                let (_, agg) = self.target(ev, owner);
                let to = self.stage_ids.get(&**to_stage).copied();
                self.deal_gauges(k, -1);
                let d = self.deals.get_mut(k).expect("implicit deal exists");
                let from = d.stage;
                d.stage = to;
                if let Some(a) = amount {
                    d.amount = *a;
                }
                d.last = t;
                if let (Some(from), Some(to)) = (from, to) {
                    if from != to {
                        let outcome = if to > from {
                            ExitOutcome::Advanced
                        } else {
                            ExitOutcome::Regressed
                        };
                        self.book.add(agg, t, stage_exit(from as usize, outcome), 1);
                    }
                }
                self.deal_gauges(k, 1);
            }
            Body::DealAmountChanged { deal, amount } => {
                let k = self.implicit_deal(ev, keys.deal(deal));
                self.deal_gauges(k, -1);
                let d = self.deals.get_mut(k).expect("implicit deal exists");
                d.amount = *amount;
                d.last = t;
                self.deal_gauges(k, 1);
            }
            Body::DealWon { deal, amount } => {
                let k = self.implicit_deal(ev, keys.deal(deal));
                let owner = self.deal(k).owner;
                let (_, agg) = self.target(ev, owner);
                self.deal_gauges(k, -1);
                let d = self.deals.get_mut(k).expect("implicit deal exists");
                if let Some(a) = amount {
                    d.amount = *a;
                }
                d.closed = true;
                d.last = t;
                let (stage, amount, cycle) = (d.stage, d.amount, t - d.created_at);
                if let Some(s) = stage {
                    self.book
                        .add(agg, t, stage_exit(s as usize, ExitOutcome::Advanced), 1);
                }
                self.book.add_many(
                    agg,
                    t,
                    &[
                        (DEALS_WON, 1),
                        (WON_AMOUNT, amount),
                        (SALES_CYCLE_SUM, cycle),
                        (SALES_CYCLE_COUNT, 1),
                        (SALES_CYCLE_HIST + sales_cycle_bucket(cycle), 1),
                    ],
                );
            }
            Body::DealLost { deal } => {
                let k = self.implicit_deal(ev, keys.deal(deal));
                let owner = self.deal(k).owner;
                let (_, agg) = self.target(ev, owner);
                self.deal_gauges(k, -1);
                let d = self.deals.get_mut(k).expect("implicit deal exists");
                d.closed = true;
                d.last = t;
                if let Some(s) = d.stage {
                    self.book
                        .add(agg, t, stage_exit(s as usize, ExitOutcome::Lost), 1);
                }
                self.book.add(agg, t, DEALS_LOST, 1);
            }
            Body::SubscriptionStarted { account, mrr }
            | Body::SubscriptionChanged { account, mrr } => {
                let k = key(account);
                let prev = self.account(k);
                let (rep, agg) = self.target(ev, prev.as_ref().and_then(|a| a.owner));
                match prev {
                    Some(a) if a.active => {
                        let diff = mrr - a.mrr;
                        if diff > 0 {
                            self.book.add_many(
                                agg,
                                t,
                                &[(CUSTOMERS_EXPANDED, 1), (MRR_EXPANSION, diff)],
                            );
                        } else if diff < 0 {
                            self.book.add(agg, t, MRR_CONTRACTION, -diff);
                        }
                        self.book.gauge(a.agg, G_MRR, diff);
                        let a = self.accounts.get_mut(&k).expect("active account");
                        a.mrr = *mrr;
                        a.last = t;
                    }
                    _ => {
                        self.book
                            .add_many(agg, t, &[(CUSTOMERS_NEW, 1), (MRR_NEW, *mrr)]);
                        self.book.gauge(agg, G_CUSTOMERS_ACTIVE, 1);
                        self.book.gauge(agg, G_MRR, *mrr);
                        self.accounts.insert(
                            k,
                            Account {
                                owner: Some(rep),
                                agg,
                                active: true,
                                mrr: *mrr,
                                last: t,
                            },
                        );
                    }
                }
            }
            Body::SubscriptionCanceled { account } => {
                let k = key(account);
                if let Some(a) = self.account(k) {
                    if a.active {
                        let (_, agg) = self.target(ev, a.owner);
                        self.book
                            .add_many(agg, t, &[(CUSTOMERS_CHURNED, 1), (MRR_CHURNED, a.mrr)]);
                        self.book.gauge(a.agg, G_CUSTOMERS_ACTIVE, -1);
                        self.book.gauge(a.agg, G_MRR, -a.mrr);
                    }
                    let a = self.accounts.get_mut(&k).expect("known account");
                    a.active = false;
                    a.mrr = 0;
                    a.last = t;
                }
            }
            Body::SurveyResponded {
                kind,
                score,
                account,
            } => {
                let owner = account
                    .as_deref()
                    .and_then(|a| self.account(key(a)))
                    .and_then(|a| a.owner);
                let (_, agg) = self.target(ev, owner);
                let score = i64::from(*score);
                match kind {
                    SurveyKind::Nps => self.book.add_many(
                        agg,
                        t,
                        &[
                            (NPS_RESPONSES, 1),
                            (NPS_PROMOTERS, i64::from(score >= 9)),
                            (NPS_DETRACTORS, i64::from(score <= 6)),
                        ],
                    ),
                    SurveyKind::Csat => self.book.add_many(
                        agg,
                        t,
                        &[
                            (CSAT_RESPONSES, 1),
                            (CSAT_SATISFIED, i64::from(score >= 4)),
                            (CSAT_SCORE_SUM, score),
                        ],
                    ),
                }
            }
            Body::TimeLogged { category, duration } => {
                let (_, agg) = self.target(ev, None);
                let selling = if *category == TimeCategory::Selling {
                    *duration
                } else {
                    0
                };
                self.book.add_many(
                    agg,
                    t,
                    &[(LOGGED_SECONDS, *duration), (SELLING_SECONDS, selling)],
                );
            }
            Body::SpendRecorded { amount, .. } => {
                let team = ev.team.as_deref().map(|t| self.team_id(t));
                let agg = self.book.agg(None, team);
                self.book.add(agg, t, ACQUISITION_SPEND, *amount);
            }
            Body::QuotaSet { period, amount } => {
                let (rep, agg) = self.target(ev, None);
                let (gauge, q) = {
                    let q = self.quotas.entry(rep).or_default();
                    match period {
                        QuotaPeriod::Month => (G_QUOTA_MONTH, &mut q.month),
                        QuotaPeriod::Quarter => (G_QUOTA_QUARTER, &mut q.quarter),
                    }
                };
                let old = q.replace((agg, *amount));
                if let Some((old_agg, old_amount)) = old {
                    self.book.gauge(old_agg, gauge, -old_amount);
                }
                self.book.gauge(agg, gauge, *amount);
            }
        }
    }

    /// The lead, created implicitly (without a creation time) if unknown or
    /// forgotten.
    fn lead(&mut self, lead: Key, t: i64) -> &mut Lead {
        let idle = self.idle_since();
        let l = self.leads.get_or_insert(lead, Lead::new(t));
        if l.last < idle {
            *l = Lead::new(t);
        }
        l.last = l.last.max(t);
        l
    }

    /// A call or email naming a lead: its first one is the first touch. The
    /// contributions that makes, padded with [`NO_PART`], for the caller to
    /// add with its own in one go.
    fn touch(&mut self, lead: Option<Key>, t: i64) -> [(usize, i64); 4] {
        let mut parts = [NO_PART; 4];
        if let Some(lead) = lead {
            let l = self.lead(lead, t);
            if !l.touched {
                l.touched = true;
                parts[0] = (PROSPECTS_CONTACTED, 1);
                if l.created_at != UNSEEN {
                    let response = t - l.created_at;
                    parts[1] = (LEAD_RESPONSE_SUM, response);
                    parts[2] = (LEAD_RESPONSE_COUNT, 1);
                    parts[3] = (LEAD_RESPONSE_HIST + lead_response_bucket(response), 1);
                }
            }
        }
        parts
    }

    /// The deal, unless it is unknown or closed and forgotten (idle past
    /// the retention), which an event treats as new.
    fn live_deal(&self, k: Key) -> Option<&Deal> {
        self.deals
            .get(k)
            .filter(|d| !(d.closed && d.last < self.idle_since()))
    }

    /// The deal, opened implicitly (at this event's time, stage unknown) if
    /// unknown. Returns its key.
    fn implicit_deal(&mut self, ev: &Event<'_>, k: Key) -> Key {
        if self.live_deal(k).is_some() {
            return k;
        }
        let owner = ev.rep.as_deref().map(|r| self.rep_id(r));
        let (_, agg) = self.target(ev, None);
        self.deals.insert(
            k,
            Deal {
                owner,
                agg,
                amount: 0,
                stage: None,
                created_at: ev.at,
                opened: false,
                closed: false,
                last: ev.at,
            },
        );
        self.deal_gauges(k, 1);
        k
    }

    /// A deal known to be here.
    fn deal(&self, k: Key) -> &Deal {
        self.deals.get(k).expect("a known deal")
    }

    /// Adds (`sign` 1) or removes (-1) an open deal's current-state gauges.
    fn deal_gauges(&mut self, k: Key, sign: i64) {
        let d = self.deal(k);
        if d.closed {
            return;
        }
        let (agg, amount, stage) = (d.agg, d.amount, d.stage);
        self.book.gauge(agg, G_OPEN_DEALS, sign);
        self.book.gauge(agg, G_OPEN_AMOUNT, sign * amount);
        if let Some(s) = stage {
            self.book.gauge(agg, G_STAGES + 2 * s as usize, sign);
            self.book
                .gauge(agg, G_STAGES + 2 * s as usize + 1, sign * amount);
        }
    }

    fn account(&self, k: Key) -> Option<Account> {
        self.accounts
            .get(&k)
            .filter(|a| a.active || a.last >= self.idle_since())
            .cloned()
    }

    /// The meeting, created with this event's rep and team if unknown.
    fn meeting(&mut self, ev: &Event<'_>, k: Key, sf: Option<i64>) -> &mut Meeting {
        if !self.meeting_known_key(k) {
            let (_, agg) = self.target(ev, None);
            self.meetings.insert(
                k,
                Meeting {
                    agg,
                    sf,
                    status: MeetingStatus::Scheduled,
                    counted: Counted::default(),
                    last: ev.at,
                },
            );
        }
        let m = self.meetings.get_mut(k).expect("inserted");
        m.last = m.last.max(ev.at);
        m
    }

    /// Whether a meeting is known and not forgotten (the rule of
    /// [`Engine::meeting`]).
    pub fn meeting_known(&self, meeting: &str) -> bool {
        self.meeting_known_key(key(meeting))
    }

    fn meeting_known_key(&self, k: Key) -> bool {
        let idle = self.idle_since();
        self.meetings
            .get(k)
            .is_some_and(|m| !(m.last < idle && m.sf.is_none_or(|sf| sf < idle)))
    }

    /// Brings a meeting's due, held, missed and upcoming contributions in
    /// line with its state and the clock, and sets timers for what is ahead.
    fn recount_meeting(&mut self, k: Key) {
        let now = self.book.clock.now;
        let grace = self.cfg.no_show_grace;
        let Some(&m) = self.meetings.get(k) else {
            return;
        };
        let want = match m.sf {
            None => Counted::default(),
            Some(sf) => {
                let due = m.status != MeetingStatus::Canceled && sf <= now;
                Counted {
                    sf,
                    due,
                    held: due && m.status == MeetingStatus::Held,
                    missed: due
                        && (m.status == MeetingStatus::NoShow
                            || (m.status == MeetingStatus::Scheduled && sf + grace <= now)),
                    upcoming: m.status == MeetingStatus::Scheduled && sf > now,
                }
            }
        };
        let (have, agg, status) = (m.counted, m.agg, m.status);
        if want == have {
            return;
        }
        for (part, was, is) in [
            (MEETINGS_DUE, have.due, want.due),
            (MEETINGS_HELD, have.held, want.held),
            (MEETINGS_MISSED, have.missed, want.missed),
        ] {
            if was && (!is || have.sf != want.sf) {
                self.book.add(agg, have.sf, part, -1);
            }
            if is && (!was || have.sf != want.sf) {
                self.book.add(agg, want.sf, part, 1);
            }
        }
        if have.upcoming != want.upcoming {
            self.book
                .gauge(agg, G_MEETINGS_UPCOMING, if want.upcoming { 1 } else { -1 });
        }
        // A timer the last count set for the same time is still pending
        // (every timer up to T has fired): set again, it would only be
        // popped once more for nothing, as over half the pops were. The
        // last count set the one at `sf` if the meeting was upcoming, and
        // the one at `sf + grace` if it was scheduled and not yet missed.
        let same = have.sf == want.sf;
        let due_pending = same && have.upcoming;
        let missed_pending = same && (have.upcoming || (have.due && !have.held && !have.missed));
        if status != MeetingStatus::Canceled && want.sf > now && !due_pending {
            self.timers.push(want.sf, k);
        }
        if status == MeetingStatus::Scheduled && want.sf + grace > now && !missed_pending {
            self.timers.push(want.sf + grace, k);
        }
        self.meetings.get_mut(k).expect("exists").counted = want;
    }

    /// A fingerprint of what the state's layout depends on: a snapshot is
    /// only restored into an engine with the same windows and pipeline.
    /// What the state's layout depends on, written out field by field with
    /// a version of its own: the sliding windows (name, length and
    /// granularity in microseconds), the calendar windows, the time zone's
    /// name and the pipeline stages. Snapshots carry it; a snapshot of
    /// another layout is not restored. It changes only when one of these
    /// does (not with a derive or a dependency's formatting).
    pub fn layout_fingerprint(cfg: &EngineConfig) -> String {
        let sliding: Vec<String> = cfg
            .sliding
            .iter()
            .map(|s| format!("{}:{}:{}", s.name, s.length, s.granularity))
            .collect();
        let calendar: Vec<&str> = cfg.calendar.iter().map(|c| c.name()).collect();
        format!(
            "layout/2|sliding={}|calendar={}|tz={}|stages={}",
            sliding.join(","),
            calendar.join(","),
            cfg.timezone.name(),
            cfg.stages.join(",")
        )
    }

    /// The fingerprint snapshots of formats 4 to 6 written before
    /// [`Engine::layout_fingerprint`] was explicit carry: the configuration's
    /// debug form. Read, never written.
    pub fn legacy_layout_fingerprint(cfg: &EngineConfig) -> String {
        format!(
            "v1|{:?}|{:?}|{}|{:?}",
            cfg.sliding, cfg.calendar, cfg.timezone, cfg.stages
        )
    }

    /// Whether a snapshot's layout fingerprint is this configuration's.
    pub fn layout_matches(cfg: &EngineConfig, fingerprint: &str) -> bool {
        fingerprint == Self::layout_fingerprint(cfg)
            || fingerprint == Self::legacy_layout_fingerprint(cfg)
    }

    /// Serializes the state (not the configuration) for a snapshot.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
        let state = StateRef {
            now: self.book.clock.now,
            max_at: self.max_at,
            next_sweep: self.next_sweep,
            names: &self.book.names.names,
            aggs: &self.book.aggs,
            leads: &self.leads,
            deals: &self.deals,
            meetings: &self.meetings,
            accounts: &self.accounts,
            quotas: &self.quotas,
            dedup: &self.dedup.seen,
            timers: self.timers.iter().collect(),
        };
        let bytes = postcard::to_extend(&state, std::mem::take(out))?;
        *out = bytes;
        Ok(())
    }

    /// Rebuilds an engine from [`Engine::encode`]d state and the current
    /// configuration, which must have the same layout fingerprint.
    pub fn decode(cfg: EngineConfig, bytes: &[u8]) -> Result<Self, postcard::Error> {
        let state: StateOwned = postcard::from_bytes(bytes)?;
        let mut e = Engine::new(cfg);
        let plan = &e.book.plan;
        if state
            .aggs
            .iter()
            .any(|a| !a.series.fits(plan) || a.gauges.len() != e.book.n_gauges)
        {
            return Err(postcard::Error::DeserializeBadEncoding);
        }
        let mut names = Names::default();
        for n in &state.names {
            names.intern(n);
        }
        e.book.names = names;
        e.unassigned = e.book.names.intern(UNASSIGNED);
        e.other = e.book.names.intern(OTHER);
        for a in &state.aggs {
            if let Some(r) = a.rep {
                e.book.names.mark(r, REP);
            }
            if let Some(t) = a.team {
                e.book.names.mark(t, TEAM);
            }
        }
        e.teams = e
            .cfg
            .teams
            .iter()
            .map(|(rep, team)| (e.book.names.intern(rep), e.book.names.intern(team)))
            .collect();
        e.book.index = state
            .aggs
            .iter()
            .enumerate()
            .map(|(i, a)| ((a.rep.unwrap_or(NONE), a.team.unwrap_or(NONE)), i as u32))
            .collect();
        e.book.aggs = state.aggs;
        e.book.clock.set(&e.book.plan, state.now);
        e.dedup.seen = state.dedup;
        e.leads = state.leads;
        e.deals = state.deals;
        e.meetings = state.meetings;
        e.accounts = state.accounts;
        e.quotas = state.quotas;
        e.timers = Timers::new(state.now);
        for (at, k) in state.timers {
            e.timers.push(at, k);
        }
        e.max_at = state.max_at;
        e.next_sweep = state.next_sweep;
        Ok(e)
    }

    /// Copies what rendering needs, with every window brought up to T.
    pub fn view(&mut self) -> View {
        let book = &mut self.book;
        let rows = book
            .aggs
            .iter_mut()
            .map(|a| {
                a.series.advance(&book.plan, &book.clock);
                let mut parts = Vec::with_capacity(book.plan.n_windows * book.plan.parts);
                a.series.window_major(&book.plan, &mut parts);
                Row {
                    rep: a.rep.map(|r| book.names.name(r).to_owned()),
                    team: a.team.map(|t| book.names.name(t).to_owned()),
                    parts,
                    gauges: a.gauges.clone(),
                }
            })
            .collect();
        View {
            now: self.now(),
            rows,
        }
    }
}

/// The persistent state, borrowed for encoding; [`StateOwned`] decodes it.
#[derive(Serialize)]
struct StateRef<'a> {
    now: i64,
    max_at: i64,
    next_sweep: i64,
    names: &'a [Box<str>],
    aggs: &'a [Agg],
    leads: &'a IdMap<Lead>,
    deals: &'a IdMap<Deal>,
    meetings: &'a IdMap<Meeting>,
    accounts: &'a KeyMap<Account>,
    quotas: &'a Map<u32, Quota>,
    dedup: &'a IdSet,
    timers: Vec<(i64, Key)>,
}

#[derive(Deserialize)]
struct StateOwned {
    now: i64,
    max_at: i64,
    next_sweep: i64,
    names: Vec<Box<str>>,
    aggs: Vec<Agg>,
    leads: IdMap<Lead>,
    deals: IdMap<Deal>,
    meetings: IdMap<Meeting>,
    accounts: KeyMap<Account>,
    quotas: Map<u32, Quota>,
    dedup: IdSet,
    timers: Vec<(i64, Key)>,
}

/// One (rep, team) pair's window sums (window-major) and gauges.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub rep: Option<String>,
    pub team: Option<String>,
    pub parts: Vec<i64>,
    pub gauges: Vec<i64>,
}

/// A copy of the KPI state of one or more engines at one clock T.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    pub now: Option<i64>,
    pub rows: Vec<Row>,
}

impl View {
    /// Adds another partition's view: rows are summed per scope at render.
    pub fn merge(&mut self, other: View) {
        self.now = self.now.max(other.now);
        self.rows.extend(other.rows);
    }
}

impl crate::crm::Known for Engine {
    fn meeting_known(&self, meeting_id: &str) -> bool {
        Engine::meeting_known(self, meeting_id)
    }

    fn meeting_time(&self, meeting_id: &str) -> Option<i64> {
        let k = key(meeting_id);
        if !self.meeting_known_key(k) {
            return None;
        }
        self.meetings.get(k).and_then(|m| m.sf)
    }

    fn deal(&self, deal_id: &str) -> Option<crate::crm::KnownDeal> {
        let d = self.live_deal(key(deal_id))?;
        Some(crate::crm::KnownDeal {
            opened: d.opened,
            closed: d.closed,
            amount: d.amount,
            stage: d
                .stage
                .and_then(|s| self.cfg.stages.get(s as usize).cloned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A name's packed form is its bytes, zero-padded, and its length.
        #[test]
        fn a_packed_name_is_its_bytes(b in prop::collection::vec(any::<u8>(), 0..20)) {
            let mut padded = [0u8; 16];
            let fits = (1..=16).contains(&b.len());
            if fits {
                padded[..b.len()].copy_from_slice(&b);
            }
            let want = fits.then(|| Packed {
                lo: u64::from_le_bytes(padded[..8].try_into().unwrap()),
                hi: u64::from_le_bytes(padded[8..].try_into().unwrap()),
                len: b.len() as u8,
            });
            prop_assert_eq!(Packed::of(&b), want);
        }
    }

    /// Names found through the cache are the names interned, whichever
    /// of them share a cache slot.
    #[test]
    fn names_are_found_with_and_without_the_cache() {
        let mut names = Names::default();
        let all: Vec<String> = (0..500).map(|i| format!("rep-{i:04}")).collect();
        let ids: Vec<u32> = all.iter().map(|n| names.intern(n)).collect();
        for _ in 0..2 {
            for (n, &id) in all.iter().zip(&ids) {
                assert_eq!(names.find(n), Some(id));
                assert_eq!(names.name(id), n);
            }
        }
        assert_eq!(names.find("rep-9999"), None);
        assert_eq!(names.find("rep-0001\0"), None);
    }
}

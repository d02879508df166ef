//! A deterministic, seeded generator of a realistic stream of canonical
//! events (`events.md`), for benchmarks, `kpistream simulate` and demos.
//!
//! A [`Simulator`] plays a few teams of reps working a pipeline: leads are
//! created, called, e-mailed and met; some convert into deals that move
//! through the stages and close won or lost; won deals start subscriptions
//! that change, are surveyed and end; reps log time, teams record spend, and
//! every rep gets a month and a quarter quota at the start and at each new
//! month. Event time starts at [`SimConfig::start`] and advances by
//! exponential gaps of mean `1 / events_per_second`; each tick emits the
//! earliest lifecycle step that is due (a meeting's outcome, a deal's next
//! stage, ...) or else a new activity, so the event clock never goes back
//! except for deliberate late deliveries.
//!
//! Every entity finishes its lifecycle within weeks of event time (a deal
//! closes within 36 days, an account ends within 72), so the simulator's
//! memory, and a consumer's, stays bounded over any number of messages. Each
//! rep's open entities are also capped: at very high event rates a rep lets
//! random leads go cold early and stops booking meetings until some are due.
//! Lifecycles run in event time, so a stream needs days of event time (a rate
//! of about 1 event a second or less for a million events) to show deals
//! closing and subscriptions.
//!
//! Messages are keyed as events.md asks; with [`SimConfig::faults`] about 2%
//! of them are redeliveries, late deliveries, unknown types and malformed
//! messages. It is pure: no I/O, no clock reads, and the same config always
//! gives the same bytes.

use std::collections::{BTreeMap, BinaryHeap};
use std::ops::Range;

const MS: i64 = 1_000;
const SECOND: i64 = 1_000_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// 2026-03-01T00:00:00Z in microseconds since the Unix epoch.
const DEFAULT_START: i64 = 1_772_323_200 * SECOND;

/// Share of messages that are faults when [`SimConfig::faults`] is set.
const FAULT_RATE: f64 = 0.02;

/// Caps on each rep's open entities; at a cap the rep does other work.
const MAX_LEADS: usize = 4096;
const MAX_DEALS: u32 = 2048;
const MAX_MEETINGS: u32 = 1024;
const MAX_ACCOUNTS: u32 = 2048;
/// A deal still open after this many steps is closed lost.
const MAX_DEAL_STEPS: u8 = 12;
/// An account ends after at most this many steps.
const MAX_ACCOUNT_STEPS: u8 = 6;
/// How many recent messages a redelivery fault may copy.
const RECENT: usize = 64;

const STAGES: [&str; 5] = [
    "prospecting",
    "qualification",
    "demo",
    "proposal",
    "negotiation",
];
const CURRENCIES: [&str; 3] = ["USD", "EUR", "GBP"];
const LOST_REASONS: [&str; 5] = [
    "competitor",
    "no_budget",
    "no_decision",
    "timing",
    "lost_contact",
];
const UNKNOWN_TYPES: [&str; 3] = ["note.added", "task.created", "contact.updated"];
/// UTC offsets in minutes that some producers write timestamps in.
const OFFSETS: [i32; 5] = [60, 120, -300, 540, 330];

/// What to simulate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    pub reps: usize,
    pub teams: usize,
    /// Event time of the first event, microseconds since the Unix epoch.
    pub start: i64,
    /// Event-time rate: the mean spacing of `occurred_at` is its inverse.
    pub events_per_second: f64,
    /// When set, about 2% of messages are faults: exact redeliveries of a
    /// recent message, late deliveries (up to 2 hours behind), unknown types
    /// and, about 0.1%, malformed messages (not JSON, no `occurred_at`, a
    /// negative amount).
    pub faults: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            reps: 16,
            teams: 3,
            start: DEFAULT_START,
            events_per_second: 1.0,
            faults: true,
        }
    }
}

/// One Kafka message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The key events.md asks for; `None` for malformed messages.
    pub key: Option<String>,
    /// One JSON object, no trailing newline.
    pub payload: Vec<u8>,
    /// The intended `occurred_at`, microseconds since the Unix epoch.
    pub at: i64,
}

/// xoshiro256** seeded by splitmix64.
#[derive(Debug, Clone)]
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in `lo..hi` (hi > lo).
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo) as u64) as i64
    }
}

/// A lifecycle step due at some event time.
#[derive(Debug, Clone, Copy)]
enum Action {
    Quota {
        rep: u32,
        quarter: bool,
    },
    MonthStart,
    /// A lead's slot and number: stale once the lead was dropped early.
    LeadFate(u32, u64),
    DealCreated(u32),
    DealStep(u32),
    MeetingStep(u32),
    AccountStarted(u32),
    AccountStep(u32),
}

#[derive(Debug)]
struct Timer {
    due: i64,
    seq: u64,
    action: Action,
}

// Ordered so that the max-heap pops the earliest (due, seq) first.
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Timer {}

/// Entities by index, with reuse of freed slots.
#[derive(Debug)]
struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    fn new() -> Self {
        Slab {
            items: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    fn insert(&mut self, t: T) -> u32 {
        self.len += 1;
        match self.free.pop() {
            Some(i) => {
                self.items[i as usize] = Some(t);
                i
            }
            None => {
                self.items.push(Some(t));
                (self.items.len() - 1) as u32
            }
        }
    }

    fn remove(&mut self, i: u32) -> T {
        let t = self.items[i as usize]
            .take()
            .expect("a timer names a live entity");
        self.free.push(i);
        self.len -= 1;
        t
    }

    fn try_get(&self, i: u32) -> Option<&T> {
        self.items.get(i as usize).and_then(Option::as_ref)
    }

    fn get(&self, i: u32) -> &T {
        self.items[i as usize]
            .as_ref()
            .expect("a timer names a live entity")
    }

    fn get_mut(&mut self, i: u32) -> &mut T {
        self.items[i as usize]
            .as_mut()
            .expect("a timer names a live entity")
    }
}

#[derive(Debug)]
struct Lead {
    rep: u32,
    n: u64,
    /// Position in the rep's `leads` pool.
    pos: u32,
    meetings: u8,
}

#[derive(Debug)]
struct Deal {
    rep: u32,
    n: u64,
    /// Position in the rep's `deals` pool once created, else `u32::MAX`.
    pos: u32,
    stage: u8,
    cents: u64,
    currency: u8,
    steps: u8,
}

#[derive(Debug, Clone, Copy)]
enum MeetingNext {
    Held,
    NoShow,
    Canceled,
    Rescheduled,
}

#[derive(Debug)]
struct Meeting {
    rep: u32,
    n: u64,
    scheduled_for: i64,
    moves: u8,
    next: MeetingNext,
}

#[derive(Debug)]
struct Account {
    rep: u32,
    n: u64,
    /// Position in `account_pool` once started, else `u32::MAX`.
    pos: u32,
    cents: u64,
    currency: u8,
    steps: u8,
}

#[derive(Debug)]
struct Rep {
    id: String,
    team: usize,
    /// Open leads and created open deals, for picking activity targets.
    leads: Vec<u32>,
    deals: Vec<u32>,
    open_deals: u32,
    meetings: u32,
    accounts: u32,
}

/// A recent message a redelivery fault may copy byte for byte.
#[derive(Debug, Default)]
struct Sent {
    key: Option<String>,
    payload: Vec<u8>,
    at: i64,
}

/// What a call or e-mail is about.
#[derive(Debug, Clone, Copy)]
enum Target {
    None,
    Lead(u32),
    Deal(u32),
}

/// The simulated CRM. See the module documentation.
#[derive(Debug)]
pub struct Simulator {
    cfg: SimConfig,
    rng: Rng,
    /// Mean gap between events, microseconds.
    mean_gap: f64,
    /// Event time since `cfg.start`, microseconds, before rounding.
    elapsed: f64,
    now: i64,
    started: bool,
    /// Messages with an event id so far; the last id's number.
    seq: u64,
    timer_seq: u64,
    timers: BinaryHeap<Timer>,
    /// Fate timers of leads dropped early, still in `timers`.
    stale_timers: usize,
    reps: Vec<Rep>,
    teams: Vec<String>,
    /// Cumulative activity weights of the reps.
    rep_weights: Vec<u64>,
    leads: Slab<Lead>,
    deals: Slab<Deal>,
    meetings: Slab<Meeting>,
    accounts: Slab<Account>,
    account_pool: Vec<u32>,
    next_lead: u64,
    next_meeting: u64,
    next_account: u64,
    recent: Vec<Sent>,
    recent_next: usize,
}

impl Simulator {
    pub fn new(cfg: SimConfig) -> Self {
        let n_reps = cfg.reps.max(1);
        let n_teams = cfg.teams.max(1);
        let rate = if cfg.events_per_second.is_finite() && cfg.events_per_second > 0.0 {
            cfg.events_per_second
        } else {
            1.0
        };
        let mut rng = Rng::new(cfg.seed);
        let teams = (0..n_teams).map(|t| format!("team-{t:02}")).collect();
        let mut reps = Vec::with_capacity(n_reps);
        let mut rep_weights = Vec::with_capacity(n_reps);
        let mut total = 0;
        for i in 0..n_reps {
            reps.push(Rep {
                id: format!("rep-{i:04}"),
                team: i % n_teams,
                leads: Vec::new(),
                deals: Vec::new(),
                open_deals: 0,
                meetings: 0,
                accounts: 0,
            });
            // Some reps are busier than others: weights 50..=150.
            total += 50 + rng.below(101);
            rep_weights.push(total);
        }
        let mut sim = Simulator {
            cfg,
            rng,
            mean_gap: SECOND as f64 / rate,
            elapsed: 0.0,
            now: cfg.start,
            started: false,
            seq: 0,
            timer_seq: 0,
            timers: BinaryHeap::new(),
            stale_timers: 0,
            reps,
            teams,
            rep_weights,
            leads: Slab::new(),
            deals: Slab::new(),
            meetings: Slab::new(),
            accounts: Slab::new(),
            account_pool: Vec::new(),
            next_lead: 0,
            next_meeting: 0,
            next_account: 0,
            recent: Vec::new(),
            recent_next: 0,
        };
        for rep in 0..n_reps as u32 {
            for quarter in [false, true] {
                sim.schedule(cfg.start, Action::Quota { rep, quarter });
            }
        }
        sim.schedule(next_month(cfg.start), Action::MonthStart);
        sim
    }

    /// The next message. The stream never ends.
    pub fn next_message(&mut self) -> Message {
        if self.cfg.faults && self.started && self.rng.chance(FAULT_RATE) {
            if let Some(m) = self.fault() {
                return m;
            }
        }
        self.tick();
        let msg = loop {
            if self.timers.peek().is_none_or(|t| t.due > self.now) {
                break self.spontaneous();
            }
            let due = self.timers.pop().expect("peeked");
            if let Some(m) = self.run(due) {
                break m;
            }
        };
        if self.cfg.faults {
            self.remember(&msg);
        }
        msg
    }

    /// Rep id to team id: the `teams` map to configure for this stream.
    pub fn teams(&self) -> BTreeMap<String, String> {
        self.reps
            .iter()
            .map(|r| (r.id.clone(), self.teams[r.team].clone()))
            .collect()
    }

    /// Every rep id, in order.
    pub fn rep_ids(&self) -> Vec<String> {
        self.reps.iter().map(|r| r.id.clone()).collect()
    }

    /// Open leads, deals, meetings and accounts the simulator tracks.
    pub fn live_entities(&self) -> usize {
        self.leads.len + self.deals.len + self.meetings.len + self.accounts.len
    }

    fn tick(&mut self) {
        if self.started {
            let u = self.rng.unit();
            self.elapsed -= (1.0 - u).ln() * self.mean_gap;
        }
        self.started = true;
        self.now = self.cfg.start + (self.elapsed as i64 / MS) * MS;
    }

    fn schedule(&mut self, due: i64, action: Action) {
        self.timer_seq += 1;
        self.timers.push(Timer {
            due,
            seq: self.timer_seq,
            action,
        });
    }

    /// Now plus a random whole number of milliseconds in `lo..hi`.
    fn after(&mut self, lo: i64, hi: i64) -> i64 {
        self.now + self.rng.between(lo / MS, hi / MS) * MS
    }

    fn pick_rep(&mut self) -> u32 {
        let total = *self.rep_weights.last().expect("at least one rep");
        let x = self.rng.below(total);
        self.rep_weights.partition_point(|&w| w <= x) as u32
    }

    fn rep(&self, rep: u32) -> &Rep {
        &self.reps[rep as usize]
    }

    /// The rep's team about 70% of the time.
    fn some_team(&mut self, rep: u32) -> Option<usize> {
        if self.rng.below(10) < 7 {
            Some(self.rep(rep).team)
        } else {
            None
        }
    }

    /// Starts a message: `{"id":..,"type":..,"occurred_at":..[,"team_id":..]`.
    fn begin(&mut self, kind: &str, at: i64, team: Option<usize>) -> Vec<u8> {
        self.seq += 1;
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(br#"{"id":"sim-"#);
        push_u64(&mut b, self.cfg.seed);
        b.push(b'-');
        push_u64(&mut b, self.seq);
        b.extend_from_slice(br#"","type":""#);
        b.extend_from_slice(kind.as_bytes());
        b.extend_from_slice(br#"","occurred_at":""#);
        let offset = if self.rng.below(100) < 5 {
            OFFSETS[self.rng.index(OFFSETS.len())]
        } else {
            0
        };
        push_timestamp(&mut b, at, offset);
        b.push(b'"');
        if let Some(t) = team {
            str_field(&mut b, "team_id", &self.teams[t]);
        }
        b
    }

    fn rep_field(&self, b: &mut Vec<u8>, rep: u32) -> Range<usize> {
        str_field(b, "rep_id", &self.rep(rep).id)
    }

    fn lead_field(&self, b: &mut Vec<u8>, rep: u32, n: u64) -> Range<usize> {
        id_field(b, "lead_id", "lead-", Some(&self.rep(rep).id), n)
    }

    fn deal_field(&self, b: &mut Vec<u8>, rep: u32, n: u64) -> Range<usize> {
        id_field(b, "deal_id", "deal-", Some(&self.rep(rep).id), n)
    }

    fn meeting_field(&self, b: &mut Vec<u8>, rep: u32, n: u64) -> Range<usize> {
        id_field(b, "meeting_id", "mt-", Some(&self.rep(rep).id), n)
    }

    fn money_fields(&mut self, b: &mut Vec<u8>, name: &str, cents: u64, currency: u8) {
        num_field(b, name);
        push_cents(b, cents);
        // A missing currency means the base (USD): leave it out half the time.
        if currency != 0 || self.rng.below(2) == 0 {
            str_field(b, "currency", CURRENCIES[currency as usize]);
        }
    }

    fn currency(&mut self) -> u8 {
        match self.rng.below(10) {
            0..7 => 0,
            7..9 => 1,
            _ => 2,
        }
    }

    fn run(&mut self, t: Timer) -> Option<Message> {
        match t.action {
            Action::Quota { rep, quarter } => Some(self.quota(rep, quarter)),
            Action::MonthStart => {
                let (_, month, _) = civil_from_days(t.due.div_euclid(DAY));
                for rep in 0..self.reps.len() as u32 {
                    let due = self.after(0, 30 * MINUTE);
                    self.schedule(
                        due,
                        Action::Quota {
                            rep,
                            quarter: false,
                        },
                    );
                    if month % 3 == 1 {
                        let due = self.after(0, 30 * MINUTE);
                        self.schedule(due, Action::Quota { rep, quarter: true });
                    }
                }
                self.schedule(next_month(t.due), Action::MonthStart);
                None
            }
            Action::LeadFate(i, n) => {
                if self.leads.try_get(i).is_some_and(|l| l.n == n) {
                    self.lead_fate(i)
                } else {
                    self.stale_timers -= 1;
                    None
                }
            }
            Action::DealCreated(i) => Some(self.deal_created(i)),
            Action::DealStep(i) => Some(self.deal_step(i)),
            Action::MeetingStep(i) => Some(self.meeting_step(i)),
            Action::AccountStarted(i) => Some(self.account_started(i)),
            Action::AccountStep(i) => Some(self.account_step(i)),
        }
    }

    fn spontaneous(&mut self) -> Message {
        let rep = self.pick_rep();
        match self.rng.below(1000) {
            0..230 => self.new_lead(rep),
            230..530 => self.call(rep, self.now, true),
            530..730 => self.email(rep),
            730..930 => self.time_logged(rep, self.now),
            930..985 => self.schedule_meeting(rep),
            985..995 => self.survey(rep),
            _ => self.spend(rep),
        }
    }

    fn quota(&mut self, rep: u32, quarter: bool) -> Message {
        let team = self.some_team(rep);
        let mut b = self.begin("quota.set", self.now, team);
        let key = self.rep_field(&mut b, rep);
        let (period, thousands) = if quarter {
            ("quarter", self.rng.between(80, 181))
        } else {
            ("month", self.rng.between(25, 61))
        };
        str_field(&mut b, "period", period);
        self.money_fields(&mut b, "amount", thousands as u64 * 100_000, 0);
        self.finish(b, key)
    }

    fn new_lead(&mut self, rep: u32) -> Message {
        let open = self.rep(rep).leads.len();
        if open >= MAX_LEADS {
            // A saturated rep lets a random lead go cold early; its fate
            // timer goes stale and is dropped when popped or in a purge.
            let k = self.rng.index(open);
            let victim = self.rep(rep).leads[k];
            self.take_lead(victim);
            self.stale_timers += 1;
            if self.stale_timers > self.timers.len() / 2 + 1024 {
                let leads = &self.leads;
                self.timers.retain(|t| match t.action {
                    Action::LeadFate(i, n) => leads.try_get(i).is_some_and(|l| l.n == n),
                    _ => true,
                });
                self.stale_timers = 0;
            }
        }
        let n = self.next_lead;
        self.next_lead += 1;
        let pos = self.rep(rep).leads.len() as u32;
        let i = self.leads.insert(Lead {
            rep,
            n,
            pos,
            meetings: 0,
        });
        self.reps[rep as usize].leads.push(i);
        let fate = self.after(DAY, 5 * DAY);
        self.schedule(fate, Action::LeadFate(i, n));
        let team = self.some_team(rep);
        let mut b = self.begin("lead.created", self.now, team);
        let key = self.lead_field(&mut b, rep, n);
        self.rep_field(&mut b, rep);
        self.finish(b, key)
    }

    /// A lead converts (more likely after a meeting) or silently goes cold.
    fn lead_fate(&mut self, i: u32) -> Option<Message> {
        let lead = self.take_lead(i);
        let rep = lead.rep;
        let p = if lead.meetings > 0 { 0.35 } else { 0.06 };
        if !self.rng.chance(p) || self.rep(rep).open_deals >= MAX_DEALS {
            return None;
        }
        // Deal sizes are log-uniform between 2,000 and 120,000.
        let units = (2_000f64.ln() + self.rng.unit() * 60f64.ln()).exp();
        let currency = self.currency();
        let d = self.deals.insert(Deal {
            rep,
            n: lead.n,
            pos: u32::MAX,
            stage: 0,
            cents: (units * 100.0) as u64,
            currency,
            steps: 0,
        });
        self.reps[rep as usize].open_deals += 1;
        self.schedule(self.now, Action::DealCreated(d));
        let team = self.some_team(rep);
        let mut b = self.begin("lead.converted", self.now, team);
        let key = self.lead_field(&mut b, rep, lead.n);
        self.deal_field(&mut b, rep, lead.n);
        self.rep_field(&mut b, rep);
        Some(self.finish(b, key))
    }

    /// Removes a lead from the slab and from its rep's pool.
    fn take_lead(&mut self, i: u32) -> Lead {
        let lead = self.leads.remove(i);
        let pool = &mut self.reps[lead.rep as usize].leads;
        pool.swap_remove(lead.pos as usize);
        if let Some(&moved) = pool.get(lead.pos as usize) {
            self.leads.get_mut(moved).pos = lead.pos;
        }
        lead
    }

    fn pick_target(&mut self, rep: u32, deal_share: u64) -> Target {
        let r = self.rep(rep);
        let (n_leads, n_deals) = (r.leads.len(), r.deals.len());
        if n_deals > 0 && (n_leads == 0 || self.rng.below(100) < deal_share) {
            let k = self.rng.index(n_deals);
            Target::Deal(self.rep(rep).deals[k])
        } else if n_leads > 0 {
            let k = self.rng.index(n_leads);
            Target::Lead(self.rep(rep).leads[k])
        } else {
            Target::None
        }
    }

    /// Writes the target's id field; returns the key range for a lead.
    fn target_field(&self, b: &mut Vec<u8>, rep: u32, target: Target) -> Option<Range<usize>> {
        match target {
            Target::Lead(i) => Some(self.lead_field(b, rep, self.leads.get(i).n)),
            Target::Deal(i) => {
                self.deal_field(b, rep, self.deals.get(i).n);
                None
            }
            Target::None => None,
        }
    }

    fn call(&mut self, rep: u32, at: i64, with_target: bool) -> Message {
        let target = if with_target {
            self.pick_target(rep, 20)
        } else {
            Target::None
        };
        let (outcome, tenths) = match self.rng.below(100) {
            0..30 => ("connected", self.rng.between(600, 18_000)),
            30..65 => ("no_answer", self.rng.between(0, 300)),
            65..85 => ("voicemail", self.rng.between(200, 900)),
            85..93 => ("busy", self.rng.between(0, 100)),
            _ => ("other", self.rng.between(0, 3_000)),
        };
        let team = self.some_team(rep);
        let mut b = self.begin("call.logged", at, team);
        num_field(&mut b, "call_id");
        b.extend_from_slice(b"\"c-");
        push_u64(&mut b, self.seq);
        b.push(b'"');
        let rep_key = self.rep_field(&mut b, rep);
        let key = self.target_field(&mut b, rep, target).unwrap_or(rep_key);
        num_field(&mut b, "duration_seconds");
        push_tenths(&mut b, tenths as u64);
        str_field(&mut b, "outcome", outcome);
        self.finish(b, key)
    }

    fn email(&mut self, rep: u32) -> Message {
        let target = self.pick_target(rep, 15);
        let team = self.some_team(rep);
        let mut b = self.begin("email.sent", self.now, team);
        num_field(&mut b, "email_id");
        b.extend_from_slice(b"\"m-");
        push_u64(&mut b, self.seq);
        b.push(b'"');
        let rep_key = self.rep_field(&mut b, rep);
        let key = self.target_field(&mut b, rep, target).unwrap_or(rep_key);
        self.finish(b, key)
    }

    fn time_logged(&mut self, rep: u32, at: i64) -> Message {
        let category = match self.rng.below(10) {
            0..5 => "selling",
            5..8 => "admin",
            _ => "other",
        };
        let seconds = self.rng.between(300, 3 * 3600) as u64;
        let team = self.some_team(rep);
        let mut b = self.begin("time.logged", at, team);
        let key = self.rep_field(&mut b, rep);
        str_field(&mut b, "category", category);
        num_field(&mut b, "duration_seconds");
        push_u64(&mut b, seconds);
        self.finish(b, key)
    }

    fn schedule_meeting(&mut self, rep: u32) -> Message {
        if self.rep(rep).meetings >= MAX_MEETINGS {
            return self.call(rep, self.now, true);
        }
        let target = self.pick_target(rep, 30);
        match target {
            Target::None => return self.new_lead(rep),
            Target::Lead(i) => {
                let lead = self.leads.get_mut(i);
                if lead.meetings > 0 {
                    return self.call(rep, self.now, true);
                }
                lead.meetings += 1;
            }
            Target::Deal(_) => {}
        }
        let n = self.next_meeting;
        self.next_meeting += 1;
        let scheduled_for = self.after(2 * HOUR, 4 * DAY);
        let m = self.meetings.insert(Meeting {
            rep,
            n,
            scheduled_for,
            moves: 0,
            next: MeetingNext::Held,
        });
        self.reps[rep as usize].meetings += 1;
        self.plan_meeting(m);
        let team = self.some_team(rep);
        let mut b = self.begin("meeting.scheduled", self.now, team);
        let key = self.meeting_field(&mut b, rep, n);
        self.rep_field(&mut b, rep);
        ts_field(&mut b, "scheduled_for", scheduled_for);
        self.target_field(&mut b, rep, target);
        self.finish(b, key)
    }

    /// Decides what happens next to a meeting, and when.
    fn plan_meeting(&mut self, m: u32) {
        let (scheduled_for, moves) = {
            let mt = self.meetings.get(m);
            (mt.scheduled_for, mt.moves)
        };
        let r = self.rng.below(100);
        let (next, due) = if r < 18 && (r >= 8 || moves < 2) {
            // Rescheduled or canceled some time before it was due.
            let next = if r < 8 {
                MeetingNext::Rescheduled
            } else {
                MeetingNext::Canceled
            };
            let lead = (scheduled_for - self.now).max(MS);
            (next, self.after(0, lead))
        } else {
            let next = if r < 27 {
                MeetingNext::NoShow
            } else {
                MeetingNext::Held
            };
            let logged = self.rng.between(0, HOUR / MS) * MS;
            (next, scheduled_for.max(self.now) + logged)
        };
        self.meetings.get_mut(m).next = next;
        self.schedule(due, Action::MeetingStep(m));
    }

    fn meeting_step(&mut self, m: u32) -> Message {
        let (rep, n, next) = {
            let mt = self.meetings.get(m);
            (mt.rep, mt.n, mt.next)
        };
        let team = self.some_team(rep);
        if let MeetingNext::Rescheduled = next {
            let scheduled_for = self.after(2 * HOUR, 4 * DAY);
            let mt = self.meetings.get_mut(m);
            mt.scheduled_for = scheduled_for;
            mt.moves += 1;
            self.plan_meeting(m);
            let mut b = self.begin("meeting.rescheduled", self.now, team);
            let key = self.meeting_field(&mut b, rep, n);
            ts_field(&mut b, "scheduled_for", scheduled_for);
            return self.finish(b, key);
        }
        self.meetings.remove(m);
        self.reps[rep as usize].meetings -= 1;
        let kind = match next {
            MeetingNext::Held => "meeting.held",
            MeetingNext::NoShow => "meeting.no_show",
            _ => "meeting.canceled",
        };
        let mut b = self.begin(kind, self.now, team);
        let key = self.meeting_field(&mut b, rep, n);
        if matches!(next, MeetingNext::Held) && self.rng.below(10) < 8 {
            self.rep_field(&mut b, rep);
        }
        self.finish(b, key)
    }

    fn deal_created(&mut self, d: u32) -> Message {
        let rep = self.deals.get(d).rep;
        let pool = &mut self.reps[rep as usize].deals;
        let pos = pool.len() as u32;
        pool.push(d);
        let deal = self.deals.get_mut(d);
        deal.pos = pos;
        let (n, cents, currency) = (deal.n, deal.cents, deal.currency);
        let next = self.after(12 * HOUR, 3 * DAY);
        self.schedule(next, Action::DealStep(d));
        let team = self.some_team(rep);
        let mut b = self.begin("deal.created", self.now, team);
        let key = self.deal_field(&mut b, rep, n);
        self.rep_field(&mut b, rep);
        self.money_fields(&mut b, "amount", cents, currency);
        str_field(&mut b, "stage", STAGES[0]);
        self.finish(b, key)
    }

    /// Moves a deal on: a stage change (now and then backwards), a new
    /// amount, or closing it. A closed deal gets no more events.
    fn deal_step(&mut self, d: u32) -> Message {
        let (rep, n, stage, cents, currency, steps) = {
            let deal = self.deals.get_mut(d);
            deal.steps += 1;
            (
                deal.rep,
                deal.n,
                deal.stage,
                deal.cents,
                deal.currency,
                deal.steps,
            )
        };
        let last = STAGES.len() as u8 - 1;
        let r = self.rng.below(100);
        let team = self.some_team(rep);
        if stage == last || steps >= MAX_DEAL_STEPS || r < 7 {
            let won = stage == last && self.rng.below(100) < 60;
            return self.close_deal(d, won, team);
        }
        let next = self.after(12 * HOUR, 3 * DAY);
        self.schedule(next, Action::DealStep(d));
        if r < 17 {
            let factor = 0.7 + 0.6 * self.rng.unit();
            let cents = ((cents as f64 * factor) as u64).max(100_000);
            self.deals.get_mut(d).cents = cents;
            let mut b = self.begin("deal.amount_changed", self.now, team);
            let key = self.deal_field(&mut b, rep, n);
            self.money_fields(&mut b, "amount", cents, currency);
            return self.finish(b, key);
        }
        let to = if r < 23 && stage >= 1 {
            stage - 1
        } else if r < 35 && stage + 2 <= last {
            stage + 2
        } else {
            stage + 1
        };
        self.deals.get_mut(d).stage = to;
        let mut b = self.begin("deal.stage_changed", self.now, team);
        let key = self.deal_field(&mut b, rep, n);
        str_field(&mut b, "from_stage", STAGES[stage as usize]);
        str_field(&mut b, "to_stage", STAGES[to as usize]);
        if self.rng.below(10) < 6 {
            self.rep_field(&mut b, rep);
        }
        self.finish(b, key)
    }

    fn close_deal(&mut self, d: u32, won: bool, team: Option<usize>) -> Message {
        let deal = self.deals.remove(d);
        let rep = deal.rep;
        let r = &mut self.reps[rep as usize];
        r.open_deals -= 1;
        r.deals.swap_remove(deal.pos as usize);
        if let Some(&moved) = r.deals.get(deal.pos as usize) {
            self.deals.get_mut(moved).pos = deal.pos;
        }
        if won && self.rep(rep).accounts < MAX_ACCOUNTS && self.rng.below(10) < 7 {
            let n = self.next_account;
            self.next_account += 1;
            let share = 0.04 + 0.06 * self.rng.unit();
            let a = self.accounts.insert(Account {
                rep,
                n,
                pos: u32::MAX,
                cents: ((deal.cents as f64 * share) as u64).max(5_000),
                currency: deal.currency,
                steps: 0,
            });
            self.reps[rep as usize].accounts += 1;
            let start = self.after(HOUR, 2 * DAY);
            self.schedule(start, Action::AccountStarted(a));
        }
        let kind = if won { "deal.won" } else { "deal.lost" };
        let mut b = self.begin(kind, self.now, team);
        let key = self.deal_field(&mut b, rep, deal.n);
        if won {
            self.money_fields(&mut b, "amount", deal.cents, deal.currency);
            if self.rng.below(10) < 8 {
                self.rep_field(&mut b, rep);
            }
        } else {
            let reason = LOST_REASONS[self.rng.index(LOST_REASONS.len())];
            str_field(&mut b, "reason", reason);
            if self.rng.below(2) == 0 {
                self.rep_field(&mut b, rep);
            }
        }
        self.finish(b, key)
    }

    fn account_started(&mut self, a: u32) -> Message {
        let pos = self.account_pool.len() as u32;
        self.account_pool.push(a);
        let acct = self.accounts.get_mut(a);
        acct.pos = pos;
        let (rep, n, cents, currency) = (acct.rep, acct.n, acct.cents, acct.currency);
        let next = self.after(3 * DAY, 12 * DAY);
        self.schedule(next, Action::AccountStep(a));
        let team = self.some_team(rep);
        let mut b = self.begin("subscription.started", self.now, team);
        let key = id_field(&mut b, "account_id", "acct-", None, n);
        self.money_fields(&mut b, "mrr", cents, currency);
        self.rep_field(&mut b, rep);
        self.finish(b, key)
    }

    /// An account's plan changes, it answers a survey, or it ends.
    fn account_step(&mut self, a: u32) -> Message {
        let (rep, n, cents, currency, steps) = {
            let acct = self.accounts.get_mut(a);
            acct.steps += 1;
            (acct.rep, acct.n, acct.cents, acct.currency, acct.steps)
        };
        let team = self.some_team(rep);
        let r = self.rng.below(100);
        if steps >= MAX_ACCOUNT_STEPS || r < 10 {
            let acct = self.accounts.remove(a);
            self.reps[rep as usize].accounts -= 1;
            self.account_pool.swap_remove(acct.pos as usize);
            if let Some(&moved) = self.account_pool.get(acct.pos as usize) {
                self.accounts.get_mut(moved).pos = acct.pos;
            }
            let kind = if self.rng.below(10) < 6 {
                "subscription.canceled"
            } else {
                "customer.churned"
            };
            let mut b = self.begin(kind, self.now, team);
            let key = id_field(&mut b, "account_id", "acct-", None, n);
            if self.rng.below(10) < 3 {
                self.rep_field(&mut b, rep);
            }
            return self.finish(b, key);
        }
        let next = self.after(3 * DAY, 12 * DAY);
        self.schedule(next, Action::AccountStep(a));
        if r < 55 {
            let factor = 0.6 + 1.0 * self.rng.unit();
            let cents = ((cents as f64 * factor) as u64).max(5_000);
            self.accounts.get_mut(a).cents = cents;
            let mut b = self.begin("subscription.changed", self.now, team);
            let key = id_field(&mut b, "account_id", "acct-", None, n);
            self.money_fields(&mut b, "mrr", cents, currency);
            self.rep_field(&mut b, rep);
            return self.finish(b, key);
        }
        self.survey_about(rep, Some(n), team)
    }

    fn survey(&mut self, rep: u32) -> Message {
        if !self.account_pool.is_empty() && self.rng.below(10) < 6 {
            let a = self.account_pool[self.rng.index(self.account_pool.len())];
            let acct = self.accounts.get(a);
            let (rep, n) = (acct.rep, acct.n);
            let team = self.some_team(rep);
            return self.survey_about(rep, Some(n), team);
        }
        let team = self.some_team(rep);
        self.survey_about(rep, None, team)
    }

    fn survey_about(&mut self, rep: u32, account: Option<u64>, team: Option<usize>) -> Message {
        // Scores lean positive, as they do.
        let (kind, score) = if self.rng.below(2) == 0 {
            let score = match self.rng.below(10) {
                0..2 => self.rng.below(7),
                2..5 => 7 + self.rng.below(2),
                _ => 9 + self.rng.below(2),
            };
            ("nps", score)
        } else {
            ("csat", (1 + self.rng.below(5)).max(2 + self.rng.below(4)))
        };
        let mut b = self.begin("survey.responded", self.now, team);
        str_field(&mut b, "kind", kind);
        num_field(&mut b, "score");
        push_u64(&mut b, score);
        let rep_key = self.rep_field(&mut b, rep);
        let key = match account {
            Some(n) => id_field(&mut b, "account_id", "acct-", None, n),
            None => rep_key,
        };
        self.finish(b, key)
    }

    /// Acquisition cost, always for a team.
    fn spend(&mut self, rep: u32) -> Message {
        let team = self.rep(rep).team;
        let category = if self.rng.below(2) == 0 {
            "sales"
        } else {
            "marketing"
        };
        let cents = self.rng.between(20_000, 2_000_000) as u64;
        let currency = if self.rng.below(10) == 0 { 1 } else { 0 };
        let mut b = self.begin("spend.recorded", self.now, Some(team));
        self.money_fields(&mut b, "amount", cents, currency);
        str_field(&mut b, "category", category);
        let key = self.teams[team].clone();
        self.finish_with(b, key)
    }

    /// Closes the JSON object; the key is the text of `key` in the payload.
    fn finish(&self, b: Vec<u8>, key: Range<usize>) -> Message {
        let key = String::from_utf8_lossy(&b[key]).into_owned();
        self.finish_with(b, key)
    }

    fn finish_with(&self, mut b: Vec<u8>, key: String) -> Message {
        b.push(b'}');
        Message {
            key: Some(key),
            payload: b,
            at: self.now,
        }
    }

    fn remember(&mut self, msg: &Message) {
        if self.recent.len() < RECENT {
            self.recent.push(Sent::default());
        }
        let slot = &mut self.recent[self.recent_next];
        self.recent_next = (self.recent_next + 1) % RECENT;
        match (&mut slot.key, &msg.key) {
            (Some(k), Some(m)) => {
                k.clear();
                k.push_str(m);
            }
            (k, m) => *k = m.clone(),
        }
        slot.payload.clear();
        slot.payload.extend_from_slice(&msg.payload);
        slot.at = msg.at;
    }

    fn fault(&mut self) -> Option<Message> {
        let r = self.rng.below(1000);
        let rep = self.pick_rep();
        if r < 50 {
            return Some(self.malformed(rep));
        }
        if r < 450 {
            // An exact redelivery of a recent message, within the dedup horizon.
            if self.recent.is_empty() {
                return None;
            }
            let sent = &self.recent[self.rng.index(self.recent.len())];
            if sent.at < self.now - DAY {
                return None;
            }
            return Some(Message {
                key: sent.key.clone(),
                payload: sent.payload.clone(),
                at: sent.at,
            });
        }
        if r < 750 {
            // A late delivery: an activity that happened up to 2 hours ago.
            let late = (self.now - self.rng.between(1, 2 * 3600) * SECOND).max(self.cfg.start);
            let msg = if self.rng.below(2) == 0 {
                self.time_logged(rep, late)
            } else {
                self.call(rep, late, false)
            };
            let msg = Message { at: late, ..msg };
            self.remember(&msg);
            return Some(msg);
        }
        let kind = UNKNOWN_TYPES[self.rng.index(UNKNOWN_TYPES.len())];
        let team = self.some_team(rep);
        let mut b = self.begin(kind, self.now, team);
        let key = self.rep_field(&mut b, rep);
        Some(self.finish(b, key))
    }

    /// Not JSON, no `occurred_at`, or a negative amount; no key.
    fn malformed(&mut self, rep: u32) -> Message {
        let mut b = match self.rng.below(3) {
            0 => {
                let mut b = self.time_logged(rep, self.now).payload;
                b.truncate(b.len() / 2);
                b
            }
            1 => {
                self.seq += 1;
                let mut b = Vec::with_capacity(128);
                b.extend_from_slice(br#"{"id":"sim-"#);
                push_u64(&mut b, self.cfg.seed);
                b.push(b'-');
                push_u64(&mut b, self.seq);
                b.extend_from_slice(br#"","type":"lead.created""#);
                self.lead_field(&mut b, rep, self.seq);
                self.rep_field(&mut b, rep);
                b.push(b'}');
                b
            }
            _ => {
                let mut b = self.begin("deal.amount_changed", self.now, None);
                self.deal_field(&mut b, rep, u64::MAX);
                num_field(&mut b, "amount");
                b.push(b'-');
                push_cents(&mut b, self.rng.between(100, 1_000_000) as u64);
                b.push(b'}');
                b
            }
        };
        b.shrink_to_fit();
        Message {
            key: None,
            payload: b,
            at: self.now,
        }
    }
}

/// `,"name":"value"`; returns the range of `value`.
fn str_field(b: &mut Vec<u8>, name: &str, value: &str) -> Range<usize> {
    num_field(b, name);
    b.push(b'"');
    let start = b.len();
    b.extend_from_slice(value.as_bytes());
    let end = b.len();
    b.push(b'"');
    start..end
}

/// `,"name":"<prefix>[<rep>-]<n>"`; returns the range of the id.
fn id_field(b: &mut Vec<u8>, name: &str, prefix: &str, rep: Option<&str>, n: u64) -> Range<usize> {
    num_field(b, name);
    b.push(b'"');
    let start = b.len();
    b.extend_from_slice(prefix.as_bytes());
    if let Some(rep) = rep {
        b.extend_from_slice(rep.as_bytes());
        b.push(b'-');
    }
    push_u64(b, n);
    let end = b.len();
    b.push(b'"');
    start..end
}

fn ts_field(b: &mut Vec<u8>, name: &str, at: i64) {
    num_field(b, name);
    b.push(b'"');
    push_timestamp(b, at, 0);
    b.push(b'"');
}

/// `,"name":`, for a value written next.
fn num_field(b: &mut Vec<u8>, name: &str) {
    b.extend_from_slice(b",\"");
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(b"\":");
}

fn push_u64(b: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    b.extend_from_slice(&digits[i..]);
}

/// `v` as exactly `width` digits (v < 10^width).
fn push_padded(b: &mut Vec<u8>, v: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut v = v;
    for d in digits[..width].iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    b.extend_from_slice(&digits[..width]);
}

/// An amount with two decimals.
fn push_cents(b: &mut Vec<u8>, cents: u64) {
    push_u64(b, cents / 100);
    b.push(b'.');
    push_padded(b, cents % 100, 2);
}

/// A duration with one decimal.
fn push_tenths(b: &mut Vec<u8>, tenths: u64) {
    push_u64(b, tenths / 10);
    b.push(b'.');
    push_padded(b, tenths % 10, 1);
}

/// RFC 3339 at a UTC offset in minutes: milliseconds when `at` is a whole
/// millisecond, else microseconds.
fn push_timestamp(b: &mut Vec<u8>, at: i64, offset_minutes: i32) {
    let local = at + i64::from(offset_minutes) * MINUTE;
    let (y, m, d) = civil_from_days(local.div_euclid(DAY));
    let time = local.rem_euclid(DAY);
    push_padded(b, y.clamp(0, 9999) as u64, 4);
    b.push(b'-');
    push_padded(b, u64::from(m), 2);
    b.push(b'-');
    push_padded(b, u64::from(d), 2);
    b.push(b'T');
    let secs = (time / SECOND) as u64;
    push_padded(b, secs / 3600, 2);
    b.push(b':');
    push_padded(b, secs / 60 % 60, 2);
    b.push(b':');
    push_padded(b, secs % 60, 2);
    b.push(b'.');
    let micros = (time % SECOND) as u64;
    if micros % 1000 == 0 {
        push_padded(b, micros / 1000, 3);
    } else {
        push_padded(b, micros, 6);
    }
    if offset_minutes == 0 {
        b.push(b'Z');
    } else {
        b.push(if offset_minutes < 0 { b'-' } else { b'+' });
        let o = u64::from(offset_minutes.unsigned_abs());
        push_padded(b, o / 60, 2);
        b.push(b':');
        push_padded(b, o % 60, 2);
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) to days since 1970-01-01 (Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The first instant of the UTC month after the one holding `at`.
fn next_month(at: i64) -> i64 {
    let (y, m, _) = civil_from_days(at.div_euclid(DAY));
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(y, m, 1) * DAY
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use serde_json::Value;

    use super::*;
    use crate::config::{EngineConfig, Rates};
    use crate::event::{self, Body, ParseOptions, Parsed};
    use crate::processor::{IgnoreReason, Outcome, Processor};

    fn opts() -> ParseOptions {
        ParseOptions {
            max_message_bytes: 1 << 20,
            max_json_depth: 32,
            rates: Rates::default_table(),
        }
    }

    fn clean(events_per_second: f64) -> SimConfig {
        SimConfig {
            events_per_second,
            faults: false,
            ..SimConfig::default()
        }
    }

    /// The key events.md asks for, from the message itself.
    fn expected_key(v: &Value) -> Option<String> {
        let field = |f: &str| v.get(f).and_then(Value::as_str).map(str::to_owned);
        let ty = v.get("type")?.as_str()?;
        let entity = match ty.split('.').next()? {
            "lead" | "call" | "email" => field("lead_id"),
            "meeting" => field("meeting_id"),
            "deal" => field("deal_id"),
            "subscription" | "customer" | "survey" => field("account_id"),
            _ => None,
        };
        entity
            .or_else(|| field("rep_id"))
            .or_else(|| field("team_id"))
    }

    #[test]
    fn default_config_starts_on_the_first_of_march() {
        let cfg = SimConfig::default();
        assert_eq!(
            Some(cfg.start),
            event::parse_timestamp("2026-03-01T00:00:00Z")
        );
        assert_eq!((cfg.seed, cfg.reps, cfg.teams), (1, 16, 3));
        assert!(cfg.faults);
        let sim = Simulator::new(cfg);
        let teams = sim.teams();
        assert_eq!(sim.rep_ids().len(), 16);
        assert_eq!(teams.len(), 16);
        assert_eq!(teams["rep-0003"], "team-00");
        assert_eq!(teams.values().collect::<HashSet<_>>().len(), 3);
        assert_eq!(sim.rep_ids(), teams.keys().cloned().collect::<Vec<_>>());
    }

    #[test]
    fn same_seed_gives_the_same_bytes() {
        let mut a = Simulator::new(SimConfig::default());
        let mut b = Simulator::new(SimConfig::default());
        let mut c = Simulator::new(SimConfig {
            seed: 2,
            ..SimConfig::default()
        });
        let mut differs = false;
        for _ in 0..50_000 {
            let m = a.next_message();
            assert_eq!(m, b.next_message());
            differs |= m.payload != c.next_message().payload;
        }
        assert!(differs);
    }

    #[test]
    fn clean_stream_parses_keys_right_and_never_goes_back() {
        let mut sim = Simulator::new(clean(1.0));
        let opts = opts();
        let mut last = i64::MIN;
        let mut ids = HashSet::new();
        let mut closed_meetings = HashSet::new();
        for i in 0..200_000 {
            let m = sim.next_message();
            let Ok(Parsed::Event(e)) = event::parse(&m.payload, &opts) else {
                panic!("not an event: {}", String::from_utf8_lossy(&m.payload));
            };
            assert_eq!(e.at, m.at);
            assert!(m.at >= last, "occurred_at went back at message {i}");
            last = m.at;
            assert!(ids.insert(e.id.to_string()), "event id reused");
            match &e.body {
                Body::MeetingScheduled { meeting, .. }
                | Body::MeetingRescheduled { meeting, .. } => {
                    assert!(!closed_meetings.contains(&**meeting))
                }
                Body::MeetingHeld { meeting }
                | Body::MeetingNoShow { meeting }
                | Body::MeetingCanceled { meeting } => {
                    assert!(closed_meetings.insert(meeting.to_string()))
                }
                _ => {}
            }
            if i < 50_000 {
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                assert_eq!(m.key, expected_key(&v), "{v}");
            }
        }
    }

    #[test]
    fn every_type_occurs_and_is_keyed_by_its_entity() {
        let mut sim = Simulator::new(clean(0.05));
        let mut seen = BTreeMap::new();
        for _ in 0..150_000 {
            let m = sim.next_message();
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(m.key, expected_key(&v), "{v}");
            let ty = v["type"].as_str().unwrap().to_owned();
            *seen.entry(ty).or_insert(0u64) += 1;
        }
        assert_eq!(seen.len(), 22, "{seen:?}");
        let sample = |ty: &str| {
            let mut sim = Simulator::new(clean(0.05));
            loop {
                let m = sim.next_message();
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                if v["type"] == ty {
                    return (m.key.unwrap(), v);
                }
            }
        };
        let (key, v) = sample("deal.won");
        assert!(key.starts_with("deal-rep-") && v["deal_id"] == key);
        let (key, v) = sample("lead.converted");
        assert!(key.starts_with("lead-rep-") && v["lead_id"] == key);
        assert_eq!(v["deal_id"], format!("deal-{}", &key["lead-".len()..]));
        let (key, v) = sample("meeting.held");
        assert!(key.starts_with("mt-rep-") && v["meeting_id"] == key);
        let (key, v) = sample("customer.churned");
        assert!(key.starts_with("acct-") && v["account_id"] == key);
        let (key, v) = sample("spend.recorded");
        assert!(key.starts_with("team-") && v["team_id"] == key);
        let (key, v) = sample("time.logged");
        assert!(key.starts_with("rep-") && v["rep_id"] == key);
        let (_, v) = sample("deal.created");
        assert_eq!(v["stage"], "prospecting");
    }

    #[test]
    fn team_id_is_on_about_70_percent_of_events() {
        let mut sim = Simulator::new(clean(1.0));
        let n = 20_000;
        let with = (0..n)
            .filter(|_| {
                let m = sim.next_message();
                m.payload.windows(10).any(|w| w == b"\"team_id\":")
            })
            .count();
        let share = with as f64 / n as f64;
        assert!((0.65..0.75).contains(&share), "{share}");
    }

    #[test]
    fn faults_are_marked_by_their_key_and_each_kind_occurs() {
        let mut sim = Simulator::new(SimConfig::default());
        let opts = opts();
        let (mut dup, mut late, mut unknown, mut malformed) = (0, 0, 0, 0);
        let mut seen = HashSet::new();
        let mut latest = i64::MIN;
        let n = 200_000;
        for _ in 0..n {
            let m = sim.next_message();
            if !seen.insert(m.payload.clone()) {
                dup += 1;
                continue;
            }
            match (&m.key, event::parse(&m.payload, &opts)) {
                (None, Err(_)) => malformed += 1,
                (Some(_), Ok(Parsed::Unknown { .. })) => unknown += 1,
                (Some(_), Ok(Parsed::Event(e))) => {
                    assert_eq!(e.at, m.at);
                    if m.at < latest {
                        late += 1;
                        assert!(latest - m.at <= 2 * HOUR);
                    }
                }
                (key, parsed) => panic!("key {key:?} with {parsed:?}"),
            }
            latest = latest.max(m.at);
        }
        assert!(dup > 0 && late > 0 && unknown > 0 && malformed > 0);
        let faults = (dup + late + unknown + malformed) as f64 / n as f64;
        assert!((0.01..0.03).contains(&faults), "{faults}");
        assert!(malformed < n / 500, "{malformed}");
    }

    #[test]
    fn the_engine_applies_every_clean_message() {
        let mut sim = Simulator::new(clean(1.0));
        let mut p = Processor::new(EngineConfig::on_event_clock());
        for _ in 0..200_000 {
            let m = sim.next_message();
            let outcome = p.process(&m.payload, 0);
            assert_eq!(
                outcome,
                Outcome::Applied,
                "{}",
                String::from_utf8_lossy(&m.payload)
            );
        }
        assert_eq!(p.counts.applied, 200_000);
    }

    #[test]
    fn the_engine_sees_every_kind_of_fault() {
        let mut sim = Simulator::new(SimConfig {
            events_per_second: 0.2,
            ..SimConfig::default()
        });
        let mut p = Processor::new(EngineConfig::on_event_clock());
        let n = 200_000;
        for _ in 0..n {
            p.process(&sim.next_message().payload, 0);
        }
        let c = &p.counts;
        assert!(c.duplicate > 0, "{c:?}");
        assert!(c.ignored[IgnoreReason::UnknownType as usize] > 0, "{c:?}");
        assert_eq!(c.ignored[IgnoreReason::ClosedDeal as usize], 0, "{c:?}");
        assert!(c.rejected_total() > 0, "{c:?}");
        assert!(c.applied as f64 >= 0.97 * n as f64, "{c:?}");
    }

    #[test]
    fn live_entities_stay_bounded() {
        // Slow enough that every lifecycle runs its course many times over.
        let mut sim = Simulator::new(clean(0.05));
        let mut at_half = 0;
        for i in 1..=500_000 {
            sim.next_message();
            if i == 250_000 {
                at_half = sim.live_entities();
            }
            if i > 250_000 && i % 10_000 == 0 {
                assert!(sim.live_entities() * 4 <= at_half * 5, "{i}");
            }
        }
        assert!(at_half > 1_000);
        // Fast enough to hit the caps, where leads are dropped early.
        let mut sim = Simulator::new(clean(10_000.0));
        let cap = 16 * (MAX_LEADS + (MAX_DEALS + MAX_MEETINGS + MAX_ACCOUNTS) as usize);
        let mut leads = 0;
        for _ in 0..500_000 {
            let m = sim.next_message();
            leads += usize::from(m.payload.windows(14).any(|w| w == b"\"lead.created\""));
            assert!(sim.live_entities() <= cap);
            assert!(sim.timers.len() <= 2 * sim.live_entities() + 2_100);
        }
        assert!(leads > 80_000, "{leads}");
        assert!(sim.leads.len > 15 * MAX_LEADS, "{}", sim.leads.len);
    }

    #[test]
    fn timestamps_round_trip() {
        let mut rng = Rng::new(7);
        for _ in 0..10_000 {
            let at = rng.between(0, 4_102_444_800 * SECOND);
            let at = if rng.below(2) == 0 { at / MS * MS } else { at };
            let offset = [0, 60, -300, 330][rng.index(4)];
            let mut b = Vec::new();
            push_timestamp(&mut b, at, offset);
            let s = std::str::from_utf8(&b).unwrap();
            assert_eq!(event::parse_timestamp(s), Some(at), "{s}");
            if offset == 0 && at % MS != 0 {
                assert_eq!(s, event::format_timestamp(at));
            }
        }
        let day = |s| event::parse_timestamp(s).unwrap();
        assert_eq!(
            next_month(day("2026-03-15T10:00:00Z")),
            day("2026-04-01T00:00:00Z")
        );
        assert_eq!(
            next_month(day("2026-12-31T23:59:59Z")),
            day("2027-01-01T00:00:00Z")
        );
    }

    #[test]
    fn rates_and_sizes_out_of_range_are_tamed() {
        let mut sim = Simulator::new(SimConfig {
            reps: 0,
            teams: 0,
            events_per_second: f64::NAN,
            ..SimConfig::default()
        });
        assert_eq!(sim.rep_ids(), ["rep-0000"]);
        let first = sim.next_message().at;
        for _ in 0..1_000 {
            sim.next_message();
        }
        // About one event a second on average.
        let spread = sim.now - first;
        assert!((500 * SECOND..2_000 * SECOND).contains(&spread), "{spread}");
    }
}

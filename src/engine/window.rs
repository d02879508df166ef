//! Windowed sums: bucketed rings with running sums, and calendar periods.
//!
//! A [`Series`] holds, for one (rep, team) pair, the running sum of every
//! additive part for every window. Sliding windows that share a granularity
//! share one ring of buckets, as long as the longest of them. A ring keeps
//! only its occupied buckets, oldest first, each with the sparse list of
//! what was added to it, and per window the place of the first bucket still
//! in it; when the clock moves, each window walks forward over the buckets
//! that left it and subtracts them, and a bucket that has left every window
//! is dropped. So adding a contribution costs O(rings + windows) (a late one
//! a binary search more), moving the clock costs O(occupied buckets that
//! leave a window), never the empty time between them, paid lazily when a
//! series is next touched or read (and not even looked at when the clock's
//! buckets have not moved since), and a series' memory follows its
//! occupied buckets: an idle rep costs its running sums and nothing else. What is added to the head
//! buckets (nearly everything) is written to their lists only when a head
//! moves, once per part and bucket rather than once per contribution. A
//! part's running sums for eight windows share one cache line. All values
//! are integers, so a retraction undoes an addition exactly and sums never
//! drift.

use std::borrow::Cow;
use std::collections::VecDeque;

use chrono::{Datelike, NaiveDate, TimeZone};
use serde::{Deserialize, Serialize};

use crate::config::{Calendar, EngineConfig};

/// How windows map onto rings, derived once from the configuration.
#[derive(Debug, Clone)]
pub struct WindowPlan {
    pub rings: Vec<RingPlan>,
    pub calendars: Vec<Calendar>,
    /// Sliding windows first (in config order), then calendar windows.
    pub n_windows: usize,
    pub n_sliding: usize,
    pub timezone: chrono_tz::Tz,
    /// Number of additive parts per window.
    pub parts: usize,
    /// Lanes of eight windows each part's sums take: `n_windows / 8`
    /// rounded up.
    pub lanes: usize,
}

#[derive(Debug, Clone)]
pub struct RingPlan {
    pub granularity: i64,
    /// Buckets in the ring: the longest window on it.
    pub len: i64,
    /// (window index, window length in buckets).
    pub windows: Vec<(usize, i64)>,
    /// Bit w set for each window w on this ring.
    pub mask: u64,
}

impl WindowPlan {
    pub fn new(cfg: &EngineConfig, parts: usize) -> Self {
        let mut rings: Vec<RingPlan> = Vec::new();
        for (w, s) in cfg.sliding.iter().enumerate() {
            let n = s.length / s.granularity;
            match rings.iter_mut().find(|r| r.granularity == s.granularity) {
                Some(r) => {
                    r.len = r.len.max(n);
                    r.windows.push((w, n));
                    r.mask |= 1 << w;
                }
                None => rings.push(RingPlan {
                    granularity: s.granularity,
                    len: n,
                    windows: vec![(w, n)],
                    mask: 1 << w,
                }),
            }
        }
        WindowPlan {
            rings,
            calendars: cfg.calendar.clone(),
            n_windows: cfg.sliding.len() + cfg.calendar.len(),
            n_sliding: cfg.sliding.len(),
            timezone: cfg.timezone,
            parts,
            lanes: (cfg.sliding.len() + cfg.calendar.len()).div_ceil(LANE),
        }
    }
}

/// The service clock T as the windows see it: the head bucket of each ring
/// and the current calendar periods. Shared by every series of an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    pub now: i64,
    pub heads: Vec<i64>,
    /// [start, end) of the current period of each calendar window.
    pub periods: Vec<(i64, i64)>,
    /// The first instant at which a head or a period changes.
    next_change: i64,
    /// Per ring: the start of the head bucket, so that the common
    /// contribution (in the head bucket) needs no division.
    head_start: Vec<i64>,
    /// Counts the moves of the heads and periods: a series last advanced
    /// at this epoch has nothing to expire.
    epoch: u64,
}

/// Windows per lane: one part's running sums for eight windows fill one
/// 64-byte cache line, so a contribution writes one line for all of them.
pub const LANE: usize = 8;

/// The running sums of one part for up to eight windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[repr(C, align(64))]
struct Lane([i64; LANE]);

/// Where part `p`'s running sum for window `w` is, with `lanes` lanes per
/// part: (lane, place in the lane).
fn sum_at(lanes: usize, p: usize, w: usize) -> (usize, usize) {
    (p * lanes + w / LANE, w % LANE)
}

/// Where part `p`'s total is in the tally of a series of `rings` rings.
fn total_at(rings: usize, p: usize) -> usize {
    p * (1 + rings)
}

/// Where ring `r`'s base for part `p` is in the tally of a series of
/// `rings` rings.
fn base_at(rings: usize, p: usize, r: usize) -> usize {
    total_at(rings, p) + 1 + r
}

/// Before any event: far in the past, but with room to subtract from.
pub const DAWN: i64 = i64::MIN / 4;

impl Clock {
    pub fn new(plan: &WindowPlan) -> Self {
        let mut c = Clock {
            now: DAWN,
            heads: plan
                .rings
                .iter()
                .map(|r| DAWN.div_euclid(r.granularity))
                .collect(),
            periods: vec![(DAWN, DAWN); plan.calendars.len()],
            next_change: DAWN,
            head_start: vec![DAWN; plan.rings.len()],
            epoch: 0,
        };
        c.set(plan, DAWN);
        c
    }

    /// Moves the clock to `now` (never backwards).
    pub fn set(&mut self, plan: &WindowPlan, now: i64) {
        if now < self.now {
            return;
        }
        self.now = now;
        if now < self.next_change {
            return;
        }
        self.epoch += 1;
        let mut next = i64::MAX;
        for (r, ring) in plan.rings.iter().enumerate() {
            let head = now.div_euclid(ring.granularity);
            self.heads[r] = head;
            self.head_start[r] = head.saturating_mul(ring.granularity);
            next = next.min((head + 1).saturating_mul(ring.granularity));
        }
        for (period, cal) in self.periods.iter_mut().zip(&plan.calendars) {
            if now >= period.1 {
                *period = calendar_period(*cal, plan.timezone, now);
            }
            next = next.min(period.1);
        }
        self.next_change = next;
    }
}

/// The [start, end) of the month or quarter containing `t` in `tz`.
pub fn calendar_period(cal: Calendar, tz: chrono_tz::Tz, t: i64) -> (i64, i64) {
    let Some(utc) = chrono::DateTime::from_timestamp_micros(t) else {
        return (DAWN, DAWN + 1);
    };
    let local = utc.with_timezone(&tz);
    let (year, month) = (local.year(), local.month());
    let first = match cal {
        Calendar::Month => month,
        Calendar::Quarter => (month - 1) / 3 * 3 + 1,
    };
    let step = match cal {
        Calendar::Month => 1,
        Calendar::Quarter => 3,
    };
    let (next_year, next_month) = if first + step > 12 {
        (year + 1, first + step - 12)
    } else {
        (year, first + step)
    };
    (
        local_midnight(tz, year, first),
        local_midnight(tz, next_year, next_month),
    )
}

/// Midnight starting the first day of a month in `tz`, in UTC microseconds.
/// Where a DST change skips midnight, the first instant of that day.
fn local_midnight(tz: chrono_tz::Tz, year: i32, month: u32) -> i64 {
    let Some(day) = NaiveDate::from_ymd_opt(year, month, 1) else {
        return DAWN;
    };
    let mut at = day.and_hms_opt(0, 0, 0).expect("midnight exists");
    for _ in 0..4 {
        if let Some(dt) = tz.from_local_datetime(&at).earliest() {
            return dt.timestamp_micros();
        }
        at += chrono::Duration::minutes(30);
    }
    DAWN
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Slot {
    bucket: i64,
    deltas: Deltas,
}

/// What was added to one bucket: a short sparse list of (part, value) while
/// few parts are touched (fine buckets), a dense array once many are
/// (coarse buckets), so that finding a part never scans a long list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Deltas {
    Sparse(Vec<(u32, i64)>),
    Dense(Vec<i64>),
}

impl Default for Deltas {
    fn default() -> Self {
        Deltas::Sparse(Vec::new())
    }
}

/// A sparse list longer than this turns dense.
const SPARSE_MAX: usize = 12;

impl Deltas {
    fn add(&mut self, part: usize, v: i64, parts: usize) {
        match self {
            Deltas::Dense(d) => d[part] = d[part].wrapping_add(v),
            Deltas::Sparse(list) => {
                if let Some((_, acc)) = list.iter_mut().find(|(p, _)| *p as usize == part) {
                    *acc = acc.wrapping_add(v);
                } else if list.len() < SPARSE_MAX {
                    list.push((part as u32, v));
                } else {
                    let mut d = vec![0i64; parts];
                    for &(p, x) in list.iter() {
                        d[p as usize] = x;
                    }
                    d[part] = v;
                    *self = Deltas::Dense(d);
                }
            }
        }
    }

    /// Starts fetching the values into the cache, without waiting for
    /// them. Changes nothing.
    fn prefetch(&self) {
        let (start, bytes) = match self {
            Deltas::Sparse(list) => (list.as_ptr().cast::<u8>(), size_of_val(list.as_slice())),
            Deltas::Dense(d) => (d.as_ptr().cast::<u8>(), size_of_val(d.as_slice())),
        };
        for line in (0..bytes).step_by(64) {
            super::ids::prefetch_line(start.wrapping_add(line));
        }
    }

    /// Subtracts every delta from window `w`'s sums. A dense list's zeros
    /// are passed over: each part's sums are a cache line of their own,
    /// long out of the cache in a series that was idle.
    fn subtract_from(&self, sums: &mut [Lane], lanes: usize, w: usize) {
        let mut sub = |p: usize, v: i64| {
            let (l, i) = sum_at(lanes, p, w);
            sums[l].0[i] = sums[l].0[i].wrapping_sub(v);
        };
        match self {
            Deltas::Sparse(list) => list.iter().for_each(|&(p, v)| sub(p as usize, v)),
            Deltas::Dense(d) => d.iter().enumerate().for_each(|(p, &v)| {
                if v != 0 {
                    sub(p, v)
                }
            }),
        }
    }
}

#[derive(Debug, Clone)]
struct Ring {
    /// The head bucket up to which this ring's expiry has been applied.
    head: i64,
    /// The occupied buckets still in the ring's longest window, oldest
    /// first (the head bucket's only once its pending values are written).
    slots: VecDeque<Slot>,
    /// Per window of the ring, in the plan's order: the index in `slots`
    /// of the first bucket still in that window (those before it have been
    /// subtracted from its sums). Empty until the ring is first used with
    /// its plan (a decoded series finds them then).
    live: Vec<usize>,
    /// The parts added to the head bucket and not yet written to its slot
    /// (see [`Series::tally`]): bit `p % 64` of word `p / 64`.
    touched: [u64; TOUCH_WORDS],
}

impl Ring {
    /// Brings a ring restored from a snapshot in line with its plan: only
    /// the buckets still in its longest window, oldest first, and each
    /// window's first live bucket. (A snapshot of format 4 or 5 holds the
    /// whole ring, a slot per bucket, stale ones included.)
    fn settle(&mut self, rp: &RingPlan) {
        if self.live.len() == rp.windows.len() {
            return;
        }
        let (head, len) = (self.head, rp.len);
        let mut slots: Vec<Slot> = std::mem::take(&mut self.slots).into();
        slots.retain(|s| s.bucket <= head && s.bucket > head - len);
        slots.sort_by_key(|s| s.bucket);
        slots.dedup_by_key(|s| s.bucket);
        self.slots = slots.into();
        self.live = rp
            .windows
            .iter()
            .map(|&(_, n)| self.slots.partition_point(|s| s.bucket <= head - n))
            .collect();
    }
}

/// Words of a ring's `touched` bits: 64 pipeline stages make 245 parts.
const TOUCH_WORDS: usize = 4;

/// The windowed sums of one (rep, team) pair.
#[derive(Debug, Clone)]
pub struct Series {
    rings: Vec<Ring>,
    /// The running sums, part-major: part `p`'s sums for windows
    /// `8l..8l + 8` are lane `p * plan.lanes + l`.
    sums: Vec<Lane>,
    /// The calendar period start each calendar sum belongs to.
    periods: Vec<i64>,
    /// What the head buckets hold that their slots do not yet, kept so
    /// that a contribution to the head buckets (nearly all of them) is
    /// added once, not once per ring and each time by a search of a slot's
    /// list. Per part, `1 + rings` values: the part's total of every
    /// contribution, then per ring the total when its head's slot was last
    /// written, plus every later contribution not in its head bucket. The
    /// difference is the ring's pending value, written to the head's slot
    /// when the head moves, before any expiry reads it. Empty until the
    /// first contribution (a decoded series has its slots complete).
    tally: Vec<i64>,
    /// The [`Clock`] epoch of the last advance; not kept in snapshots
    /// (a restored series advances once more, which changes nothing).
    epoch: u64,
}

/// Equal state: the epoch of the last advance is a shortcut, and the tally
/// a deferral, not state; slots compare as with the pending values in.
impl PartialEq for Series {
    fn eq(&self, other: &Series) -> bool {
        self.sums == other.sums
            && self.periods == other.periods
            && self.rings.len() == other.rings.len()
            && (0..self.rings.len()).all(|r| {
                self.rings[r].head == other.rings[r].head
                    && self.slot_views(r) == other.slot_views(r)
            })
    }
}

/// Written as a series without a tally would be: each head's slot with its
/// pending values in. Snapshots keep the same encoding.
impl Serialize for Series {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeSeq, SerializeStruct};
        struct Slots<'a>(&'a Series, usize);
        impl Serialize for Slots<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let Slots(series, r) = *self;
                let views = series.slot_views(r);
                let mut seq = s.serialize_seq(Some(views.len()))?;
                for v in &views {
                    seq.serialize_element(&**v)?;
                }
                seq.end()
            }
        }
        struct RingOut<'a>(&'a Series, usize);
        impl Serialize for RingOut<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut st = s.serialize_struct("Ring", 2)?;
                st.serialize_field("head", &self.0.rings[self.1].head)?;
                st.serialize_field("slots", &Slots(self.0, self.1))?;
                st.end()
            }
        }
        struct Rings<'a>(&'a Series);
        impl Serialize for Rings<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let n = self.0.rings.len();
                let mut seq = s.serialize_seq(Some(n))?;
                for r in 0..n {
                    seq.serialize_element(&RingOut(self.0, r))?;
                }
                seq.end()
            }
        }
        let mut st = s.serialize_struct("Series", 3)?;
        st.serialize_field("rings", &Rings(self))?;
        st.serialize_field("sums", &self.sums)?;
        st.serialize_field("periods", &self.periods)?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for Series {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "Ring")]
        struct RingIn {
            head: i64,
            slots: Vec<Slot>,
        }
        #[derive(Deserialize)]
        #[serde(rename = "Series")]
        struct SeriesIn {
            rings: Vec<RingIn>,
            sums: Vec<Lane>,
            periods: Vec<i64>,
        }
        let s = SeriesIn::deserialize(d)?;
        Ok(Series {
            rings: (s.rings.into_iter())
                .map(|r| Ring {
                    head: r.head,
                    slots: r.slots.into(),
                    // Found with the plan, at the first advance.
                    live: Vec::new(),
                    touched: [0; TOUCH_WORDS],
                })
                .collect(),
            sums: s.sums,
            periods: s.periods,
            tally: Vec::new(),
            // Not advanced since the snapshot: advance once more.
            epoch: u64::MAX,
        })
    }
}

/// Calls `f` with each part whose bit is set, in order.
#[inline]
fn each_touched(words: [u64; TOUCH_WORDS], mut f: impl FnMut(usize)) {
    for (w, mut bits) in words.into_iter().enumerate() {
        while bits != 0 {
            f(w * 64 + bits.trailing_zeros() as usize);
            bits &= bits - 1;
        }
    }
}

/// Writes the pending value `value(p)` of each touched part `p` to the slot
/// of the head bucket `head`.
fn write_pending(
    slot: &mut Slot,
    head: i64,
    touched: [u64; TOUCH_WORDS],
    k: usize,
    mut value: impl FnMut(usize) -> i64,
) {
    debug_assert_eq!(slot.bucket, head);
    let n: usize = touched.iter().map(|w| w.count_ones() as usize).sum();
    match &mut slot.deltas {
        Deltas::Dense(d) => each_touched(touched, |p| d[p] = d[p].wrapping_add(value(p))),
        // Nothing to search: the parts are new to the list.
        Deltas::Sparse(list) if list.is_empty() && n <= SPARSE_MAX => {
            list.reserve(n);
            each_touched(touched, |p| {
                let v = value(p);
                if v != 0 {
                    list.push((p as u32, v));
                }
            });
        }
        Deltas::Sparse(list) if list.is_empty() => {
            let mut d = vec![0; k];
            each_touched(touched, |p| d[p] = value(p));
            slot.deltas = Deltas::Dense(d);
        }
        deltas => each_touched(touched, |p| {
            let v = value(p);
            if v != 0 {
                deltas.add(p, v, k);
            }
        }),
    }
}

impl Series {
    /// The slots of ring `r` as they would be with the pending values
    /// written to the head bucket's.
    fn slot_views(&self, r: usize) -> Vec<Cow<'_, Slot>> {
        let ring = &self.rings[r];
        let mut views: Vec<Cow<'_, Slot>> = ring.slots.iter().map(Cow::Borrowed).collect();
        if ring.touched == [0; TOUCH_WORDS] {
            return views;
        }
        let mut head = match views.last() {
            Some(last) if last.bucket == ring.head => views.pop().expect("a last").into_owned(),
            _ => Slot {
                bucket: ring.head,
                deltas: Deltas::default(),
            },
        };
        let rings = self.rings.len();
        let k = self.tally.len() / (1 + rings);
        write_pending(&mut head, ring.head, ring.touched, k, |p| {
            self.tally[total_at(rings, p)].wrapping_sub(self.tally[base_at(rings, p, r)])
        });
        views.push(Cow::Owned(head));
        views
    }

    /// Writes ring `r`'s pending values to its head's slot: the tally's
    /// base for the ring becomes the total.
    fn flush(&mut self, r: usize, k: usize) {
        let rings = self.rings.len();
        let ring = &mut self.rings[r];
        if ring.touched == [0; TOUCH_WORDS] {
            return;
        }
        let touched = std::mem::take(&mut ring.touched);
        // The head bucket is in every window of the ring: appending it
        // moves no window's first live bucket.
        if ring.slots.back().is_none_or(|s| s.bucket != ring.head) {
            ring.slots.push_back(Slot {
                bucket: ring.head,
                deltas: Deltas::default(),
            });
        }
        let slot = ring.slots.back_mut().expect("the head's slot");
        let tally = &mut self.tally;
        write_pending(slot, ring.head, touched, k, |p| {
            let total = tally[total_at(rings, p)];
            total.wrapping_sub(std::mem::replace(&mut tally[base_at(rings, p, r)], total))
        });
    }

    pub fn new(plan: &WindowPlan, clock: &Clock) -> Self {
        Series {
            rings: (clock.heads.iter().zip(&plan.rings))
                .map(|(&head, rp)| Ring {
                    head,
                    slots: VecDeque::new(),
                    live: vec![0; rp.windows.len()],
                    touched: [0; TOUCH_WORDS],
                })
                .collect(),
            sums: vec![Lane::default(); plan.parts * plan.lanes],
            periods: clock.periods.iter().map(|p| p.0).collect(),
            tally: Vec::new(),
            epoch: clock.epoch,
        }
    }

    /// Applies the expiry of every bucket that left a window since the last
    /// call, and starts new calendar periods.
    #[inline]
    pub fn advance(&mut self, plan: &WindowPlan, clock: &Clock) {
        if self.epoch != clock.epoch {
            self.expire(plan, clock);
            self.epoch = clock.epoch;
        }
    }

    fn expire(&mut self, plan: &WindowPlan, clock: &Clock) {
        let lanes = plan.lanes;
        for (r, (rp, &new_head)) in plan.rings.iter().zip(&clock.heads).enumerate() {
            self.rings[r].settle(rp);
            let old = self.rings[r].head;
            if new_head <= old {
                continue;
            }
            // The old head's slot gets what is pending before it expires.
            self.flush(r, plan.parts);
            let ring = &mut self.rings[r];
            for (j, &(w, n)) in rp.windows.iter().enumerate() {
                // The buckets up to new - n leave window w: the occupied
                // ones only are walked, however long the ring was idle.
                let mut i = ring.live[j];
                while let Some(slot) = ring.slots.get(i) {
                    if slot.bucket > new_head - n {
                        // The bucket that leaves next. A series is mostly
                        // touched again before that, and its values, long
                        // out of the cache, are then on their way (a
                        // bucket's values are their own allocation, read
                        // only when they are added to and when they leave).
                        slot.deltas.prefetch();
                        break;
                    }
                    slot.deltas.subtract_from(&mut self.sums, lanes, w);
                    i += 1;
                }
                ring.live[j] = i;
            }
            // What has left the longest window has left every window.
            let gone = ring.live.iter().copied().min().unwrap_or(0);
            ring.slots.drain(..gone);
            for l in &mut ring.live {
                *l -= gone;
            }
            ring.head = new_head;
        }
        for (c, period) in self.periods.iter_mut().enumerate() {
            let start = clock.periods[c].0;
            if *period != start {
                *period = start;
                let w = plan.n_sliding + c;
                for p in 0..plan.parts {
                    let (l, i) = sum_at(lanes, p, w);
                    self.sums[l].0[i] = 0;
                }
            }
        }
    }

    /// Adds `v` (negative to retract) to `part` at time `t <= clock.now`.
    pub fn add(&mut self, plan: &WindowPlan, clock: &Clock, t: i64, part: usize, v: i64) {
        self.add_many(plan, clock, t, &[(part, v)]);
    }

    /// Adds several (part, value) contributions at one time `t <= clock.now`:
    /// the clock and the buckets are looked up once for all of them. A zero
    /// value is not even written to its bucket.
    pub fn add_many(&mut self, plan: &WindowPlan, clock: &Clock, t: i64, parts: &[(usize, i64)]) {
        debug_assert!(t <= clock.now, "a contribution from the future");
        debug_assert!(parts.iter().all(|&(p, _)| p < plan.parts));
        // Drop the zero values first, without a branch on each: every one
        // would otherwise be added to a bucket and every window for nothing
        // (a call that is not a first touch pads four).
        let mut kept = [(0, 0); 8];
        let parts = if parts.len() <= kept.len() {
            let mut n = 0;
            for &(p, v) in parts {
                kept[n] = (p, v);
                n += usize::from(v != 0);
            }
            &kept[..n]
        } else {
            parts
        };
        self.advance(plan, clock);
        let k = plan.parts;
        let rings = plan.rings.len();
        if self.tally.is_empty() {
            self.tally = vec![0; k * (1 + rings)];
        }
        // Each part's total, and which parts this call adds to.
        let mut bits = [0u64; TOUCH_WORDS];
        for &(part, v) in parts {
            let total = &mut self.tally[total_at(rings, part)];
            *total = total.wrapping_add(v);
            bits[part / 64] |= 1 << (part % 64);
        }
        // Bit w: the contribution counts in window w.
        let mut member = 0u64;
        for (r, (ring, rp)) in self.rings.iter_mut().zip(&plan.rings).enumerate() {
            let (b, in_head) = if t >= clock.head_start[r] {
                (ring.head, true)
            } else {
                (t.div_euclid(rp.granularity), false)
            };
            let in_ring = b <= ring.head && b > ring.head - rp.len;
            if in_head {
                // Pending in the tally; the head bucket is in every window
                // of its ring.
                for (word, new) in ring.touched.iter_mut().zip(bits) {
                    *word |= new;
                }
                member |= rp.mask;
                continue;
            }
            // Not in the head bucket: in the totals, but not in this
            // ring's pending values, so its bases take it too.
            for &(part, v) in parts {
                let base = &mut self.tally[base_at(rings, part, r)];
                *base = base.wrapping_add(v);
            }
            if !in_ring {
                continue;
            }
            // A late contribution: its bucket, found (or made) in order.
            // Most are a bucket or two behind the head: at or after the
            // newest slot, found without a search.
            let pos = match ring.slots.back() {
                None => 0,
                Some(last) if last.bucket < b => ring.slots.len(),
                Some(last) if last.bucket == b => ring.slots.len() - 1,
                Some(_) => ring.slots.partition_point(|s| s.bucket < b),
            };
            if ring.slots.get(pos).is_none_or(|s| s.bucket != b) {
                ring.slots.insert(
                    pos,
                    Slot {
                        bucket: b,
                        deltas: Deltas::default(),
                    },
                );
                // Every bucket before it has left the windows it has left.
                for (live, &(_, n)) in ring.live.iter_mut().zip(&rp.windows) {
                    *live += usize::from(b <= ring.head - n);
                }
            }
            let slot = &mut ring.slots[pos];
            for &(part, v) in parts {
                if v != 0 {
                    slot.deltas.add(part, v, k);
                }
            }
            for &(w, n) in &rp.windows {
                member |= u64::from(b > ring.head - n) << w;
            }
        }
        for (c, &(start, _)) in clock.periods.iter().enumerate() {
            member |= u64::from(t >= start) << (plan.n_sliding + c);
        }
        let lanes = plan.lanes;
        for l in 0..lanes {
            let bits = (member >> (l * LANE)) as u8;
            if bits == 0 {
                continue;
            }
            // All ones where the window counts it: a masked add for each
            // of the lane's windows, without a branch.
            let mask: [i64; LANE] = std::array::from_fn(|i| -i64::from((bits >> i) & 1));
            for &(part, v) in parts {
                let sums = &mut self.sums[part * lanes + l].0;
                for (s, m) in sums.iter_mut().zip(mask) {
                    *s = s.wrapping_add(v & m);
                }
            }
        }
    }

    /// The running sums of window `w`, by part; call [`Series::advance`]
    /// first.
    pub fn window(&self, plan: &WindowPlan, w: usize) -> Vec<i64> {
        (0..plan.parts)
            .map(|p| {
                let (l, i) = sum_at(plan.lanes, p, w);
                self.sums[l].0[i]
            })
            .collect()
    }

    /// Appends all running sums to `out`, window-major (window `w`'s part
    /// `p` at `w * plan.parts + p`); call [`Series::advance`] first.
    pub fn window_major(&self, plan: &WindowPlan, out: &mut Vec<i64>) {
        let (n, k) = (plan.n_windows, plan.parts);
        let start = out.len();
        out.resize(start + n * k, 0);
        let out = &mut out[start..];
        for p in 0..k {
            for w in 0..n {
                let (l, i) = sum_at(plan.lanes, p, w);
                out[w * k + p] = self.sums[l].0[i];
            }
        }
    }

    /// True when this series has the shape `plan` gives (a decoded one
    /// might not).
    pub fn fits(&self, plan: &WindowPlan) -> bool {
        self.sums.len() == plan.parts * plan.lanes
            && self.periods.len() == plan.calendars.len()
            && self.rings.len() == plan.rings.len()
    }

    /// The buckets this series holds, over all its rings: its memory,
    /// beyond the running sums, follows them.
    pub fn occupied(&self) -> usize {
        self.rings.iter().map(|r| r.slots.len()).sum()
    }

    /// True when no window holds anything and no bucket can come back.
    pub fn is_empty(&self) -> bool {
        self.sums.iter().all(|s| s.0 == [0; LANE])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Sliding, SECOND};

    const MIN: i64 = 60 * SECOND;

    fn plan() -> WindowPlan {
        let cfg = EngineConfig {
            sliding: vec![
                Sliding {
                    name: "5m".into(),
                    length: 5 * MIN,
                    granularity: MIN,
                },
                Sliding {
                    name: "3m".into(),
                    length: 3 * MIN,
                    granularity: MIN,
                },
            ],
            calendar: vec![Calendar::Month],
            ..EngineConfig::default()
        };
        WindowPlan::new(&cfg, 2)
    }

    #[test]
    fn windows_sharing_a_granularity_share_a_ring() {
        let p = plan();
        assert_eq!(p.rings.len(), 1);
        assert_eq!(p.rings[0].len, 5);
    }

    /// Snapshot formats 4 and 5 wrote a whole ring, a slot per bucket at
    /// `bucket mod len`, stale ones included: such a series reads back and
    /// goes on exactly as the one that wrote it.
    #[test]
    fn a_ring_of_the_older_formats_is_read() {
        #[derive(Serialize)]
        struct RingOld {
            head: i64,
            slots: Vec<Slot>,
        }
        #[derive(Serialize)]
        struct SeriesOld<'a> {
            rings: Vec<RingOld>,
            sums: &'a [Lane],
            periods: &'a [i64],
        }
        let p = plan();
        let mut clock = Clock::new(&p);
        let base = 1_800_000_000 * SECOND;
        let mut a = Series::new(&p, &clock);
        for (m, v) in [(0, 1), (1, 2), (3, 4)] {
            clock.set(&p, base + m * MIN);
            a.add(&p, &clock, clock.now, 0, v);
        }
        clock.set(&p, base + 4 * MIN);
        a.advance(&p, &clock);
        let len = p.rings[0].len;
        let head = a.rings[0].head;
        let empty = Slot {
            bucket: i64::MIN,
            deltas: Deltas::default(),
        };
        let mut slots = vec![empty; len as usize];
        for v in a.slot_views(0) {
            let i = v.bucket.rem_euclid(len) as usize;
            slots[i] = v.into_owned();
        }
        // A bucket that left every window, left in its slot.
        let i = slots.iter().position(|s| s.bucket == i64::MIN).unwrap() as i64;
        let stale = (head - len) - (head - len - i).rem_euclid(len);
        slots[i as usize] = Slot {
            bucket: stale,
            deltas: Deltas::Sparse(vec![(0, 1000)]),
        };
        let old = SeriesOld {
            rings: vec![RingOld { head, slots }],
            sums: &a.sums,
            periods: &a.periods,
        };
        let mut b: Series = postcard::from_bytes(&postcard::to_allocvec(&old).unwrap()).unwrap();
        for m in [5, 6, 9, 20, 21] {
            clock.set(&p, base + m * MIN);
            a.add(&p, &clock, clock.now - MIN, 1, 7);
            b.add(&p, &clock, clock.now - MIN, 1, 7);
            a.advance(&p, &clock);
            b.advance(&p, &clock);
            for w in 0..p.n_windows {
                assert_eq!(a.window(&p, w), b.window(&p, w), "at +{m}m, window {w}");
            }
            assert_eq!(a, b);
        }
    }

    #[test]
    fn contributions_expire_bucket_by_bucket() {
        let p = plan();
        let mut clock = Clock::new(&p);
        let base = 1_800_000_000 * SECOND; // aligned to the minute
        clock.set(&p, base);
        let mut s = Series::new(&p, &clock);
        s.add(&p, &clock, base, 0, 7);
        clock.set(&p, base + 2 * MIN + 59 * SECOND);
        s.advance(&p, &clock);
        assert_eq!(s.window(&p, 0)[0], 7);
        assert_eq!(s.window(&p, 1)[0], 7);
        clock.set(&p, base + 3 * MIN);
        s.advance(&p, &clock);
        assert_eq!(s.window(&p, 0)[0], 7);
        assert_eq!(s.window(&p, 1)[0], 0, "left the 3m window");
        clock.set(&p, base + 5 * MIN);
        s.advance(&p, &clock);
        assert_eq!(s.window(&p, 0)[0], 0, "left the 5m window");
        assert_eq!(s.window(&p, 2)[0], 7, "still in the month");
    }

    #[test]
    fn retraction_undoes_exactly_and_late_ones_are_dropped() {
        let p = plan();
        let mut clock = Clock::new(&p);
        let base = 1_800_000_000 * SECOND;
        clock.set(&p, base);
        let mut s = Series::new(&p, &clock);
        s.add(&p, &clock, base - MIN, 1, 3);
        s.add(&p, &clock, base - MIN, 1, -3);
        assert!(s.is_empty());
        s.add(&p, &clock, base - 10 * MIN, 1, 5);
        assert_eq!(s.window(&p, 0)[1], 0, "too old for every sliding window");
    }

    /// Zero values are skipped, in a short list and in a long one (past
    /// the eight pairs the skipping copies): the sums are those of one
    /// contribution at a time.
    #[test]
    fn many_contributions_at_once_sum_as_one_at_a_time() {
        let p = plan();
        let mut clock = Clock::new(&p);
        let base = 1_800_000_000 * SECOND;
        clock.set(&p, base);
        let many: Vec<(usize, i64)> = (0..70).map(|i| (i % 2, i as i64 % 5)).collect();
        let (mut at_once, mut singly) = (Series::new(&p, &clock), Series::new(&p, &clock));
        for t in [base, base - MIN] {
            at_once.add_many(&p, &clock, t, &many[..7]);
            at_once.add_many(&p, &clock, t, &many[7..]);
            for &(part, v) in &many {
                singly.add(&p, &clock, t, part, v);
            }
        }
        // Parts 0 and 1 hold the even and the odd i: 2 * (0+2+4+1+3) * 7.
        assert_eq!(at_once.window(&p, 0), vec![2 * 10 * 7, 2 * 10 * 7]);
        assert_eq!(at_once.window(&p, 0), singly.window(&p, 0));
        clock.set(&p, base + 4 * MIN);
        at_once.advance(&p, &clock);
        singly.advance(&p, &clock);
        assert_eq!(
            at_once.window(&p, 0),
            vec![10 * 7, 10 * 7],
            "the older minute left"
        );
        assert!(at_once == singly);
    }

    #[test]
    fn calendar_periods_follow_the_time_zone() {
        let t = crate::event::parse_timestamp("2026-03-31T23:30:00Z").unwrap();
        let (start, end) = calendar_period(Calendar::Month, chrono_tz::UTC, t);
        assert_eq!(
            start,
            crate::event::parse_timestamp("2026-03-01T00:00:00Z").unwrap()
        );
        assert_eq!(
            end,
            crate::event::parse_timestamp("2026-04-01T00:00:00Z").unwrap()
        );
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        let (start, _) = calendar_period(Calendar::Month, berlin, t);
        assert_eq!(
            start,
            crate::event::parse_timestamp("2026-04-01T00:00:00+02:00").unwrap()
        );
        let (q, qend) = calendar_period(Calendar::Quarter, chrono_tz::UTC, t);
        assert_eq!(
            q,
            crate::event::parse_timestamp("2026-01-01T00:00:00Z").unwrap()
        );
        assert_eq!(
            qend,
            crate::event::parse_timestamp("2026-04-01T00:00:00Z").unwrap()
        );
    }
}

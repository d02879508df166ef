//! The meetings' timers: the instants at which a meeting falls due or is
//! missed, each to be recounted once the clock T reaches it.
//!
//! The clock never goes back and every timer is set after it, so they are
//! kept in a radix heap (a monotone priority queue) rather than a binary
//! heap. A timer goes in the bucket of the highest bit in which its instant
//! differs from the clock's last reading: appending costs O(1), and moving
//! the clock takes the buckets below the highest bit that changed, all due,
//! and re-files the one bucket at that bit, whose timers either are due or
//! go to lower buckets. Each timer is thus moved at most 64 times, and in
//! practice a few, always along whole vectors: a binary heap of the same
//! timers spends its time waiting for the cache on every level of a pop.
//! Timers that fall due together come out in no particular order, which
//! changes nothing: a recount depends only on the meeting and on T.

use super::Key;

/// Buckets: 0 for instants at or before the last reading, then one per bit.
const BUCKETS: usize = 65;

#[derive(Debug, Clone)]
pub struct Timers {
    /// The clock's last reading, as [`ordered`].
    last: u64,
    /// Bucket `b > 0`: the timers whose instant is after `last` and differs
    /// from it first in bit `b - 1`.
    buckets: Vec<Vec<(i64, Key)>>,
    /// Bit `b` set when bucket `b` may hold a timer.
    used: u128,
    /// Timers found due and not yet taken.
    ready: Vec<(i64, Key)>,
}

/// `t` as an unsigned number in the same order.
fn ordered(t: i64) -> u64 {
    (t as u64) ^ (1 << 63)
}

/// The bucket of instant `t` for the reading `last` (both [`ordered`]).
fn bucket(t: u64, last: u64) -> usize {
    if t <= last {
        0
    } else {
        64 - (t ^ last).leading_zeros() as usize
    }
}

/// The buckets a reading whose bucket is `top` takes whole: those below
/// it, and bucket 0 (instants at or before the last reading).
fn taken_whole(top: usize) -> u128 {
    ((1u128 << top) - 1) | 1
}

impl Timers {
    /// No timers, the clock read at `now`.
    pub fn new(now: i64) -> Self {
        Timers {
            last: ordered(now),
            buckets: vec![Vec::new(); BUCKETS],
            used: 0,
            ready: Vec::new(),
        }
    }

    /// Sets a timer for meeting `k` at `at`: it is due once the clock is
    /// at or past `at`.
    pub fn push(&mut self, at: i64, k: Key) {
        let b = bucket(ordered(at), self.last);
        self.buckets[b].push((at, k));
        self.used |= 1 << b;
    }

    /// The meeting of a timer due by `now` (at or before it), if any is
    /// left, taking it. `now` must never be earlier than in the last call.
    pub fn pop_due(&mut self, now: i64) -> Option<Key> {
        if let Some((_, k)) = self.ready.pop() {
            return Some(k);
        }
        let now = ordered(now);
        debug_assert!(now >= self.last, "the clock went back");
        // Buckets below `top` hold instants before `now` (bucket 0, those
        // at or before the last reading): they differ from the last reading
        // first in a lower bit than `now` does, which has a one in bit
        // `top - 1` where they all have the last reading's zero. Those in
        // bucket `top` share that bit with `now`. When all of these are
        // empty, the last reading can stay as it is: every timer is still
        // after it, in the bucket it says.
        let top = bucket(now, self.last);
        if self.used & (taken_whole(top) | 1 << top) == 0 {
            return None;
        }
        self.last = now;
        let mut below = self.used & taken_whole(top);
        self.used &= !taken_whole(top);
        while below != 0 {
            let b = below.trailing_zeros() as usize;
            below &= below - 1;
            self.ready.append(&mut self.buckets[b]);
        }
        if top > 0 && self.used & (1 << top) != 0 {
            self.used &= !(1 << top);
            // The rest of bucket `top` shares every bit from `top - 1` up
            // with `now`: re-filed from it, each goes to a lower bucket.
            let mut refile = std::mem::take(&mut self.buckets[top]);
            for &(at, k) in &refile {
                let b = bucket(ordered(at), now);
                if b == 0 {
                    self.ready.push((at, k));
                } else {
                    self.buckets[b].push((at, k));
                    self.used |= 1 << b;
                }
            }
            refile.clear();
            self.buckets[top] = refile;
        }
        self.ready.pop().map(|(_, k)| k)
    }

    /// Calls `f` with the meeting of each timer [`Timers::pop_due`] would
    /// take at `now`, taking none (for a `now` before the last reading,
    /// those already due).
    pub fn each_due_by(&self, now: i64, mut f: impl FnMut(Key)) {
        self.ready.iter().for_each(|&(_, k)| f(k));
        let now = ordered(now);
        let top = bucket(now, self.last);
        let mut below = self.used & taken_whole(top);
        while below != 0 {
            let b = below.trailing_zeros() as usize;
            below &= below - 1;
            self.buckets[b].iter().for_each(|&(_, k)| f(k));
        }
        if top > 0 && self.used & (1 << top) != 0 {
            for &(at, k) in &self.buckets[top] {
                if ordered(at) <= now {
                    f(k);
                }
            }
        }
    }

    /// Every pending timer, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, Key)> + '_ {
        self.buckets.iter().chain([&self.ready]).flatten().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn k(i: u64) -> Key {
        Key(i, !i)
    }

    /// Every timer due by `now`, sorted.
    fn due(t: &mut Timers, now: i64) -> Vec<Key> {
        let mut due: Vec<Key> = std::iter::from_fn(|| t.pop_due(now)).collect();
        due.sort();
        due
    }

    #[test]
    fn timers_fall_due_when_the_clock_reaches_them() {
        let mut t = Timers::new(100);
        t.push(150, k(1));
        t.push(101, k(2));
        t.push(1 << 40, k(3));
        t.push(150, k(4));
        assert_eq!(due(&mut t, 100), []);
        // Set at the clock's reading: due at once.
        t.push(100, k(5));
        assert_eq!(due(&mut t, 100), [k(5)]);
        assert_eq!(due(&mut t, 149), [k(2)]);
        assert_eq!(due(&mut t, 150), [k(1), k(4)]);
        assert_eq!(t.iter().count(), 1);
        assert_eq!(due(&mut t, (1 << 40) - 1), []);
        assert_eq!(due(&mut t, 1 << 41), [k(3)]);
        assert_eq!(t.iter().count(), 0);
    }

    proptest! {
        /// Against a sorted list: after every reading of the clock, the
        /// timers taken are exactly those set at or before it and not taken
        /// yet, and those left are exactly the others.
        #[test]
        fn a_radix_heap_takes_what_a_sorted_list_would(
            start in -(1i64 << 50)..(1i64 << 50),
            steps in prop::collection::vec(
                (prop::collection::vec((prop_oneof![-3i64..100, 1i64..(1 << 44)], any::<u64>()), 0..6),
                 prop_oneof![0i64..1_000, 0i64..(1 << 30), 0i64..(1 << 45)]),
                1..60),
        ) {
            let mut t = Timers::new(start);
            let mut model: Vec<(i64, Key)> = Vec::new();
            let mut now = start;
            for (sets, step) in steps {
                for (ahead, id) in sets {
                    t.push(now + ahead, k(id));
                    model.push((now + ahead, k(id)));
                }
                now += step;
                let mut want: Vec<Key> =
                    model.iter().filter(|&&(at, _)| at <= now).map(|&(_, k)| k).collect();
                model.retain(|&(at, _)| at > now);
                want.sort();
                let mut seen = Vec::new();
                t.each_due_by(now, |k| seen.push(k));
                seen.sort();
                prop_assert_eq!(&seen, &want);
                prop_assert_eq!(due(&mut t, now), want);
                let mut left: Vec<(i64, Key)> = t.iter().collect();
                left.sort();
                let mut kept = model.clone();
                kept.sort();
                prop_assert_eq!(left, kept);
            }
        }
    }
}

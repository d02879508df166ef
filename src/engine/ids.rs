//! Tables keyed by id hashes, laid out for the hot path: the applied event
//! ids of the dedup horizon, each with the time it was applied, and the
//! leads, deals and meetings.
//!
//! The dedup table holds every id of the horizon (some 600,000 for a week
//! at one event a second), far more than the caches, and the leads are
//! the most numerous entities; a meeting is read again when its timers
//! fall due, long after its last event. As in the standard library's hash
//! map, a lookup first reads a compact array of one-byte tags (one to two
//! bytes per entry, so it mostly stays in cache), and reads an entry only
//! where a tag matches: a key not seen before costs no fetch of an entry,
//! only the write of its own. Unlike that map, the place of a key's entry is
//! known before it is looked up: it is in its home bucket of eight,
//! aligned to a cache line, unless that bucket was full.
//! [`IdMap::prefetch`] starts fetching the tags and the bucket without
//! waiting, and [`IdMap::prefetch_tags`] then [`IdMap::prefetch_entry`]
//! fetch the tags and then the one entry the key has or would take, so
//! that a run of messages has its fetches overlap, and the lookup and
//! insertion that follow find them in cache.

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Key;

/// Entries per bucket: one tag byte each in a bucket's tag word.
const WAYS: usize = 8;

/// A map of id keys to values. At most 7/8 of its entries are used.
#[derive(Debug, Clone)]
pub struct IdMap<V> {
    /// Per bucket, byte `w` is entry `w`'s tag, 0 when it is empty.
    tags: Vec<u64>,
    /// Bit `i % 64` of word `i / 64`: some entry lies past bucket `i` in
    /// its probe sequence, so a lookup that does not find its key there
    /// goes on to the next bucket.
    overflow: Vec<u64>,
    /// The buckets, from entry `base` on (the first whose address is a
    /// multiple of 64), so that a bucket of 24-byte entries spans exactly
    /// three cache lines. What an empty entry holds does not matter.
    entries: Vec<(Key, V)>,
    base: usize,
    /// Buckets: a power of two.
    n: usize,
    len: usize,
}

/// The applied event ids, with the time each was applied.
pub type IdSet = IdMap<i64>;

impl<V: Copy + Default> Default for IdMap<V> {
    fn default() -> Self {
        IdMap::with_buckets(8)
    }
}

/// Seven bits of the key not used to place it, and a set high bit.
fn tag(k: Key) -> u8 {
    0x80 | (k.1 as u8 & 0x7f)
}

fn tag_at(word: u64, w: usize) -> u8 {
    (word >> (8 * w)) as u8
}

/// The low bit of each byte.
const LOWS: u64 = 0x0101_0101_0101_0101;
/// The high bit of each byte.
const HIGHS: u64 = LOWS << 7;

/// The high bit set in the bytes that are zero, and perhaps in some above
/// one that is (the borrow runs upward): a superset, so every hit must be
/// checked, but exact for the lowest.
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(LOWS) & !x & HIGHS
}

/// The entries whose tag is `tag`, and perhaps a few other used ones (see
/// [`zero_bytes`]; an empty entry's byte differs from a tag in its high
/// bit, so it is never flagged), as the high bits of their bytes.
fn matches(word: u64, tag: u8) -> u64 {
    zero_bytes(word ^ (LOWS * u64::from(tag)))
}

/// The first empty entry.
fn first_free(word: u64) -> Option<usize> {
    let m = zero_bytes(word);
    (m != 0).then(|| (m.trailing_zeros() / 8) as usize)
}

/// Starts fetching the cache line at `p` without waiting for it. A hint:
/// it never faults, whatever the address, and changes nothing.
#[inline(always)]
pub(super) fn prefetch_line<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, and reads nothing the program sees.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    std::hint::black_box(p);
}

/// Asks for the memory of a large table, not yet written to, to be backed
/// by huge pages where the system gives them on request (Linux with
/// transparent huge pages set to `madvise`). Its keys are hashes, so its
/// lookups land on pages at random: with 4 KiB pages, a table of some
/// tens of megabytes (the dedup ids of a week) spends much of each lookup
/// on finding the page. A hint: the contents do not change, and where it
/// is refused nothing else does either.
fn huge_pages<T>(memory: &mut [std::mem::MaybeUninit<T>]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = memory.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(memory);
        let (from, to) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if to > from {
            // SAFETY: [from, to) lies within `memory`, which this table
            // owns; the advice changes how its pages are backed, never
            // what they hold, and its failure is ignored.
            unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = memory;
}

/// The two passes of a read-ahead over a run of messages: the first
/// starts fetching the tags of each key's home bucket, the second reads
/// them, fetched by then, and starts fetching the entry they point to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Tags,
    Entries,
}

impl<V: Copy + Default> IdMap<V> {
    fn with_buckets(n: usize) -> Self {
        let mut entries = Vec::with_capacity(n * WAYS + 7);
        huge_pages(entries.spare_capacity_mut());
        entries.resize(n * WAYS + 7, (Key(0, 0), V::default()));
        // Some `base` below 8 puts an 8-aligned entry of 24 or 40 bytes on
        // a multiple of 64; for another size, buckets are only unaligned.
        let base = entries.as_ptr().align_offset(64);
        IdMap {
            tags: vec![0; n],
            overflow: vec![0; n.div_ceil(64)],
            entries,
            base: if base < 8 { base } else { 0 },
            n,
            len: 0,
        }
    }

    /// An empty map that holds `n` keys without growing.
    pub fn with_capacity(n: usize) -> Self {
        // Growth comes when more than 7/8 of the entries would be used.
        IdMap::with_buckets((n + 1).div_ceil(7).next_power_of_two().max(8))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// How many more keys fit before the table grows.
    pub fn room(&self) -> usize {
        (self.n * WAYS * 7 / 8).saturating_sub(self.len)
    }

    fn home(&self, k: Key) -> usize {
        // The key is already a hash (xxh3): its high word is uniform.
        (k.0 as usize) & (self.n - 1)
    }

    fn at(&self, i: usize, w: usize) -> usize {
        self.base + i * WAYS + w
    }

    fn overflows(&self, i: usize) -> bool {
        self.overflow[i / 64] >> (i % 64) & 1 != 0
    }

    fn set_overflow(&mut self, i: usize) {
        self.overflow[i / 64] |= 1 << (i % 64);
    }

    /// Starts fetching the tags and the whole home bucket of `k` into the
    /// cache, without waiting for them. Changes nothing.
    #[inline]
    pub fn prefetch(&self, k: Key) {
        self.prefetch_tags(k);
        let bucket = self.entries[self.at(self.home(k), 0)..]
            .as_ptr()
            .cast::<u8>();
        for line in (0..WAYS * std::mem::size_of::<(Key, V)>()).step_by(64) {
            prefetch_line(bucket.wrapping_add(line));
        }
    }

    /// Starts fetching the tags of `k`'s home bucket. Changes nothing.
    #[inline]
    pub fn prefetch_tags(&self, k: Key) {
        let i = self.home(k);
        prefetch_line(&self.tags[i]);
        prefetch_line(&self.overflow[i / 64]);
    }

    /// Reads the tags of `k`'s home bucket (best fetched first with
    /// [`IdMap::prefetch_tags`]) and starts fetching the entry that is
    /// `k`'s, or else the one an insertion would take if it is in that
    /// bucket. Changes nothing.
    #[inline]
    pub fn prefetch_entry(&self, k: Key) {
        let i = self.home(k);
        let word = self.tags[i];
        let m = matches(word, tag(k));
        let w = if m != 0 {
            (m.trailing_zeros() / 8) as usize
        } else {
            first_free(word).unwrap_or(0)
        };
        let entry: *const (Key, V) = &self.entries[self.at(i, w)];
        prefetch_line(entry);
        prefetch_line(
            entry
                .cast::<u8>()
                .wrapping_add(std::mem::size_of::<(Key, V)>() - 1),
        );
    }

    /// Starts fetching, for `k`, what `pass` says. Changes nothing.
    #[inline]
    pub fn warm(&self, k: Key, pass: Pass) {
        match pass {
            Pass::Tags => self.prefetch_tags(k),
            Pass::Entries => self.prefetch_entry(k),
        }
    }

    /// Where `k` is: `(bucket, entry, true)`. When it is absent, and if
    /// `FREE` (a lookup alone skips this), the first empty entry of its
    /// probe sequence, `(bucket, entry, false)`, or, if there is none,
    /// `(last bucket of the sequence, WAYS, false)`.
    #[inline(always)]
    fn find<const FREE: bool>(&self, k: Key) -> (usize, usize, bool) {
        let (tag, mask) = (tag(k), self.n - 1);
        let mut i = self.home(k);
        let mut free = (usize::MAX, WAYS);
        for _ in 0..self.n {
            let word = self.tags[i];
            let mut m = matches(word, tag);
            while m != 0 {
                let w = (m.trailing_zeros() / 8) as usize;
                if self.entries[self.at(i, w)].0 == k {
                    return (i, w, true);
                }
                m &= m - 1;
            }
            if FREE && free.0 == usize::MAX {
                if let Some(w) = first_free(word) {
                    free = (i, w);
                }
            }
            if !self.overflows(i) {
                break;
            }
            i = (i + 1) & mask;
        }
        if free.0 == usize::MAX {
            (i, WAYS, false)
        } else {
            (free.0, free.1, false)
        }
    }

    /// The value of `k`, if it is here.
    pub fn get(&self, k: Key) -> Option<&V> {
        let (i, w, found) = self.find::<false>(k);
        found.then(|| &self.entries[self.at(i, w)].1)
    }

    /// The value of `k`, if it is here, to change.
    pub fn get_mut(&mut self, k: Key) -> Option<&mut V> {
        let (i, w, found) = self.find::<false>(k);
        let at = self.at(i, w);
        found.then(|| &mut self.entries[at].1)
    }

    pub fn contains_key(&self, k: Key) -> bool {
        self.find::<false>(k).2
    }

    /// Inserts `k` with `v`, or sets its value if it is here.
    pub fn insert(&mut self, k: Key, v: V) {
        *self.get_or_insert(k, v) = v;
    }

    /// The value of `k`, inserted as `v` if it is not here.
    pub fn get_or_insert(&mut self, k: Key, v: V) -> &mut V {
        if self.room() == 0 {
            self.grow();
        }
        let at = match self.find::<true>(k) {
            (i, w, true) => self.at(i, w),
            (i, WAYS, false) => {
                self.len += 1;
                self.place(i, k, v)
            }
            (i, w, false) => {
                self.len += 1;
                self.put(i, w, k, v)
            }
        };
        &mut self.entries[at].1
    }

    /// Writes entry `w` of bucket `i`; returns its index.
    fn put(&mut self, i: usize, w: usize, k: Key, v: V) -> usize {
        self.tags[i] |= u64::from(tag(k)) << (8 * w);
        let at = self.at(i, w);
        self.entries[at] = (k, v);
        at
    }

    /// Puts `k` in the first free entry from bucket `i` on, flagging each
    /// full bucket it passes; returns its index.
    fn place(&mut self, mut i: usize, k: Key, v: V) -> usize {
        let mask = self.n - 1;
        loop {
            if let Some(w) = first_free(self.tags[i]) {
                return self.put(i, w, k, v);
            }
            self.set_overflow(i);
            i = (i + 1) & mask;
        }
    }

    /// Doubles the buckets.
    pub fn grow(&mut self) {
        let len = self.len;
        let old = std::mem::replace(self, IdMap::with_buckets(self.n * 2));
        self.len = len;
        for (k, v) in old.iter() {
            self.place(self.home(k), k, v);
        }
    }

    /// Keeps only the entries whose value `keep` accepts.
    ///
    /// The overflow flags are set anew in the same pass: each entry kept
    /// outside its home bucket flags the buckets from its home to it, so
    /// that every lookup still reaches it. An entry whose sequence wrapped
    /// past the table's end flags buckets not yet passed, whose flags are
    /// still to be cleared: those few are flagged after the pass.
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        let mask = self.n - 1;
        let mut wrapped = Vec::new();
        for j in 0..self.n {
            self.overflow[j / 64] &= !(1 << (j % 64));
            for w in 0..WAYS {
                if tag_at(self.tags[j], w) == 0 {
                    continue;
                }
                let (k, v) = &self.entries[self.at(j, w)];
                if !keep(v) {
                    self.tags[j] &= !(0xff << (8 * w));
                    self.len -= 1;
                    continue;
                }
                let home = self.home(*k);
                if home < j {
                    for i in home..j {
                        self.set_overflow(i);
                    }
                } else if home > j {
                    wrapped.push((home, j));
                }
            }
        }
        for (home, j) in wrapped {
            let mut i = home;
            while i != j {
                self.set_overflow(i);
                i = (i + 1) & mask;
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Key, V)> + '_ {
        self.tags.iter().enumerate().flat_map(move |(i, &word)| {
            (0..WAYS)
                .filter(move |&w| tag_at(word, w) != 0)
                .map(move |w| self.entries[self.at(i, w)])
        })
    }
}

/// As a map from key to value: the encoding of the hash maps this
/// replaced.
impl<V: Copy + Default + Serialize> Serialize for IdMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len))?;
        for (k, v) in self.iter() {
            map.serialize_entry(&k, &v)?;
        }
        map.end()
    }
}

impl<'de, V: Copy + Default + Deserialize<'de>> Deserialize<'de> for IdMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Values<V>(std::marker::PhantomData<V>);
        impl<'de, V: Copy + Default + Deserialize<'de>> Visitor<'de> for Values<V> {
            type Value = IdMap<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of id keys to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<IdMap<V>, A::Error> {
                let mut map = IdMap::with_capacity(m.size_hint().unwrap_or(0));
                while let Some((k, v)) = m.next_entry::<Key, V>()? {
                    map.insert(k, v);
                }
                Ok(map)
            }
        }
        d.deserialize_map(Values(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Against a hash map, through insertions, updates and evictions,
        /// with keys crowded onto the first and the last few home buckets,
        /// so that buckets overflow and sequences wrap past the table's end.
        #[test]
        fn behaves_as_a_map(ops in prop::collection::vec((0u8..7, 0u64..8, 0u64..64, 0i64..100), 1..800)) {
            let mut set = IdSet::default();
            let mut map: HashMap<Key, i64> = HashMap::new();
            for (op, home, salt, t) in ops {
                let high = if home < 4 { home } else { u64::MAX - home };
                let k = Key(high, salt);
                // Hints change nothing, wherever the key is.
                set.prefetch(k);
                set.prefetch_tags(k);
                set.prefetch_entry(k);
                match op {
                    0..=1 => {
                        set.insert(k, t);
                        map.insert(k, t);
                    }
                    2 => {
                        set.retain(|x| *x >= t / 4);
                        map.retain(|_, x| *x >= t / 4);
                    }
                    3 => {
                        *set.get_or_insert(k, t) += 1;
                        *map.entry(k).or_insert(t) += 1;
                    }
                    4 => prop_assert_eq!(set.contains_key(k), map.contains_key(&k)),
                    5 => prop_assert_eq!(set.get(k), map.get(&k)),
                    _ => {
                        if let Some(v) = set.get_mut(k) {
                            *v -= 1;
                        }
                        if let Some(v) = map.get_mut(&k) {
                            *v -= 1;
                        }
                    }
                }
                prop_assert_eq!(set.len(), map.len());
            }
            for (k, t) in &map {
                prop_assert_eq!(set.get(*k), Some(t));
            }
            let mut all: Vec<_> = set.iter().collect();
            all.sort();
            let mut want: Vec<_> = map.into_iter().collect();
            want.sort();
            prop_assert_eq!(all, want);
        }
    }

    #[test]
    fn holds_its_capacity_without_growing() {
        for n in [0, 1, 55, 56, 57, 1000] {
            let mut set = IdSet::with_capacity(n);
            let buckets = set.n;
            for i in 0..n as u64 {
                set.insert(Key(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i), 1);
            }
            assert_eq!(set.n, buckets, "{n} ids");
            set.insert(Key(u64::MAX, u64::MAX), 1);
            assert!(set.len() * 8 <= set.n * WAYS * 7);
        }
    }

    /// A table of several huge pages (the hint applies) holds what it is
    /// given, as a small one does.
    #[test]
    fn a_table_on_huge_pages_holds_its_keys() {
        let n = 300_000u64;
        let mut set = IdSet::with_capacity(n as usize);
        assert!(set.entries.len() * std::mem::size_of::<(Key, i64)>() > 3 * (2 << 20));
        let k = |i: u64| Key(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i);
        for i in 0..n {
            set.insert(k(i), i as i64);
        }
        assert_eq!(set.len(), n as usize);
        assert!((0..n).all(|i| set.get(k(i)) == Some(&(i as i64))));
        assert_eq!(set.get(k(n)), None);
    }

    #[test]
    fn encodes_as_the_map_it_replaced() {
        let mut set = IdSet::default();
        let mut map: HashMap<Key, i64> = HashMap::new();
        for i in 0..100u64 {
            set.insert(Key(i * 7, i), i as i64);
            map.insert(Key(i * 7, i), i as i64);
        }
        let back: HashMap<Key, i64> =
            postcard::from_bytes(&postcard::to_allocvec(&set).unwrap()).unwrap();
        assert_eq!(back, map);
        let set2: IdSet = postcard::from_bytes(&postcard::to_allocvec(&map).unwrap()).unwrap();
        assert_eq!(set2.len(), 100);
        // Sized from the encoded length: no growth on the way.
        assert_eq!(set2.n, IdSet::with_capacity(100).n);
        assert_eq!(set2.get(Key(7 * 9, 9)), Some(&9));
    }
}

//! The applied event ids of the dedup horizon, each with the time it was
//! applied: an open-addressing table laid out for the hot path.
//!
//! The set holds every id of the horizon (some 600,000 for a week at one
//! event a second), far more than the caches. As in the standard library's
//! hash map, a lookup first reads a compact array of one-byte tags (one to
//! two bytes per id, so it mostly stays in cache), and reads an entry only
//! where a tag matches: an id not seen before costs no fetch of an entry,
//! only the write of its own. Unlike that map, the place of an id's entry is
//! known before it is looked up: it is in its home bucket of eight, three
//! aligned cache lines, unless that bucket was full. [`IdSet::prefetch`]
//! starts fetching the tags and the bucket without waiting, so that a run
//! of messages has its fetches overlap, and the lookup and insertion that
//! follow find them in cache.

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Key;

/// Entries per bucket: one tag byte each in a bucket's tag word.
const WAYS: usize = 8;

/// Words per entry: the key's two and the time, side by side, so that
/// writing an entry mostly writes one cache line.
const ENTRY: usize = 3;
/// Words per bucket: 192 bytes, three cache lines.
const BUCKET: usize = ENTRY * WAYS;

/// A map of id keys to times. At most 7/8 of its entries are used.
#[derive(Debug, Clone)]
pub struct IdSet {
    /// Per bucket, byte `w` is entry `w`'s tag, 0 when it is empty.
    tags: Vec<u64>,
    /// Bit `i % 64` of word `i / 64`: some entry lies past bucket `i` in
    /// its probe sequence, so a lookup that does not find its key there
    /// goes on to the next bucket.
    overflow: Vec<u64>,
    /// The buckets, from word `base` on (the first whose address is a
    /// multiple of 64), so that each spans exactly three cache lines. What
    /// an empty entry holds does not matter; zeroed words are what the
    /// allocator can give without writing each (fresh pages already are).
    words: Vec<u64>,
    base: usize,
    /// Buckets: a power of two.
    n: usize,
    len: usize,
}

impl Default for IdSet {
    fn default() -> Self {
        IdSet::with_buckets(8)
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

impl IdSet {
    fn with_buckets(n: usize) -> Self {
        let words = vec![0u64; n * BUCKET + 7];
        let base = words.as_ptr().align_offset(64).min(7);
        IdSet {
            tags: vec![0; n],
            overflow: vec![0; n.div_ceil(64)],
            words,
            base,
            n,
            len: 0,
        }
    }

    /// An empty set that holds `n` ids without growing.
    pub fn with_capacity(n: usize) -> Self {
        // Growth comes when more than 7/8 of the entries would be used.
        IdSet::with_buckets((n + 1).div_ceil(7).next_power_of_two().max(8))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn home(&self, k: Key) -> usize {
        // The key is already a hash (xxh3): its high word is uniform.
        (k.0 as usize) & (self.n - 1)
    }

    fn at(&self, i: usize, w: usize) -> usize {
        self.base + i * BUCKET + w * ENTRY
    }

    fn entry(&self, i: usize, w: usize) -> (Key, i64) {
        let e = &self.words[self.at(i, w)..][..ENTRY];
        (Key(e[0], e[1]), e[2] as i64)
    }

    fn set_entry(&mut self, i: usize, w: usize, k: Key, t: i64) {
        let at = self.at(i, w);
        self.words[at..at + ENTRY].copy_from_slice(&[k.0, k.1, t as u64]);
    }

    fn overflows(&self, i: usize) -> bool {
        self.overflow[i / 64] >> (i % 64) & 1 != 0
    }

    fn set_overflow(&mut self, i: usize) {
        self.overflow[i / 64] |= 1 << (i % 64);
    }

    /// Starts fetching the tags and the home bucket of `k` into the cache,
    /// without waiting for them. Changes nothing.
    #[inline]
    pub fn prefetch(&self, k: Key) {
        let i = self.home(k);
        let tags: *const u64 = &self.tags[i];
        let overflow: *const u64 = &self.overflow[i / 64];
        let bucket: *const u64 = &self.words[self.at(i, 0)];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            // SAFETY: a prefetch is a hint that never faults, and every
            // address is inside the tag word, the overflow word or the
            // bucket (192 bytes).
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(tags.cast());
                _mm_prefetch::<_MM_HINT_T0>(overflow.cast());
                _mm_prefetch::<_MM_HINT_T0>(bucket.cast());
                _mm_prefetch::<_MM_HINT_T0>(bucket.cast::<i8>().add(64));
                _mm_prefetch::<_MM_HINT_T0>(bucket.cast::<i8>().add(128));
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        std::hint::black_box((tags, overflow, bucket));
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
                let at = self.at(i, w);
                if self.words[at] == k.0 && self.words[at + 1] == k.1 {
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

    /// The time `k` was inserted with, if it is here.
    pub fn get(&self, k: Key) -> Option<i64> {
        let (i, w, found) = self.find::<false>(k);
        found.then(|| self.entry(i, w).1)
    }

    /// Inserts `k` with time `t`, or sets its time if it is here.
    pub fn insert(&mut self, k: Key, t: i64) {
        if (self.len + 1) * 8 > self.n * WAYS * 7 {
            self.grow();
        }
        match self.find::<true>(k) {
            (i, w, true) => self.set_entry(i, w, k, t),
            (i, WAYS, false) => {
                self.place(i, k, t);
                self.len += 1;
            }
            (i, w, false) => {
                self.put(i, w, k, t);
                self.len += 1;
            }
        }
    }

    fn put(&mut self, i: usize, w: usize, k: Key, t: i64) {
        self.tags[i] |= u64::from(tag(k)) << (8 * w);
        self.set_entry(i, w, k, t);
    }

    /// Puts `k` in the first free entry from bucket `i` on, flagging each
    /// full bucket it passes.
    fn place(&mut self, mut i: usize, k: Key, t: i64) {
        let mask = self.n - 1;
        loop {
            if let Some(w) = first_free(self.tags[i]) {
                self.put(i, w, k, t);
                return;
            }
            self.set_overflow(i);
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let len = self.len;
        let old = std::mem::replace(self, IdSet::with_buckets(self.n * 2));
        self.len = len;
        for (k, t) in old.iter() {
            self.place(self.home(k), k, t);
        }
    }

    /// Keeps only the entries whose time `keep` accepts.
    ///
    /// The overflow flags are set anew in the same pass: each entry kept
    /// outside its home bucket flags the buckets from its home to it, so
    /// that every lookup still reaches it. An entry whose sequence wrapped
    /// past the table's end flags buckets not yet passed, whose flags are
    /// still to be cleared: those few are flagged after the pass.
    pub fn retain(&mut self, mut keep: impl FnMut(i64) -> bool) {
        let mask = self.n - 1;
        let mut wrapped = Vec::new();
        for j in 0..self.n {
            self.overflow[j / 64] &= !(1 << (j % 64));
            for w in 0..WAYS {
                if tag_at(self.tags[j], w) == 0 {
                    continue;
                }
                let (k, t) = self.entry(j, w);
                if !keep(t) {
                    self.tags[j] &= !(0xff << (8 * w));
                    self.len -= 1;
                    continue;
                }
                let home = self.home(k);
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

    pub fn iter(&self) -> impl Iterator<Item = (Key, i64)> + '_ {
        self.tags.iter().enumerate().flat_map(move |(i, &word)| {
            (0..WAYS)
                .filter(move |&w| tag_at(word, w) != 0)
                .map(move |w| self.entry(i, w))
        })
    }
}

/// As a map from key to time: the encoding of the hash map this replaced.
impl Serialize for IdSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len))?;
        for (k, t) in self.iter() {
            map.serialize_entry(&k, &t)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for IdSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IdSet;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of id keys to times")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<IdSet, A::Error> {
                let mut set = IdSet::with_capacity(m.size_hint().unwrap_or(0));
                while let Some((k, t)) = m.next_entry::<Key, i64>()? {
                    set.insert(k, t);
                }
                Ok(set)
            }
        }
        d.deserialize_map(V)
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
        fn behaves_as_a_map(ops in prop::collection::vec((0u8..4, 0u64..8, 0u64..64, 0i64..100), 1..800)) {
            let mut set = IdSet::default();
            let mut map: HashMap<Key, i64> = HashMap::new();
            for (op, home, salt, t) in ops {
                let high = if home < 4 { home } else { u64::MAX - home };
                let k = Key(high, salt);
                match op {
                    0..=1 => {
                        set.insert(k, t);
                        map.insert(k, t);
                    }
                    2 => {
                        set.retain(|x| x >= t / 4);
                        map.retain(|_, x| *x >= t / 4);
                    }
                    _ => prop_assert_eq!(set.get(k), map.get(&k).copied()),
                }
                prop_assert_eq!(set.len(), map.len());
            }
            for (k, t) in &map {
                prop_assert_eq!(set.get(*k), Some(*t));
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
        assert_eq!(set2.get(Key(7 * 9, 9)), Some(9));
    }
}

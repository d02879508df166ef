//! A strict JSON scanner for one message object, written for the hot path.
//!
//! [`scan`] reads the top-level object in one pass and keeps only the fields
//! of events.md ([`Field`]), each as a [`Tok`]: strings stay slices of the
//! message (unescaped later, and only if they hold an escape), numbers are
//! converted as they are met. Every other value is checked and skipped. The
//! input is accepted exactly when serde_json would accept it for the derived
//! struct this replaces; a differential property test holds the two together:
//!
//! - the grammar of RFC 8259, no trailing characters but whitespace;
//! - no control character inside a string, only the JSON escapes;
//! - UTF-16 surrogates paired in keys and in the strings of known fields;
//! - a known field given twice is an error (an unknown one may repeat);
//! - a number too large for an `f64` in a known field is an error.
//!
//! Nesting deeper than the configured limit stops the scan as soon as it is
//! met ([`Stop::TooDeep`]). The text is a `&str`: UTF-8 was checked first.

use std::borrow::Cow;

macro_rules! fields {
    ($($variant:ident = $name:literal,)*) => {
        /// The fields of events.md the parser reads; any other is skipped.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(super) enum Field {
            $($variant,)*
        }

        impl Field {
            const ALL: [Field; [$(stringify!($variant),)*].len()] = [$(Field::$variant,)*];

            /// The field a (unescaped) key names.
            fn of(key: &[u8]) -> Option<Field> {
                match key {
                    $($name => Some(Field::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

fields! {
    Id = b"id",
    Type = b"type",
    OccurredAt = b"occurred_at",
    RepId = b"rep_id",
    TeamId = b"team_id",
    Source = b"source",
    LeadId = b"lead_id",
    DealId = b"deal_id",
    CallId = b"call_id",
    EmailId = b"email_id",
    MeetingId = b"meeting_id",
    AccountId = b"account_id",
    DurationSeconds = b"duration_seconds",
    Outcome = b"outcome",
    ScheduledFor = b"scheduled_for",
    Amount = b"amount",
    Currency = b"currency",
    Stage = b"stage",
    ToStage = b"to_stage",
    FromStage = b"from_stage",
    Reason = b"reason",
    Mrr = b"mrr",
    Kind = b"kind",
    Score = b"score",
    Category = b"category",
    Period = b"period",
}

/// One field's value as it came.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) enum Tok<'a> {
    #[default]
    Absent,
    Null,
    /// A boolean, an object or an array: never a valid field value.
    Other,
    /// The text between the quotes; `escaped` when it holds a backslash.
    Str {
        raw: &'a str,
        escaped: bool,
    },
    Int(i64),
    Float(f64),
}

impl<'a> Tok<'a> {
    /// A string's value, borrowed unless it had to be unescaped.
    pub(super) fn text(raw: &'a str, escaped: bool) -> Cow<'a, str> {
        if escaped {
            Cow::Owned(unescape(raw))
        } else {
            Cow::Borrowed(raw)
        }
    }
}

/// The known fields of one message.
#[derive(Debug, Default)]
pub(super) struct Fields<'a>([Tok<'a>; Field::ALL.len()]);

impl<'a> Fields<'a> {
    pub(super) fn get(&self, f: Field) -> Tok<'a> {
        self.0[f as usize]
    }

    /// Takes a field's value out, leaving it absent.
    pub(super) fn take(&mut self, f: Field) -> Tok<'a> {
        std::mem::take(&mut self.0[f as usize])
    }
}

/// Why [`scan`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// The text stops being the JSON this scanner accepts at this byte.
    Invalid(usize),
    /// Objects and arrays nest deeper than allowed (the message object is
    /// depth 1).
    TooDeep,
}

use Stop::Invalid;

type R<T> = Result<T, Stop>;

/// Messages of up to this many 64-byte words have their quotes found
/// before they are scanned ([`Prescan`]).
const PRESCAN_WORDS: usize = 8;

/// What one pass over a message's bytes finds before it is scanned, all of
/// it at once: sixteen bytes compared at a time, with no step waiting for
/// the one before. A scan that finds the end of each string as it goes
/// cannot start looking for a key before the string ahead of it has ended,
/// so its steps follow one another; with the quotes known, the end of a
/// string is the next quote's bit, a few register operations away.
pub(super) struct Prescan {
    /// Bit `i % 64` of word `i / 64`: byte `i` is a quote. Filled in for a
    /// message that fits (on x86_64), and read only when it is plain.
    quotes: [u64; PRESCAN_WORDS],
    /// The message fits `quotes` and holds no backslash and no control
    /// character (tabs and line ends included): no string has an escape,
    /// so each quote opens or closes one.
    plain: bool,
    /// Every byte is ASCII, so the message is UTF-8.
    pub(super) ascii: bool,
}

impl Prescan {
    pub(super) fn of(b: &[u8]) -> Prescan {
        let mut pre = Prescan {
            quotes: [0; PRESCAN_WORDS],
            plain: false,
            ascii: false,
        };
        #[cfg(target_arch = "x86_64")]
        if b.len() <= 64 * PRESCAN_WORDS {
            let (mut special, mut high) = (0, 0);
            let mut chunks = b.chunks_exact(16);
            let mut add = |k: usize, m: Masks16| {
                pre.quotes[k / 4] |= u64::from(m.quote) << (16 * (k % 4));
                special |= m.escape_or_control;
                high |= m.high;
            };
            let mut k = 0;
            for chunk in &mut chunks {
                add(k, masks16(chunk.try_into().expect("sixteen bytes")));
                k += 1;
            }
            let rest = chunks.remainder().len();
            if rest > 0 && b.len() >= 16 {
                // The last sixteen bytes, of which the first `16 - rest`
                // were seen already: their quotes are shifted out (the other
                // masks only say whether any byte is special or high).
                let mut m = masks16(b[b.len() - 16..].try_into().expect("sixteen bytes"));
                m.quote >>= 16 - rest;
                add(k, m);
            } else if rest > 0 {
                // Spaces: neither quotes, nor special, nor high.
                let mut last = [b' '; 16];
                last[..rest].copy_from_slice(chunks.remainder());
                add(k, masks16(&last));
            }
            pre.plain = special == 0;
            pre.ascii = high == 0;
            return pre;
        }
        pre.ascii = b.is_ascii();
        pre
    }

    /// The quotes, when each opens or closes a string.
    fn quotes(&self) -> Option<&[u64; PRESCAN_WORDS]> {
        self.plain.then_some(&self.quotes)
    }
}

/// The first set bit at or after bit `from`.
fn next_bit(words: &[u64; PRESCAN_WORDS], from: usize) -> Option<usize> {
    let mut w = from / 64;
    let mut m = *words.get(w)? & (u64::MAX << (from % 64));
    while m == 0 {
        w += 1;
        m = *words.get(w)?;
    }
    Some(w * 64 + m.trailing_zeros() as usize)
}

/// Scans one JSON object nested at most `max_depth` deep into `fields`,
/// which the caller gives with every field absent: they fill some 600
/// bytes, which returning them would copy twice per message. `pre` is the
/// [`Prescan`] of `text`, if there is one; the result is the same without.
pub(super) fn scan<'a>(
    text: &'a str,
    pre: Option<&Prescan>,
    max_depth: usize,
    fields: &mut Fields<'a>,
) -> R<()> {
    let mut s = Scanner {
        text,
        b: text.as_bytes(),
        i: 0,
        max_depth,
        quotes: pre.and_then(Prescan::quotes),
    };
    s.ws();
    s.eat(b'{')?;
    if max_depth < 1 {
        return Err(Stop::TooDeep);
    }
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            s.ws();
            let at = s.i;
            let (key, escaped) = s.key(true)?;
            let field = if escaped {
                Field::of(unescape(key).as_bytes())
            } else {
                Field::of(key.as_bytes())
            };
            match field {
                Some(f) => {
                    if fields.0[f as usize] != Tok::Absent {
                        return Err(Invalid(at));
                    }
                    fields.0[f as usize] = s.value()?;
                }
                None => s.skip(false)?,
            }
            s.ws();
            match s.next()? {
                b',' => {}
                b'}' => break,
                _ => return Err(Invalid(s.i - 1)),
            }
        }
    }
    s.ws();
    if s.i != s.b.len() {
        return Err(Invalid(s.i));
    }
    Ok(())
}

/// A bit per byte of sixteen, lowest byte first.
#[cfg(target_arch = "x86_64")]
struct Masks16 {
    quote: u32,
    escape_or_control: u32,
    /// Bytes with the high bit set: not ASCII.
    high: u32,
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn masks16(chunk: &[u8; 16]) -> Masks16 {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is in the baseline of every x86_64 target, and the load
    // reads the sixteen bytes of `chunk`, unaligned.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // Below 0x20, unsigned: the byte is its own minimum with 0x1f.
        let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
        Masks16 {
            quote: _mm_movemask_epi8(quote) as u32,
            escape_or_control: _mm_movemask_epi8(_mm_or_si128(backslash, control)) as u32,
            high: _mm_movemask_epi8(v) as u32,
        }
    }
}

/// A bit per byte of `chunk` that is a quote, a backslash or a control
/// character, lowest byte first.
#[cfg(target_arch = "x86_64")]
fn special16(chunk: &[u8; 16]) -> u32 {
    let m = masks16(chunk);
    m.quote | m.escape_or_control
}

struct Scanner<'a, 'p> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    max_depth: usize,
    /// The quotes of a plain message ([`Prescan`]).
    quotes: Option<&'p [u64; PRESCAN_WORDS]>,
}

impl<'a> Scanner<'a, '_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> R<u8> {
        let c = self.peek().ok_or(Invalid(self.i))?;
        self.i += 1;
        Ok(c)
    }

    fn eat(&mut self, c: u8) -> R<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Invalid(self.i))
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> R<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Invalid(self.i))
        }
    }

    /// The value of a known field.
    fn value(&mut self) -> R<Tok<'a>> {
        match self.peek() {
            Some(b'"') => {
                self.i += 1;
                let (raw, escaped) = self.string(true)?;
                Ok(Tok::Str { raw, escaped })
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'n') => self.literal(b"null").map(|()| Tok::Null),
            // The first level of keys of an object value is read as keys
            // are, with paired surrogates.
            Some(b'{' | b'[' | b't' | b'f') => self.skip(true).map(|()| Tok::Other),
            _ => Err(Invalid(self.i)),
        }
    }

    /// The rest of a string after its opening quote: its raw text, and
    /// whether it holds an escape. `strict` requires paired surrogates.
    /// Inlined, so that the scanner's position stays in a register on the
    /// way through a plain message.
    #[inline(always)]
    fn string(&mut self, strict: bool) -> R<(&'a str, bool)> {
        let Some(quotes) = self.quotes else {
            return self.string_searched(strict);
        };
        let start = self.i;
        let Some(end) = next_bit(quotes, start) else {
            self.i = self.b.len();
            return Err(Invalid(self.i));
        };
        self.i = end + 1;
        // SAFETY: `start` follows the opening quote and `end` is the
        // closing one: char boundaries, in order and in bounds.
        Ok((unsafe { self.text.get_unchecked(start..end) }, false))
    }

    /// [`Scanner::string`] without the quotes known: its end searched for.
    #[inline(never)]
    fn string_searched(&mut self, strict: bool) -> R<(&'a str, bool)> {
        let start = self.i;
        let mut escaped = false;
        loop {
            self.skip_plain();
            match self.next()? {
                b'"' => {
                    debug_assert!(start < self.i && self.b[start - 1] == b'"');
                    // SAFETY: `start` follows the opening quote and
                    // `self.i - 1` is the closing one, so both are char
                    // boundaries of `text` (an ASCII byte is never inside
                    // a UTF-8 sequence), in order and in bounds. The
                    // checked slice measured at some 5% of parsing.
                    let raw = unsafe { self.text.get_unchecked(start..self.i - 1) };
                    return Ok((raw, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.escape(strict)?;
                }
                _ => return Err(Invalid(self.i - 1)),
            }
        }
    }

    /// Moves past bytes that need no attention in a string: anything but a
    /// quote, a backslash or a control character. Sixteen bytes at a time
    /// where SSE2 is there (every x86_64), else eight.
    fn skip_plain(&mut self) {
        #[cfg(target_arch = "x86_64")]
        while let Some(chunk) = self.b.get(self.i..self.i + 16) {
            let special = special16(chunk.try_into().expect("sixteen bytes"));
            if special != 0 {
                self.i += special.trailing_zeros() as usize;
                return;
            }
            self.i += 16;
        }
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGHS: u64 = 0x8080_8080_8080_8080;
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            let has = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
            let special = has(w ^ (ONES * b'"' as u64))
                | has(w ^ (ONES * b'\\' as u64))
                | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS);
            if special != 0 {
                // The lowest flagged byte is exact (the borrow only runs
                // upward); move to it and finish bytewise.
                self.i += (special.trailing_zeros() / 8) as usize;
                break;
            }
            self.i += 8;
        }
        while let Some(c) = self.peek() {
            if c == b'"' || c == b'\\' || c < 0x20 {
                return;
            }
            self.i += 1;
        }
    }

    /// One escape after its backslash.
    fn escape(&mut self, strict: bool) -> R<()> {
        match self.next()? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(()),
            b'u' => {
                let n = self.hex4()?;
                if !strict {
                    return Ok(());
                }
                match n {
                    0xDC00..=0xDFFF => Err(Invalid(self.i)),
                    0xD800..=0xDBFF => {
                        if self.next()? != b'\\' || self.next()? != b'u' {
                            return Err(Invalid(self.i));
                        }
                        match self.hex4()? {
                            0xDC00..=0xDFFF => Ok(()),
                            _ => Err(Invalid(self.i)),
                        }
                    }
                    _ => Ok(()),
                }
            }
            _ => Err(Invalid(self.i - 1)),
        }
    }

    fn hex4(&mut self) -> R<u16> {
        let digits = self
            .b
            .get(self.i..self.i + 4)
            .ok_or(Invalid(self.b.len()))?;
        let mut n = 0u16;
        for &d in digits {
            let v = (d as char).to_digit(16).ok_or(Invalid(self.i))?;
            n = n << 4 | v as u16;
        }
        self.i += 4;
        Ok(n)
    }

    /// Moves past a run of digits; false when there is none.
    fn digits(&mut self) -> bool {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i > start
    }

    /// A number, converted as serde_json converts it: an integer that fits
    /// an `i64` is exact; any other number is the nearest `f64`.
    fn number(&mut self) -> R<Tok<'a>> {
        let start = self.i;
        let float = self.skip_number()?;
        let raw = &self.text[start..self.i];
        if !float {
            let (negative, digits) = match raw.strip_prefix('-') {
                Some(digits) => (true, digits),
                None => (false, raw),
            };
            if let Ok(magnitude) = digits.parse::<u64>() {
                return Ok(if !negative {
                    i64::try_from(magnitude).map_or(Tok::Float(magnitude as f64), Tok::Int)
                } else {
                    // As serde_json: -0 and anything below i64::MIN are floats.
                    let neg = (magnitude as i64).wrapping_neg();
                    if neg >= 0 {
                        Tok::Float(-(magnitude as f64))
                    } else {
                        Tok::Int(neg)
                    }
                });
            }
        }
        match raw.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Tok::Float(x)),
            _ => Err(Invalid(start)),
        }
    }

    /// Moves past one value of any kind, checking its grammar. `keys_strict`
    /// requires paired surrogates in the keys of the outermost object.
    fn skip(&mut self, keys_strict: bool) -> R<()> {
        // Open containers, innermost last: true for an object.
        let mut open: Vec<bool> = Vec::new();
        loop {
            // A value.
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    self.string(false)?;
                }
                Some(b'-' | b'0'..=b'9') => {
                    self.skip_number()?;
                }
                Some(b'n') => self.literal(b"null")?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(c @ (b'{' | b'[')) => {
                    // The message object, the open containers, this one.
                    if 2 + open.len() > self.max_depth {
                        return Err(Stop::TooDeep);
                    }
                    self.i += 1;
                    self.ws();
                    let object = c == b'{';
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                    } else {
                        open.push(object);
                        if object {
                            self.key(keys_strict && open.len() == 1)?;
                        }
                        continue;
                    }
                }
                _ => return Err(Invalid(self.i)),
            }
            // After a value: a comma and the next, or the ends of containers.
            loop {
                let Some(&object) = open.last() else {
                    return Ok(());
                };
                self.ws();
                match self.next()? {
                    b',' => {
                        self.ws();
                        if object {
                            self.key(keys_strict && open.len() == 1)?;
                        }
                        break;
                    }
                    b'}' if object => {
                        open.pop();
                    }
                    b']' if !object => {
                        open.pop();
                    }
                    _ => return Err(Invalid(self.i - 1)),
                }
            }
        }
    }

    /// An object key, its colon and the whitespace after it: the key's raw
    /// text, and whether it holds an escape. Inlined: returned from a call,
    /// the result went through a stack copy that stalled the load reading
    /// it back (perf: two thirds of this function's time).
    #[inline(always)]
    fn key(&mut self, strict: bool) -> R<(&'a str, bool)> {
        self.eat(b'"')?;
        let key = self.string(strict)?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Ok(key)
    }

    /// Moves past a number, checking its grammar; true when it has a
    /// fraction or an exponent.
    fn skip_number(&mut self) -> R<bool> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Invalid(self.i)),
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.digits() {
                return Err(Invalid(self.i));
            }
            float = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !self.digits() {
                return Err(Invalid(self.i));
            }
            float = true;
        }
        Ok(float)
    }
}

/// The value of a string's raw text, which [`scan`] has checked: every
/// escape is well formed. A lone surrogate (possible only where
/// [`scan`] does not require pairs) becomes U+FFFD.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let b = rest.as_bytes();
        let (c, used) = match b[at + 1] {
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'n' => ('\n', 2),
            b'r' => ('\r', 2),
            b't' => ('\t', 2),
            b'u' => {
                let hex = |from: usize| u32::from_str_radix(&rest[from..from + 4], 16).unwrap_or(0);
                let n = hex(at + 2);
                let pair = (0xD800..0xDC00).contains(&n)
                    && rest.as_bytes().get(at + 6..at + 8) == Some(b"\\u")
                    && (0xDC00..0xE000).contains(&hex(at + 8));
                if pair {
                    let low = hex(at + 8);
                    let c = 0x10000 + ((n - 0xD800) << 10) + (low - 0xDC00);
                    (char::from_u32(c).unwrap_or('\u{fffd}'), 12)
                } else {
                    (char::from_u32(n).unwrap_or('\u{fffd}'), 6)
                }
            }
            // `"`, `\` and `/` stand for themselves.
            other => (other as char, 2),
        };
        out.push(c);
        rest = &rest[at + used..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    //! The scanner against the serde_json-derived struct it replaced, kept
    //! here as the reference.

    use super::*;
    use proptest::prelude::*;
    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde::Deserialize;
    use std::fmt;

    fn scanned(text: &str, max_depth: usize) -> R<Fields<'_>> {
        let mut fields = Fields::default();
        let pre = Prescan::of(text.as_bytes());
        scan(text, Some(&pre), max_depth, &mut fields).map(|()| fields)
    }

    /// The scan without a [`Prescan`].
    fn scanned_alone(text: &str, max_depth: usize) -> R<Fields<'_>> {
        let mut fields = Fields::default();
        scan(text, None, max_depth, &mut fields).map(|()| fields)
    }

    #[derive(Debug, Default, Clone, PartialEq)]
    enum Val<'a> {
        #[default]
        Absent,
        Null,
        Str(Cow<'a, str>),
        Int(i64),
        Float(f64),
        Other,
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Val<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<'a>(std::marker::PhantomData<&'a ()>);
            impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
                type Value = Val<'a>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("any json value")
                }
                fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Val<'a>, E> {
                    Ok(Val::Str(Cow::Borrowed(v)))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Val<'a>, E> {
                    Ok(Val::Str(Cow::Owned(v.to_owned())))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Val<'a>, E> {
                    Ok(Val::Int(v))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Val<'a>, E> {
                    Ok(i64::try_from(v).map_or(Val::Float(v as f64), Val::Int))
                }
                fn visit_f64<E: de::Error>(self, v: f64) -> Result<Val<'a>, E> {
                    Ok(Val::Float(v))
                }
                fn visit_bool<E: de::Error>(self, _: bool) -> Result<Val<'a>, E> {
                    Ok(Val::Other)
                }
                fn visit_unit<E: de::Error>(self) -> Result<Val<'a>, E> {
                    Ok(Val::Null)
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val<'a>, A::Error> {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(Val::Other)
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val<'a>, A::Error> {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    Ok(Val::Other)
                }
            }
            d.deserialize_any(V(std::marker::PhantomData))
        }
    }

    /// The struct serde_json filled before the scanner, field for field.
    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Raw<'a> {
        #[serde(borrow)]
        id: Val<'a>,
        #[serde(borrow, rename = "type")]
        kind: Val<'a>,
        #[serde(borrow)]
        occurred_at: Val<'a>,
        #[serde(borrow)]
        rep_id: Val<'a>,
        #[serde(borrow)]
        team_id: Val<'a>,
        #[serde(borrow)]
        source: Val<'a>,
        #[serde(borrow)]
        lead_id: Val<'a>,
        #[serde(borrow)]
        deal_id: Val<'a>,
        #[serde(borrow)]
        call_id: Val<'a>,
        #[serde(borrow)]
        email_id: Val<'a>,
        #[serde(borrow)]
        meeting_id: Val<'a>,
        #[serde(borrow)]
        account_id: Val<'a>,
        #[serde(borrow)]
        duration_seconds: Val<'a>,
        #[serde(borrow)]
        outcome: Val<'a>,
        #[serde(borrow)]
        scheduled_for: Val<'a>,
        #[serde(borrow)]
        amount: Val<'a>,
        #[serde(borrow)]
        currency: Val<'a>,
        #[serde(borrow)]
        stage: Val<'a>,
        #[serde(borrow)]
        to_stage: Val<'a>,
        #[serde(borrow)]
        from_stage: Val<'a>,
        #[serde(borrow)]
        reason: Val<'a>,
        #[serde(borrow)]
        mrr: Val<'a>,
        #[serde(borrow, rename = "kind")]
        survey_kind: Val<'a>,
        #[serde(borrow)]
        score: Val<'a>,
        #[serde(borrow)]
        category: Val<'a>,
        #[serde(borrow)]
        period: Val<'a>,
    }

    impl<'a> Raw<'a> {
        /// In [`Field`] order.
        fn vals(self) -> Vec<Val<'a>> {
            vec![
                self.id,
                self.kind,
                self.occurred_at,
                self.rep_id,
                self.team_id,
                self.source,
                self.lead_id,
                self.deal_id,
                self.call_id,
                self.email_id,
                self.meeting_id,
                self.account_id,
                self.duration_seconds,
                self.outcome,
                self.scheduled_for,
                self.amount,
                self.currency,
                self.stage,
                self.to_stage,
                self.from_stage,
                self.reason,
                self.mrr,
                self.survey_kind,
                self.score,
                self.category,
                self.period,
            ]
        }
    }

    fn as_val(t: Tok<'_>) -> Val<'_> {
        match t {
            Tok::Absent => Val::Absent,
            Tok::Null => Val::Null,
            Tok::Other => Val::Other,
            Tok::Str { raw, escaped } => Val::Str(Tok::text(raw, escaped)),
            Tok::Int(i) => Val::Int(i),
            Tok::Float(f) => Val::Float(f),
        }
    }

    /// Both accept or both refuse `text`, and agree on every field.
    fn agree(text: &str) -> Result<(), TestCaseError> {
        let ours = scanned(text, usize::MAX);
        let theirs = serde_json::from_str::<Raw<'_>>(text);
        prop_assert_eq!(
            ours.is_ok(),
            theirs.is_ok(),
            "{:?}: scanner {:?}, serde_json {:?}",
            text,
            ours.as_ref().err(),
            theirs.as_ref().err().map(|e| e.to_string())
        );
        if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
            let ours: Vec<Val<'_>> = ours.0.iter().map(|&t| as_val(t)).collect();
            // Floats compared by bits: -0.0 is not 0.0.
            let bits = |v: &[Val<'_>]| -> Vec<String> {
                v.iter()
                    .map(|x| match x {
                        Val::Float(f) => format!("f{:x}", f.to_bits()),
                        other => format!("{other:?}"),
                    })
                    .collect()
            };
            prop_assert_eq!(bits(&ours), bits(&theirs.vals()), "{:?}", text);
        }
        Ok(())
    }

    #[test]
    fn agrees_with_serde_on_chosen_cases() {
        let cases = [
            r#"{}"#,
            r#" { } "#,
            r#"{"id":"a","type":"call.logged","amount":12.5}"#,
            r#"{"id":"a","id":"b"}"#,
            r#"{"x":1,"x":2}"#,
            r#"{"\u0069d":"esc"}"#,
            r#"{"id":"a\"b\\c\/d\b\f\n\r\te\u00e9\ud83d\ude00"}"#,
            r#"{"id":"\ud800"}"#,
            r#"{"id":"\udc00"}"#,
            r#"{"id":"\ud800\u0041"}"#,
            r#"{"x":"\ud800"}"#,
            r#"{"\ud800":1}"#,
            r#"{"amount":{"\ud800":1}}"#,
            r#"{"amount":{"a":{"\ud800":1}}}"#,
            r#"{"amount":["\ud800",{"\ud800":1}]}"#,
            "{\"id\":\"a\u{1}\"}",
            "{\"x\":\"a\tb\"}",
            r#"{"id":"\x"}"#,
            r#"{"id":"\u12"}"#,
            r#"{"id":"\u12g4"}"#,
            r#"{"amount":-0}"#,
            r#"{"amount":-0.0}"#,
            r#"{"amount":01}"#,
            r#"{"amount":1.}"#,
            r#"{"amount":.5}"#,
            r#"{"amount":-}"#,
            r#"{"amount":+1}"#,
            r#"{"amount":1e400}"#,
            r#"{"x":1e400}"#,
            r#"{"amount":1e-400}"#,
            r#"{"amount":1E+2}"#,
            r#"{"amount":18446744073709551615}"#,
            r#"{"amount":18446744073709551616}"#,
            r#"{"amount":9223372036854775807}"#,
            r#"{"amount":9223372036854775808}"#,
            r#"{"amount":-9223372036854775808}"#,
            r#"{"amount":-9223372036854775809}"#,
            r#"{"amount":123456789012345678901234567890}"#,
            r#"{"amount":0.1000000000000000055511151231257827}"#,
            r#"{"amount":2.2250738585072011e-308}"#,
            r#"{"amount":true,"score":false,"stage":null}"#,
            r#"{"amount":nul}"#,
            r#"{"amount":[1,2,]}"#,
            r#"{"amount":[1 2]}"#,
            r#"{"a":{"b":[{},[],{"c":null}]},"id":"x"}"#,
            r#"{"a":{"b":1,}}"#,
            r#"{"a":{"b" 1}}"#,
            r#"{"a":{1:2}}"#,
            r#"{"a":1,}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":1}x"#,
            r#"{"a":1} "#,
            r#"{"a":1}}"#,
            "{\"a\":1}\n",
            "{\r\n\t\"a\" : 1 }",
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a":1"#,
            r#"{"a":"1"#,
            r#"{"#,
            r#"{"a":"é ü 漢字"}"#,
        ];
        for c in cases {
            agree(c).map_err(|e| format!("{c}: {e}")).unwrap();
        }
    }

    #[test]
    fn depth_counts_the_message_object_and_empty_containers() {
        let depth = |text: &str, max: usize| scanned(text, max).err() == Some(Stop::TooDeep);
        assert!(depth("{}", 0));
        assert!(!depth("{}", 1));
        assert!(depth(r#"{"a":[]}"#, 1));
        assert!(!depth(r#"{"a":[1,{}]}"#, 3));
        assert!(depth(r#"{"a":[1,{"b":[]}]}"#, 3));
        assert!(!depth(r#"{"id":"[[[[[[{{{{"}"#, 1), "brackets in strings");
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec![
                "id", "type", "occurred_at", "rep_id", "amount", "score", "kind", "lead_id",
            ])
            .prop_map(String::from),
            1 => prop::sample::select(vec!["x", "note", "\\u0069d", "\\ud800", "a\\nb", ""])
                .prop_map(String::from),
        ]
    }

    fn string_body() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec![
                "a",
                "rep-1",
                "é",
                "漢",
                "\\\"",
                "\\\\",
                "\\/",
                "\\n",
                "\\t",
                "\\u0041",
                "\\u00e9",
                "\\ud83d\\ude00",
                "\\ud800",
                "\\udc00",
                "\\x",
                "\\u12",
                "\t",
                "\u{1}",
                "\u{7f}",
                " ",
                "12345678",
            ]),
            0..6,
        )
        .prop_map(|parts| parts.concat())
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            string_body().prop_map(|s| format!("\"{s}\"")),
            prop::sample::select(
                "0 -0 7 -12 1.5 -0.25 1e3 2E-2 1.5e+10 01 1. .5 - 1e 1e400 -1e400 \
                 18446744073709551616 9223372036854775808 -9223372036854775809 \
                 null true false nul tru"
                    .split_whitespace()
                    .collect::<Vec<_>>(),
            )
            .prop_map(String::from),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        scalar().prop_recursive(3, 12, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key(), inner), 0..4).prop_map(|v| {
                    let entries: Vec<String> =
                        v.into_iter().map(|(k, x)| format!("\"{k}\":{x}")).collect();
                    format!("{{{}}}", entries.join(","))
                }),
            ]
        })
    }

    fn message() -> impl Strategy<Value = String> {
        let ws = prop::sample::select(vec!["", "", " ", "\n", "\t ", "\r\n"]);
        prop::collection::vec((key(), value(), ws), 0..8).prop_map(|entries| {
            let body: Vec<String> = entries
                .into_iter()
                .map(|(k, v, w)| format!("{w}\"{k}\"{w}:{w}{v}{w}"))
                .collect();
            format!("{{{}}}", body.join(","))
        })
    }

    /// A message with one byte-level edit: truncated, or a character put in
    /// or taken out.
    fn mutated() -> impl Strategy<Value = String> {
        (
            message(),
            any::<prop::sample::Index>(),
            0..4u8,
            prop::sample::select(vec!['"', '\\', ',', ':', '{', '}', '[', ']', '1', ' ', 'e']),
        )
            .prop_map(|(m, at, op, c)| {
                let mut chars: Vec<char> = m.chars().collect();
                let i = at.index(chars.len() + 1);
                match op {
                    0 => chars.truncate(i),
                    1 => chars.insert(i, c),
                    2 if i < chars.len() => {
                        chars.remove(i);
                    }
                    _ => {}
                }
                chars.into_iter().collect()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn agrees_with_serde_on_generated_messages(text in message()) {
            agree(&text)?;
        }

        #[test]
        fn depth_limit_agrees_with_the_counting_check(text in message(), max in 0..5usize) {
            if scanned(&text, usize::MAX).is_ok() {
                prop_assert_eq!(
                    scanned(&text, max).err() == Some(Stop::TooDeep),
                    crate::event::check_depth(text.as_bytes(), max).is_err(),
                    "{:?} at max {}", text, max
                );
            }
        }

        /// With and without its prescan, a message scans the same, to the
        /// byte an error is placed at; once as generated, and once without
        /// its backslashes and control characters, so that it is plain.
        #[test]
        fn a_prescan_changes_nothing(text in prop_oneof![message(), mutated()], max in 1..5usize) {
            let plain: String = text.chars().filter(|&c| c != '\\' && c >= ' ').collect();
            for t in [&text, &plain] {
                let pre = Prescan::of(t.as_bytes());
                prop_assert_eq!(pre.ascii, t.is_ascii());
                let (with, alone) = (scanned(t, max), scanned_alone(t, max));
                prop_assert_eq!(
                    with.as_ref().map(|f| &f.0),
                    alone.as_ref().map(|f| &f.0),
                    "{:?}", t
                );
            }
            #[cfg(target_arch = "x86_64")]
            prop_assert!(Prescan::of(plain.as_bytes()).plain || plain.len() > 512);
        }

        #[test]
        fn agrees_with_serde_on_damaged_messages(text in mutated()) {
            // serde reads a struct from an array too; the parser only hands
            // the scanner text that opens an object.
            if text.trim_start().starts_with('{') {
                agree(&text)?;
            }
        }
    }
}

//! Snapshots of one partition's state, and the directory that keeps them.
//!
//! A snapshot file is a fixed header and a body:
//!
//! ```text
//! magic "KPISNAP\0" | format u32 LE | body length u64 LE | xxh3-64 of body u64 LE | body
//! ```
//!
//! The body (postcard) is a head, with the offset the snapshot covers (the
//! next offset to consume), the outcome counts and the engine's layout
//! fingerprint, followed by the engine state, encoded in place in the one
//! buffer of the file image (no intermediate copy: a snapshot's transient
//! memory is about its own size). [`encode`] and [`decode`] are pure;
//! [`Store`] writes files atomically (temp file, fsync, rename, fsync of the
//! directory) under `DIR/TOPIC/PARTITION/OFFSET.snap`, keeps the newest few,
//! and on load falls back from a corrupt or unreadable file to the one
//! before it.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::processor::{Counts, Processor};

const MAGIC: &[u8; 8] = b"KPISNAP\0";
/// The current format; older formats get a migration here when they exist.
/// 4: window sums stored part-major, eight windows to a lane.
/// 5: outcome counts by reason as sequences (a build with new reasons
/// reads it).
/// 6: a series' rings hold their occupied buckets only, oldest first.
/// Formats 4 and 5 are read and migrated: their whole rings are cut to the
/// occupied buckets as they are read, their counts widened.
pub const FORMAT: u32 = 6;
/// The oldest format this build reads.
pub const OLDEST_FORMAT: u32 = 4;
const HEADER: usize = 8 + 4 + 8 + 8;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a kpistream snapshot")]
    BadMagic,
    #[error("snapshot format {0} is not supported (this build reads {OLDEST_FORMAT} to {FORMAT})")]
    Format(u32),
    #[error("snapshot is truncated")]
    Truncated,
    #[error("snapshot checksum mismatch")]
    Checksum,
    #[error("snapshot body: {0}")]
    Body(#[from] postcard::Error),
    #[error("snapshot was taken with other windows or pipeline stages")]
    Layout,
    #[error("snapshot i/o: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Serialize)]
struct HeadRef<'a> {
    next_offset: i64,
    counts: &'a Counts,
    layout: String,
}

#[derive(Deserialize)]
struct Head {
    next_offset: i64,
    counts: Counts,
    layout: String,
}

/// The head of format 4: the counts of that build's reasons, fixed.
#[derive(Deserialize)]
struct HeadV4 {
    next_offset: i64,
    counts: crate::processor::CountsV4,
    layout: String,
}

/// A partition's processor and the offset of the next message to consume.
pub struct Restored {
    pub next_offset: i64,
    pub processor: Processor,
}

/// Encodes a partition's state at `next_offset` into a snapshot file image.
pub fn encode(p: &Processor, next_offset: i64) -> Result<Vec<u8>, SnapshotError> {
    encode_with_capacity(p, next_offset, 0)
}

/// As [`encode`], into a buffer of `capacity` bytes to start with (the size
/// of the partition's previous snapshot and some room: one allocation
/// instead of a doubling series).
pub fn encode_with_capacity(
    p: &Processor,
    next_offset: i64,
    capacity: usize,
) -> Result<Vec<u8>, SnapshotError> {
    let head = HeadRef {
        next_offset,
        counts: &p.counts,
        layout: Engine::layout_fingerprint(p.engine.config()),
    };
    let mut out = postcard::to_extend(&head, header(capacity))?;
    p.engine.encode(&mut out)?;
    seal_header(&mut out);
    Ok(out)
}

/// A buffer holding the header, with room for `capacity` bytes in all.
fn header(capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity.max(HEADER + 4096));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&[0; 16]);
    out
}

/// Writes the body's length and checksum into the header.
fn seal_header(out: &mut [u8]) {
    let len = (out.len() - HEADER) as u64;
    let sum = xxh3_64(&out[HEADER..]);
    out[12..20].copy_from_slice(&len.to_le_bytes());
    out[20..28].copy_from_slice(&sum.to_le_bytes());
}

/// A file image of `body` with a valid header, length and checksum (for
/// fuzzing [`decode`] past its integrity checks).
pub fn seal(body: &[u8]) -> Vec<u8> {
    let mut out = header(HEADER + body.len());
    out.extend_from_slice(body);
    seal_header(&mut out);
    out
}

/// The body of a file image: what [`seal`] seals.
pub fn body(image: &[u8]) -> &[u8] {
    image.get(HEADER..).unwrap_or_default()
}

/// Decodes a snapshot file image into a processor with the current config.
pub fn decode(bytes: &[u8], cfg: EngineConfig) -> Result<Restored, SnapshotError> {
    if bytes.len() < HEADER {
        return Err(SnapshotError::Truncated);
    }
    if &bytes[..8] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if !(OLDEST_FORMAT..=FORMAT).contains(&format) {
        return Err(SnapshotError::Format(format));
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let sum = u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes"));
    let body = &bytes[HEADER..];
    if body.len() as u64 != len {
        return Err(SnapshotError::Truncated);
    }
    if xxh3_64(body) != sum {
        return Err(SnapshotError::Checksum);
    }
    let (head, engine): (Head, &[u8]) = if format == 4 {
        let (h, rest): (HeadV4, &[u8]) = postcard::take_from_bytes(body)?;
        let head = Head {
            next_offset: h.next_offset,
            counts: h.counts.into(),
            layout: h.layout,
        };
        (head, rest)
    } else {
        postcard::take_from_bytes(body)?
    };
    if !Engine::layout_matches(&cfg, &head.layout) {
        return Err(SnapshotError::Layout);
    }
    let engine = Engine::decode(cfg, engine)?;
    Ok(Restored {
        next_offset: head.next_offset,
        processor: Processor::from_parts(engine, head.counts),
    })
}

/// What loading the newest snapshot of a partition found.
pub struct Loaded {
    /// The newest valid snapshot, if any.
    pub restored: Option<Restored>,
    /// Newer files that could not be used, with why: each is a fallback.
    pub skipped: Vec<(PathBuf, SnapshotError)>,
}

/// The snapshot directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    keep: usize,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> Self {
        Store {
            dir: dir.into(),
            keep: keep.max(1),
        }
    }

    fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        // Topic names are [a-zA-Z0-9._-]: safe as a directory name.
        self.dir.join(topic).join(partition.to_string())
    }

    /// Snapshot files of a partition, newest (highest offset) first.
    fn files(&self, topic: &str, partition: i32) -> std::io::Result<Vec<(i64, PathBuf)>> {
        let dir = self.partition_dir(topic, partition);
        let mut files = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let path = entry?.path();
            let offset = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".snap"))
                .and_then(|n| n.parse::<i64>().ok());
            if let Some(offset) = offset {
                files.push((offset, path));
            }
        }
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        Ok(files)
    }

    /// Writes a snapshot image atomically and prunes old files; returns the
    /// file's size in bytes.
    pub fn write(
        &self,
        topic: &str,
        partition: i32,
        next_offset: i64,
        image: &[u8],
    ) -> std::io::Result<u64> {
        let dir = self.partition_dir(topic, partition);
        fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{next_offset:020}.snap"));
        let tmp = dir.join(format!("{next_offset:020}.snap.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(image)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        File::open(&dir)?.sync_all()?;
        for (_, old) in self.files(topic, partition)?.into_iter().skip(self.keep) {
            let _ = fs::remove_file(old);
        }
        Ok(image.len() as u64)
    }

    /// Loads the newest valid snapshot of a partition, skipping (and
    /// reporting) newer ones that are corrupt or unreadable.
    pub fn load(&self, topic: &str, partition: i32, cfg: &EngineConfig) -> std::io::Result<Loaded> {
        let mut skipped = Vec::new();
        for (_, path) in self.files(topic, partition)? {
            let result = fs::read(&path)
                .map_err(SnapshotError::from)
                .and_then(|bytes| decode(&bytes, cfg.clone()));
            match result {
                Ok(restored) => {
                    return Ok(Loaded {
                        restored: Some(restored),
                        skipped,
                    })
                }
                Err(e) => skipped.push((path, e)),
            }
        }
        Ok(Loaded {
            restored: None,
            skipped,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processor_with_events() -> Processor {
        let mut p = Processor::new(EngineConfig::on_event_clock());
        for (i, m) in [
            r#"{"id":"a","type":"deal.created","occurred_at":"2026-03-01T10:00:00Z","deal_id":"d","rep_id":"r","amount":5,"stage":"demo"}"#,
            r#"{"id":"b","type":"meeting.scheduled","occurred_at":"2026-03-01T10:00:00Z","meeting_id":"m","rep_id":"r","scheduled_for":"2026-03-02T10:00:00Z"}"#,
            "garbage",
        ]
        .iter()
        .enumerate()
        {
            p.process(m.as_bytes(), i as i64);
        }
        p
    }

    #[test]
    fn round_trip_keeps_state_counts_and_offset() {
        let mut p = processor_with_events();
        let image = encode(&p, 42).unwrap();
        let mut r = decode(&image, EngineConfig::on_event_clock()).unwrap();
        assert_eq!(r.next_offset, 42);
        assert_eq!(r.processor.counts, p.counts);
        assert_eq!(r.processor.engine.view(), p.engine.view());
        assert_eq!(r.processor.engine.sizes(), p.engine.sizes());
    }

    #[test]
    fn a_format_4_snapshot_is_restored_with_its_counts() {
        #[derive(Serialize)]
        struct CountsV4 {
            applied: u64,
            duplicate: u64,
            ignored: [u64; 3],
            rejected: [u64; 13],
        }
        #[derive(Serialize)]
        struct HeadV4 {
            next_offset: i64,
            counts: CountsV4,
            layout: String,
        }
        let mut p = processor_with_events();
        let old = HeadV4 {
            next_offset: 9,
            counts: CountsV4 {
                applied: p.counts.applied,
                duplicate: p.counts.duplicate,
                ignored: p.counts.ignored[..3].try_into().unwrap(),
                rejected: p.counts.rejected[..13].try_into().unwrap(),
            },
            // Written before the fingerprint was explicit.
            layout: Engine::legacy_layout_fingerprint(p.engine.config()),
        };
        let mut image = postcard::to_extend(&old, header(0)).unwrap();
        image[8..12].copy_from_slice(&4u32.to_le_bytes());
        p.engine.encode(&mut image).unwrap();
        seal_header(&mut image);
        let mut r = decode(&image, EngineConfig::on_event_clock()).unwrap();
        assert_eq!(r.next_offset, 9);
        assert_eq!(r.processor.counts, p.counts);
        assert_eq!(r.processor.engine.view(), p.engine.view());
        let mut future = encode(&p, 9).unwrap();
        future[8..12].copy_from_slice(&(FORMAT + 1).to_le_bytes());
        assert!(matches!(
            decode(&future, EngineConfig::on_event_clock()),
            Err(SnapshotError::Format(f)) if f == FORMAT + 1
        ));
    }

    /// The layout fingerprint is written out field by field: it changes
    /// with the windows, zone and stages, and with nothing else.
    #[test]
    fn the_layout_fingerprint_names_what_the_layout_depends_on() {
        let cfg = EngineConfig::on_event_clock();
        assert_eq!(
            Engine::layout_fingerprint(&cfg),
            "layout/2|sliding=1h:3600000000:60000000,24h:86400000000:900000000,\
             7d:604800000000:3600000000,30d:2592000000000:86400000000,\
             90d:7776000000000:86400000000|calendar=mtd,qtd|tz=UTC|\
             stages=prospecting,qualification,demo,proposal,negotiation"
        );
        let mut other = cfg.clone();
        other.stages.push("legal".into());
        assert!(!Engine::layout_matches(
            &other,
            &Engine::layout_fingerprint(&cfg)
        ));
        assert!(!Engine::layout_matches(
            &other,
            &Engine::legacy_layout_fingerprint(&cfg)
        ));
        assert!(Engine::layout_matches(
            &cfg,
            &Engine::legacy_layout_fingerprint(&cfg)
        ));
    }

    #[test]
    fn corruption_is_detected_not_loaded() {
        let p = processor_with_events();
        let image = encode(&p, 7).unwrap();
        let mut flipped = image.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            decode(&flipped, EngineConfig::on_event_clock()),
            Err(SnapshotError::Checksum)
        ));
        assert!(matches!(
            decode(&image[..image.len() - 3], EngineConfig::on_event_clock()),
            Err(SnapshotError::Truncated)
        ));
        assert!(matches!(
            decode(
                b"hello world, this is not a snapshot",
                EngineConfig::on_event_clock()
            ),
            Err(SnapshotError::BadMagic)
        ));
        let mut other = EngineConfig::on_event_clock();
        other.stages.push("legal".into());
        assert!(matches!(decode(&image, other), Err(SnapshotError::Layout)));
        // A snapshot of the format before this one (window sums stored
        // window-major) is refused, not misread.
        let mut older = image.clone();
        older[8..12].copy_from_slice(&3u32.to_le_bytes());
        let err = decode(&older, EngineConfig::on_event_clock())
            .err()
            .unwrap();
        assert!(matches!(err, SnapshotError::Format(3)));
        assert_eq!(
            err.to_string(),
            "snapshot format 3 is not supported (this build reads 4 to 6)"
        );
    }

    #[test]
    fn store_keeps_the_newest_and_falls_back_from_a_corrupt_one() {
        let dir = std::env::temp_dir().join(format!("kpistream-snap-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = Store::new(&dir, 2);
        let p = processor_with_events();
        for off in [10, 20, 30] {
            store
                .write("crm", 1, off, &encode(&p, off).unwrap())
                .unwrap();
        }
        let files = store.files("crm", 1).unwrap();
        assert_eq!(files.iter().map(|f| f.0).collect::<Vec<_>>(), [30, 20]);
        fs::write(&files[0].1, b"KPISNAP\0 torn write").unwrap();
        let loaded = store
            .load("crm", 1, &EngineConfig::on_event_clock())
            .unwrap();
        assert_eq!(loaded.restored.unwrap().next_offset, 20);
        assert_eq!(loaded.skipped.len(), 1);
        let none = store
            .load("crm", 2, &EngineConfig::on_event_clock())
            .unwrap();
        assert!(none.restored.is_none() && none.skipped.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! Keyed pseudonyms for rep ids: with `privacy.pseudonymize_reps` on, every
//! rep id is replaced, as soon as an event is parsed, by `rep-` and the
//! first 12 hex digits of HMAC-SHA256(key, rep id). The state, snapshots,
//! metrics, API documents and the KPI topic then only ever hold the
//! pseudonym; the same key gives the same pseudonym on every instance and
//! after every restart, and without the key it cannot be turned back.

use crate::crm::signature::{hex, hmac_sha256};
use crate::engine::UNASSIGNED;

/// The pseudonym function. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Pseudonyms {
    key: Vec<u8>,
}

impl std::fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonyms(***)")
    }
}

impl Pseudonyms {
    pub fn new(key: &[u8]) -> Self {
        Pseudonyms { key: key.to_vec() }
    }

    /// The pseudonym of a rep id (`unassigned` stays as it is).
    pub fn rep(&self, rep: &str) -> String {
        if rep == UNASSIGNED {
            return rep.to_owned();
        }
        let digest = hmac_sha256(&self.key, &[rep.as_bytes()]);
        format!("rep-{}", hex(&digest[..6]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_keyed_and_opaque() {
        let p = Pseudonyms::new(b"k1");
        let a = p.rep("rep-0001");
        assert_eq!(a, Pseudonyms::new(b"k1").rep("rep-0001"), "stable");
        assert_ne!(a, Pseudonyms::new(b"k2").rep("rep-0001"), "keyed");
        assert_ne!(a, p.rep("rep-0002"));
        assert_eq!(a.len(), 16);
        assert!(a.starts_with("rep-") && a[4..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(p.rep("unassigned"), "unassigned");
        assert_eq!(format!("{p:?}"), "Pseudonyms(***)");
    }
}

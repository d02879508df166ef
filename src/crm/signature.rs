//! How each CRM's webhook requests are authenticated. Pure: the request's
//! parts and the time are passed in.
//!
//! - HubSpot signs v3: `X-HubSpot-Signature-v3` is
//!   base64(HMAC-SHA256(app client secret, method + URI + body + timestamp)),
//!   `X-HubSpot-Request-Timestamp` is milliseconds since the epoch; requests
//!   older (or further ahead) than the allowed age are refused.
//! - Pipedrive sends HTTP basic auth, set on the webhook.
//! - Salesforce CDC reaches kpistream through a relay (a Pub/Sub API client,
//!   MuleSoft, a function): it signs like HubSpot with a shared secret,
//!   `X-Kpistream-Signature: v1=hex(HMAC-SHA256(secret, timestamp + "." + body))`
//!   and `X-Kpistream-Timestamp` in milliseconds; or mutual TLS is done by a
//!   proxy in front and the route is left open behind it.
//!
//! A signed request is accepted once: [`ReplayGuard`] remembers the
//! signatures it accepted until they are too old to be accepted anyway.

use std::collections::{HashMap, VecDeque};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a webhook request was refused; a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A header it needs is absent or unreadable.
    Missing,
    /// The timestamp is outside the allowed age.
    Expired,
    /// The signature or credentials do not match.
    Mismatch,
    /// The same signed request was accepted before.
    Replayed,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing_credentials",
            Refusal::Expired => "expired",
            Refusal::Mismatch => "bad_signature",
            Refusal::Replayed => "replayed",
        }
    }
}

/// Compares in time independent of where the first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// HMAC-SHA256 of the concatenated `parts`.
pub(crate) fn hmac_sha256(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a timestamp header (milliseconds) against `now_ms`.
fn fresh(timestamp: Option<&str>, now_ms: i64, max_age_ms: i64) -> Result<(), Refusal> {
    let ts: i64 = timestamp
        .and_then(|t| t.trim().parse().ok())
        .ok_or(Refusal::Missing)?;
    if (now_ms - ts).abs() > max_age_ms {
        return Err(Refusal::Expired);
    }
    Ok(())
}

/// HubSpot's v3 signature of a request.
pub fn hubspot_v3_signature(
    secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp: &str,
) -> String {
    let mac = hmac_sha256(
        secret.as_bytes(),
        &[
            method.as_bytes(),
            uri.as_bytes(),
            body,
            timestamp.as_bytes(),
        ],
    );
    crate::config::base64(&mac)
}

/// The request parts a signature covers.
pub struct Signed<'a> {
    pub method: &'a str,
    /// The full URI the CRM called (scheme, host, path and query), as
    /// configured: HubSpot signs the URL it was given.
    pub uri: &'a str,
    pub body: &'a [u8],
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Verifies a signed request: present, fresh, and equal to `sign(ts)`.
fn verify(
    req: &Signed<'_>,
    now_ms: i64,
    max_age_ms: i64,
    sign: impl FnOnce(&str) -> String,
) -> Result<(), Refusal> {
    let signature = req.signature.ok_or(Refusal::Missing)?;
    fresh(req.timestamp, now_ms, max_age_ms)?;
    let want = sign(req.timestamp.unwrap_or_default());
    if constant_time_eq(want.as_bytes(), signature.trim().as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::Mismatch)
    }
}

/// Verifies a HubSpot v3 request.
pub fn verify_hubspot(
    secret: &str,
    req: &Signed<'_>,
    now_ms: i64,
    max_age_ms: i64,
) -> Result<(), Refusal> {
    verify(req, now_ms, max_age_ms, |ts| {
        hubspot_v3_signature(secret, req.method, req.uri, req.body, ts)
    })
}

/// The relay signature kpistream expects in front of Salesforce.
pub fn relay_signature(secret: &str, body: &[u8], timestamp: &str) -> String {
    let mac = hmac_sha256(secret.as_bytes(), &[timestamp.as_bytes(), b".", body]);
    format!("v1={}", hex(&mac))
}

/// Verifies a relay-signed request (Salesforce).
pub fn verify_relay(
    secret: &str,
    req: &Signed<'_>,
    now_ms: i64,
    max_age_ms: i64,
) -> Result<(), Refusal> {
    verify(req, now_ms, max_age_ms, |ts| {
        relay_signature(secret, req.body, ts)
    })
}

/// Verifies HTTP basic auth against `user:password` kept base64-encoded.
pub fn verify_basic(expected_b64: &str, authorization: Option<&str>) -> Result<(), Refusal> {
    let given = authorization
        .and_then(|h| h.strip_prefix("Basic "))
        .ok_or(Refusal::Missing)?;
    if constant_time_eq(given.trim().as_bytes(), expected_b64.as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::Mismatch)
    }
}

/// Remembers accepted signatures for the allowed age, so that a captured
/// request cannot be played again. Bounded: past `capacity` entries the
/// oldest are forgotten (and would then be refused as expired soon anyway).
#[derive(Debug)]
pub struct ReplayGuard {
    seen: HashMap<String, i64>,
    order: VecDeque<(i64, String)>,
    max_age_ms: i64,
    capacity: usize,
}

impl ReplayGuard {
    pub fn new(max_age_ms: i64, capacity: usize) -> Self {
        ReplayGuard {
            seen: HashMap::new(),
            order: VecDeque::new(),
            max_age_ms,
            capacity,
        }
    }

    /// Accepts `signature` at `now_ms` unless it was accepted before.
    pub fn check(&mut self, signature: &str, now_ms: i64) -> Result<(), Refusal> {
        while let Some((t, _)) = self.order.front() {
            if now_ms - *t <= 2 * self.max_age_ms && self.order.len() < self.capacity {
                break;
            }
            let (_, s) = self.order.pop_front().expect("front exists");
            self.seen.remove(&s);
        }
        if self.seen.contains_key(signature) {
            return Err(Refusal::Replayed);
        }
        self.seen.insert(signature.to_owned(), now_ms);
        self.order.push_back((now_ms, signature.to_owned()));
        Ok(())
    }

    /// Forgets an accepted signature (its request was not stored after
    /// all, so the CRM may send it again).
    pub fn forget(&mut self, signature: &str) {
        self.seen.remove(signature);
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "hubspot-client-secret";
    const URI: &str = "https://kpi.example.com/webhooks/hubspot";
    const NOW: i64 = 1_793_697_600_000;
    const AGE: i64 = 300_000;

    fn signed<'a>(body: &'a [u8], ts: &'a str, sig: &'a str) -> Signed<'a> {
        Signed {
            method: "POST",
            uri: URI,
            body,
            timestamp: Some(ts),
            signature: Some(sig),
        }
    }

    #[test]
    fn hubspot_v3_matches_the_documented_construction() {
        // HMAC-SHA256 of "POST" + uri + body + timestamp, base64: computed
        // independently with `openssl dgst -sha256 -hmac ... -binary | base64`.
        let sig = hubspot_v3_signature(SECRET, "POST", URI, b"[]", "1793697600000");
        assert_eq!(sig, "M2HygeQZ+c085NCiMrnCEXeYd8gSVlp9ZSn/2MWocto=");
    }

    #[test]
    fn hubspot_valid_tampered_expired_and_missing() {
        let body = br#"[{"eventId":1}]"#;
        let ts = NOW.to_string();
        let sig = hubspot_v3_signature(SECRET, "POST", URI, body, &ts);
        assert_eq!(
            verify_hubspot(SECRET, &signed(body, &ts, &sig), NOW + 1000, AGE),
            Ok(())
        );
        let tampered = br#"[{"eventId":2}]"#;
        assert_eq!(
            verify_hubspot(SECRET, &signed(tampered, &ts, &sig), NOW, AGE),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            verify_hubspot("other", &signed(body, &ts, &sig), NOW, AGE),
            Err(Refusal::Mismatch)
        );
        // A later timestamp with the old signature is a tampering too.
        let later = (NOW + 1).to_string();
        assert_eq!(
            verify_hubspot(SECRET, &signed(body, &later, &sig), NOW, AGE),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            verify_hubspot(SECRET, &signed(body, &ts, &sig), NOW + AGE + 1, AGE),
            Err(Refusal::Expired)
        );
        let mut none = signed(body, &ts, &sig);
        none.signature = None;
        assert_eq!(
            verify_hubspot(SECRET, &none, NOW, AGE),
            Err(Refusal::Missing)
        );
    }

    #[test]
    fn relay_and_basic() {
        let body = br#"{"ChangeEventHeader":{}}"#;
        let ts = NOW.to_string();
        let sig = relay_signature("s3", body, &ts);
        assert!(sig.starts_with("v1=") && sig.len() == 67);
        assert_eq!(
            verify_relay("s3", &signed(body, &ts, &sig), NOW, AGE),
            Ok(())
        );
        assert_eq!(
            verify_relay("s3", &signed(b"{}", &ts, &sig), NOW, AGE),
            Err(Refusal::Mismatch)
        );
        let b64 = crate::config::base64(b"pd:pw");
        assert_eq!(verify_basic(&b64, Some(&format!("Basic {b64}"))), Ok(()));
        assert_eq!(
            verify_basic(&b64, Some("Basic cGQ6eA==")),
            Err(Refusal::Mismatch)
        );
        assert_eq!(verify_basic(&b64, None), Err(Refusal::Missing));
    }

    #[test]
    fn a_signature_is_accepted_once_and_forgotten_when_old() {
        let mut g = ReplayGuard::new(AGE, 3);
        assert_eq!(g.check("a", NOW), Ok(()));
        assert_eq!(g.check("a", NOW + 10), Err(Refusal::Replayed));
        assert_eq!(g.check("b", NOW + 20), Ok(()));
        assert_eq!(
            g.check("a", NOW + 2 * AGE + 1),
            Ok(()),
            "expired entries are dropped"
        );
        for s in ["c", "d", "e", "f"] {
            g.check(s, NOW + 3 * AGE).unwrap();
        }
        assert!(g.len() <= 3);
    }
}

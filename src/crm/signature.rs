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
//! - Close signs with the subscription's `signature_key`:
//!   `close-sig-hash` is hex(HMAC-SHA256(hex-decoded key, timestamp + body))
//!   and `close-sig-timestamp` is in seconds. Close documents no replay
//!   window and retries for 72 hours, so no age is enforced.
//! - Zoho does not sign. A Notification API callback carries the token of
//!   its channel in its body; a workflow webhook carries what its user
//!   configured: kpistream expects an `X-Kpistream-Token` header.
//!
//! A correctly signed request delivered again (a CRM retrying a request
//! whose answer it missed) is accepted: dedup drops its copy.
//! [`ReplayGuard`] remembers the signatures accepted within the allowed age
//! so that such redeliveries are counted.

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

/// The URI as HubSpot signs it: its fixed list of escapes decoded (any
/// other `%XX` stays as it is).
pub fn hubspot_signed_uri(uri: &str) -> String {
    const DECODED: [(&str, char); 12] = [
        ("3A", ':'),
        ("2F", '/'),
        ("3F", '?'),
        ("40", '@'),
        ("21", '!'),
        ("24", '$'),
        ("27", '\''),
        ("28", '('),
        ("29", ')'),
        ("2A", '*'),
        ("2C", ','),
        ("3B", ';'),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3);
        match code.and_then(|c| DECODED.iter().find(|(e, _)| e.eq_ignore_ascii_case(c))) {
            Some((_, ch)) => {
                out.push(*ch);
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// HubSpot's v3 signature of a request (the URI decoded as HubSpot does).
pub fn hubspot_v3_signature(
    secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp: &str,
) -> String {
    let uri = hubspot_signed_uri(uri);
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
/// The scheme's name is case-insensitive (RFC 9110).
pub fn verify_basic(expected_b64: &str, authorization: Option<&str>) -> Result<(), Refusal> {
    let given = authorization
        .and_then(|h| h.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, v)| v)
        .ok_or(Refusal::Missing)?;
    if constant_time_eq(given.trim().as_bytes(), expected_b64.as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::Mismatch)
    }
}

/// Bytes of a hex string, if it is one.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Close's signature of a body: hex HMAC-SHA256 of the timestamp and the
/// body, keyed with the hex-decoded `signature_key`.
pub fn close_signature(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    hex(&hmac_sha256(key, &[timestamp.as_bytes(), body]))
}

/// Verifies a Close request (`close-sig-hash`, `close-sig-timestamp`).
pub fn verify_close(
    key: &[u8],
    body: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
) -> Result<(), Refusal> {
    let (ts, sig) = timestamp.zip(signature).ok_or(Refusal::Missing)?;
    let want = close_signature(key, ts.trim(), body);
    if constant_time_eq(want.as_bytes(), sig.trim().to_ascii_lowercase().as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::Mismatch)
    }
}

/// The tokens Zoho requests must carry: one per Notification API channel,
/// and one for workflow webhooks. Parsed from `channel_id=token` pairs
/// (`workflow=token` for the webhooks), comma- or newline-separated.
#[derive(Clone, PartialEq, Eq)]
pub struct ZohoTokens {
    channels: HashMap<String, String>,
    workflow: Option<String>,
}

impl ZohoTokens {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut t = ZohoTokens {
            channels: HashMap::new(),
            workflow: None,
        };
        for pair in text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (name, token) = pair
                .split_once('=')
                .map(|(n, v)| (n.trim(), v.trim()))
                .filter(|(n, v)| !n.is_empty() && !v.is_empty())
                .ok_or("each entry is channel_id=token or workflow=token")?;
            if name == "workflow" {
                t.workflow = Some(token.to_owned());
            } else {
                t.channels.insert(name.to_owned(), token.to_owned());
            }
        }
        if t.channels.is_empty() && t.workflow.is_none() {
            return Err("no channel or workflow token".into());
        }
        Ok(t)
    }

    /// Verifies a Zoho request: a callback by its body's `channel_id` and
    /// `token`, a workflow webhook (a body with `kpistream`) by the
    /// `X-Kpistream-Token` header.
    pub fn verify(
        &self,
        body: &serde_json::Value,
        header_token: Option<&str>,
    ) -> Result<(), Refusal> {
        let matches = |want: &str, given: &str| {
            if constant_time_eq(want.as_bytes(), given.as_bytes()) {
                Ok(())
            } else {
                Err(Refusal::Mismatch)
            }
        };
        if body.get("kpistream").is_some() {
            let want = self.workflow.as_deref().ok_or(Refusal::Mismatch)?;
            return matches(want, header_token.ok_or(Refusal::Missing)?.trim());
        }
        let channel = crate::crm::id_text(body.get("channel_id")).ok_or(Refusal::Missing)?;
        let given = body
            .get("token")
            .and_then(serde_json::Value::as_str)
            .ok_or(Refusal::Missing)?;
        let want = self.channels.get(&channel).ok_or(Refusal::Mismatch)?;
        matches(want, given)
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
    fn hubspot_decodes_its_listed_escapes_before_hashing() {
        assert_eq!(
            hubspot_signed_uri("https://k.example.com/webhooks/hubspot?a=%3Ab%2Fc%40d%2a%2C&e=%20"),
            "https://k.example.com/webhooks/hubspot?a=:b/c@d*,&e=%20"
        );
        let encoded = "https://k.example.com/webhooks/hubspot?portal=%2862515%29";
        let plain = "https://k.example.com/webhooks/hubspot?portal=(62515)";
        assert_eq!(
            hubspot_v3_signature(SECRET, "POST", encoded, b"[]", "1"),
            hubspot_v3_signature(SECRET, "POST", plain, b"[]", "1")
        );
    }

    #[test]
    fn basic_is_matched_in_any_case() {
        let b64 = crate::config::base64(b"pd:pw");
        for scheme in ["Basic", "basic", "BASIC"] {
            assert_eq!(verify_basic(&b64, Some(&format!("{scheme} {b64}"))), Ok(()));
        }
        assert_eq!(
            verify_basic(&b64, Some(&format!("Bearer {b64}"))),
            Err(Refusal::Missing)
        );
    }

    #[test]
    fn close_and_zoho() {
        let key = unhex("6b6579").unwrap();
        assert_eq!(key, b"key");
        // printf '1700000000{}' | openssl dgst -sha256 -mac HMAC -macopt hexkey:6b6579
        let sig = close_signature(&key, "1700000000", b"{}");
        assert_eq!(sig, hex(&hmac_sha256(b"key", &[b"1700000000{}"])));
        assert_eq!(
            verify_close(&key, b"{}", Some("1700000000"), Some(&sig)),
            Ok(())
        );
        assert_eq!(
            verify_close(&key, b"{ }", Some("1700000000"), Some(&sig)),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            verify_close(&key, b"{}", None, Some(&sig)),
            Err(Refusal::Missing)
        );
        let t = ZohoTokens::parse("1000000068001=tok-a, workflow=tok-w").unwrap();
        let cb = |channel: serde_json::Value, token: serde_json::Value| serde_json::json!({"channel_id": channel, "token": token, "ids": []});
        assert_eq!(
            t.verify(&cb("1000000068001".into(), "tok-a".into()), None),
            Ok(())
        );
        assert_eq!(
            t.verify(
                &cb(serde_json::json!(1000000068001u64), "tok-a".into()),
                None
            ),
            Ok(()),
            "a channel id as a number"
        );
        assert_eq!(
            t.verify(&cb("1000000068001".into(), "tok-b".into()), None),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            t.verify(&cb("1000000068009".into(), "tok-a".into()), None),
            Err(Refusal::Mismatch),
            "an unknown channel"
        );
        assert_eq!(
            t.verify(&cb("1000000068001".into(), serde_json::Value::Null), None),
            Err(Refusal::Missing),
            "a null token"
        );
        let wf = serde_json::json!({"kpistream": "zoho-wf/1"});
        assert_eq!(t.verify(&wf, Some("tok-w")), Ok(()));
        assert_eq!(t.verify(&wf, Some("tok-a")), Err(Refusal::Mismatch));
        assert_eq!(t.verify(&wf, None), Err(Refusal::Missing));
        assert!(ZohoTokens::parse("no-equals").is_err());
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

//! The bytes of one log line, checked without decoding the event.
//!
//! Every line is `serde_json::to_vec` of an [`AuditEvent`](youops_core::model::AuditEvent),
//! which is its canonical bytes (`{"seq":…,"time":…,["request_id":…,]"body":…}`)
//! with the final `}` replaced by a suffix of fixed length:
//! `,"prev_hash":"<64 hex>","hash":"<64 hex>"}`. So the canonical bytes, and
//! with them the chain hash, come from the line by slicing: recovery and the
//! open-time check hash the log without parsing JSON.

use sha2::{Digest, Sha256};

const PREV: &[u8] = b",\"prev_hash\":\"";
const MID: &[u8] = b"\",\"hash\":\"";
const END: &[u8] = b"\"}";
const HEX_LEN: usize = 64;
/// Length of the hashes suffix of every line.
pub(crate) const SUFFIX_LEN: usize = PREV.len() + HEX_LEN + MID.len() + HEX_LEN + END.len();
const SEQ_PREFIX: &[u8] = b"{\"seq\":";

/// The canonical bytes of an event whose body is already encoded as JSON:
/// core's, so the log and every archive agree byte for byte.
pub(crate) use youops_core::audit::canonical_bytes_encoded as canonical_encoded;

/// The stored line of an event (without its newline): `serde_json::to_vec` of
/// the [`AuditEvent`](youops_core::model::AuditEvent), from its canonical bytes
/// and its hashes (64 hex digits each).
pub(crate) fn event_line(mut canonical: Vec<u8>, prev_hash: &str, hash: &str) -> Vec<u8> {
    canonical.pop();
    canonical.reserve(SUFFIX_LEN + 1);
    canonical.extend_from_slice(PREV);
    canonical.extend_from_slice(prev_hash.as_bytes());
    canonical.extend_from_slice(MID);
    canonical.extend_from_slice(hash.as_bytes());
    canonical.extend_from_slice(END);
    canonical
}

/// What a line says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineInfo<'a> {
    pub seq: u64,
    pub prev_hash: &'a str,
    pub hash: &'a str,
}

fn is_hex(b: &[u8]) -> bool {
    b.len() == HEX_LEN && b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// The sequence number a line starts with.
pub(crate) fn line_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(SEQ_PREFIX)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || rest.get(digits) != Some(&b',') {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// Check that `line` (without its newline) has the shape of a stored event and
/// that its hash is `SHA-256(prev_hash ‖ canonical bytes)` of its own fields.
/// Whether it chains onto the line before is for the caller to check.
pub(crate) fn check_line(line: &[u8]) -> Result<LineInfo<'_>, String> {
    if line.len() < SEQ_PREFIX.len() + SUFFIX_LEN + 2 {
        return Err(format!("{} bytes is too short for an event", line.len()));
    }
    let seq = line_seq(line).ok_or("it does not start with a sequence number")?;
    let (head, suffix) = line.split_at(line.len() - SUFFIX_LEN);
    let (prev_tag, rest) = suffix.split_at(PREV.len());
    let (prev, rest) = rest.split_at(HEX_LEN);
    let (mid, rest) = rest.split_at(MID.len());
    let (hash, end) = rest.split_at(HEX_LEN);
    if prev_tag != PREV || mid != MID || end != END || !is_hex(prev) || !is_hex(hash) {
        return Err("it does not end with its prev_hash and hash".into());
    }
    let mut h = Sha256::new();
    h.update(prev);
    h.update(head);
    h.update(b"}");
    let computed = hex(&h.finalize());
    if computed.as_bytes() != hash {
        return Err(format!(
            "content does not match its hash (stored {}, computed {}): the record was altered or damaged",
            String::from_utf8_lossy(&hash[..12]),
            &computed[..12]
        ));
    }
    // Hex digits are ASCII.
    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap_or_default()
    }
    Ok(LineInfo {
        seq,
        prev_hash: text(prev),
        hash: text(hash),
    })
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// The complete lines of `bytes` with their offsets, and where the incomplete
/// tail (bytes after the last newline) starts.
pub(crate) fn lines(bytes: &[u8]) -> (Vec<(usize, &[u8])>, usize) {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(nl) = bytes[start..].iter().position(|b| *b == b'\n') {
        out.push((start, &bytes[start..start + nl]));
        start += nl + 1;
    }
    (out, start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use youops_core::audit::{canonical_bytes, chain_hash, GENESIS_HASH};
    use youops_core::model::{AuditEvent, EventBody, NewEvent, RequestId};

    fn event(seq: u64, prev: &str, request_id: Option<RequestId>) -> AuditEvent {
        let body = EventBody::Notice {
            source: "t".into(),
            kind: "k".into(),
            message: "line\nbreak \"q\" é".into(),
            data: serde_json::json!({"a": [1, null]}),
        };
        let ev = match request_id {
            Some(id) => NewEvent::request(id, body),
            None => NewEvent::global(body),
        };
        let time = Utc::now();
        let hash = chain_hash(prev, &canonical_bytes(seq, &time, &ev.request_id, &ev.body));
        serde_json::from_value(serde_json::json!({
            "seq": seq, "time": time, "request_id": request_id, "body": ev.body,
            "prev_hash": prev, "hash": hash,
        }))
        .unwrap()
    }

    #[test]
    fn a_stored_line_checks_and_any_changed_byte_does_not() {
        for id in [None, Some(RequestId::new())] {
            let e = event(41, GENESIS_HASH, id);
            let line = serde_json::to_vec(&e).unwrap();
            let info = check_line(&line).unwrap();
            assert_eq!(info.seq, 41);
            assert_eq!(info.prev_hash, GENESIS_HASH);
            assert_eq!(info.hash, e.hash);
            for i in 0..line.len() {
                let mut bad = line.clone();
                bad[i] ^= 0x01;
                assert!(check_line(&bad).is_err(), "byte {i} changed");
            }
            for cut in 0..line.len() {
                assert!(check_line(&line[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn encoded_lines_match_core_and_serde() {
        use chrono::Timelike as _;
        let id = RequestId::new();
        let bodies = [
            (
                None,
                EventBody::Notice {
                    source: "s".into(),
                    kind: "k".into(),
                    message: "\u{1F600} \"quoted\"\n".into(),
                    data: serde_json::json!({"z": 1, "a": [true, null]}),
                },
            ),
            (
                Some(id),
                EventBody::Checkpoint {
                    archived_through_seq: 9,
                    archived_last_hash: "ab".repeat(32),
                    archive: "audit-x.jsonl".into(),
                },
            ),
        ];
        let now = Utc::now();
        let times = [
            now,
            now.with_nanosecond(0).unwrap(),
            now.with_nanosecond(123_000_000).unwrap(),
            now.with_nanosecond(123_456_000).unwrap(),
            now.with_nanosecond(1).unwrap(),
        ];
        for (i, (request_id, body)) in bodies.iter().enumerate() {
            for (j, time) in times.iter().enumerate() {
                let seq = (i * 10 + j) as u64 * 1_000_000_007 + 1;
                let json = serde_json::to_vec(body).unwrap();
                let canonical = canonical_encoded(seq, time, request_id, &json);
                assert_eq!(canonical, canonical_bytes(seq, time, request_id, body));
                let prev = "0f".repeat(32);
                let hash = chain_hash(&prev, &canonical);
                let line = event_line(canonical, &prev, &hash);
                let ev = AuditEvent::from_parts(
                    seq,
                    *time,
                    *request_id,
                    body.clone(),
                    prev.clone(),
                    hash.clone(),
                );
                assert_eq!(line, serde_json::to_vec(&ev).unwrap());
                assert_eq!(check_line(&line).unwrap().hash, hash);
            }
        }
    }

    #[test]
    fn lines_and_tail() {
        let (ls, tail) = lines(b"ab\ncd\nef");
        assert_eq!(ls, vec![(0, &b"ab"[..]), (3, &b"cd"[..])]);
        assert_eq!(tail, 6);
        assert_eq!(line_seq(b"{\"seq\":12,\"time\""), Some(12));
        assert_eq!(line_seq(b"{\"seq\":12"), None);
    }
}

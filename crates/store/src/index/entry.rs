//! A request's entry in the `records` table: its state and where its
//! events are, in a few bytes of varints.

use serde::Deserialize;
use youops_core::audit::StoreError;
use youops_core::model::State;

/// A request's entry in `records`: its state (for filters and the active
/// set) and the `(seq, offset in its segment)` of each of its events, in
/// order. The record itself is folded from those events when it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub state: State,
    pub events: Vec<(u64, u64)>,
}

impl Entry {
    pub(crate) fn last_seq(&self) -> u64 {
        self.events.last().map_or(0, |e| e.0)
    }

    /// State code, then varints: the number of events, then per event its
    /// seq (the first whole, then the step from the one before) and offset.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.events.len() * 6);
        out.push(state_code(self.state));
        put_varint(&mut out, self.events.len() as u64);
        let mut prev = 0;
        for (seq, offset) in &self.events {
            put_varint(&mut out, seq.saturating_sub(prev));
            put_varint(&mut out, *offset);
            prev = *seq;
        }
        out
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Entry, StoreError> {
        let bad = || StoreError::Corrupt("request entry in the index is malformed".into());
        let (&code, mut rest) = b.split_first().ok_or_else(bad)?;
        let state = state_from(code).ok_or_else(bad)?;
        let n = take_varint(&mut rest).ok_or_else(bad)?;
        let mut events = Vec::with_capacity(usize::try_from(n.min(1024)).unwrap_or(0));
        let mut seq = 0u64;
        for _ in 0..n {
            seq = seq
                .checked_add(take_varint(&mut rest).ok_or_else(bad)?)
                .ok_or_else(bad)?;
            events.push((seq, take_varint(&mut rest).ok_or_else(bad)?));
        }
        if !rest.is_empty() {
            return Err(bad());
        }
        Ok(Entry { state, events })
    }

    /// Format 1: a JSON copy of the stored record (only its state and
    /// positions are kept).
    pub(super) fn from_format_1(b: &[u8]) -> Result<Entry, StoreError> {
        #[derive(Deserialize)]
        struct V1 {
            events: Vec<(u64, u64)>,
            record: V1Record,
        }
        #[derive(Deserialize)]
        struct V1Record {
            state: State,
        }
        let v: V1 = serde_json::from_slice(b)
            .map_err(|e| StoreError::Corrupt(format!("request record in the index: {e}")))?;
        Ok(Entry {
            state: v.record.state,
            events: v.events,
        })
    }
}

/// Stable one-byte codes of the states (never reuse one).
fn state_code(s: State) -> u8 {
    match s {
        State::Received => 1,
        State::Invalid => 2,
        State::Denied => 3,
        State::PendingApproval => 4,
        State::Approved => 5,
        State::Rejected => 6,
        State::Expired => 7,
        State::Running => 8,
        State::Succeeded => 9,
        State::Failed => 10,
        State::TimedOut => 11,
        State::Cancelled => 12,
        State::Interrupted => 13,
    }
}

fn state_from(code: u8) -> Option<State> {
    State::ALL.into_iter().find(|s| state_code(*s) == code)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        let shift = 7 * i as u32;
        if shift == 63 && bits > 1 {
            return None;
        }
        v |= bits << shift;
        if byte & 0x80 == 0 {
            *b = &b[i + 1..];
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_reject_bad_bytes() {
        for state in State::ALL {
            assert_eq!(state_from(state_code(state)), Some(state));
        }
        let e = Entry {
            state: State::Running,
            events: vec![(1, 0), (2, 431), (900_000_000_000, u64::MAX), (u64::MAX, 7)],
        };
        let b = e.encode();
        assert_eq!(Entry::decode(&b).unwrap(), e);
        for cut in 0..b.len() {
            assert!(Entry::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(Entry::decode(&long).is_err());
        assert!(Entry::decode(&[0, 0]).is_err(), "no state has code 0");
        assert!(Entry::decode(&[
            9, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0
        ])
        .is_err());
        let small = Entry {
            state: State::Succeeded,
            events: vec![
                (1_000_000, 40_000_000),
                (1_000_002, 40_000_860),
                (1_000_090, 40_038_000),
            ],
        };
        assert!(small.encode().len() <= 20, "{} bytes", small.encode().len());
    }

    #[test]
    fn format_1_records_convert() {
        let json =
            br#"{"events":[[5,0],[6,420]],"record":{"state":"succeeded","request":{"op":"x"}}}"#;
        assert_eq!(
            Entry::from_format_1(json).unwrap(),
            Entry {
                state: State::Succeeded,
                events: vec![(5, 0), (6, 420)]
            }
        );
    }
}

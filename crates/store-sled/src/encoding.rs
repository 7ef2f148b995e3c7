//! The on-disk encoding: the sled tree's keys, blocks of JSON lines, and
//! events built from their parts.

use youops_core::audit::StoreError;
use youops_core::model::{AuditEvent, RequestId};

pub(crate) fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

pub(crate) const FORMAT_KEY: &[u8] = b"m:format";
pub(crate) const APPLIED_KEY: &[u8] = b"m:applied";
pub(crate) const FORMAT: &[u8] = b"2";

pub(crate) fn bkey(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'b';
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn seq_of_bkey(k: &[u8]) -> Result<u64, StoreError> {
    k.get(1..)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("block key of wrong length".into()))
}

pub(crate) fn idkey(prefix: u8, id: RequestId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = prefix;
    k[1..].copy_from_slice(&id.0.to_bytes());
    k
}

pub(crate) fn dkey(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(b'd');
    k.extend_from_slice(key.as_bytes());
    k
}

pub(crate) fn id_from(bytes: &[u8]) -> Result<RequestId, StoreError> {
    let arr: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("request id of wrong length".into()))?;
    Ok(RequestId(ulid::Ulid::from_bytes(arr)))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The lines of a block (events never contain a raw newline: JSON escapes it).
pub(crate) fn lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    block.split(|b| *b == b'\n').filter(|l| !l.is_empty())
}

/// Decode the event on line `index` of the block starting at `start`.
pub(crate) fn decode_line(start: u64, index: usize, line: &[u8]) -> Result<AuditEvent, StoreError> {
    serde_json::from_slice(line).map_err(|e| {
        StoreError::Corrupt(format!(
            "event #{} (line {} of block #{start}): {e}",
            start + index as u64,
            index + 1
        ))
    })
}

//! Dedup claims. A claim is found by a 16-byte hash of its key (SHA-256,
//! truncated): every claim costs the same few dozen bytes whatever its key,
//! so a year of GitHub comment keys stays small. The chance that two of a
//! billion keys share a hash is about 10^-21.
//!
//! | table | key | value |
//! |---|---|---|
//! | `claims` | key hash (16 B) | bucket (u32) ‖ request id ‖ seq (u64) ‖ flags (u8) |
//! | `claim_expiry` | bucket (u32) ‖ key hash | empty |
//! | `claim_explicit` | seq (u64) | key hash: the claims stored ahead of their events |

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use sha2::{Digest, Sha256};
use youops_core::audit::StoreError;
use youops_core::model::RequestId;

use super::{id_bytes, id_from, ix, u64_from, Index};

/// The hash a claim is stored under.
pub(crate) type KeyHash = [u8; 16];

pub(super) const CLAIMS: TableDefinition<'static, KeyHash, [u8; 29]> =
    TableDefinition::new("claims");
pub(super) const CLAIM_EXPIRY: TableDefinition<'static, [u8; 20], ()> =
    TableDefinition::new("claim_expiry");
pub(super) const CLAIM_EXPLICIT: TableDefinition<'static, u64, KeyHash> =
    TableDefinition::new("claim_explicit");

/// Where claims were kept before: under their whole key.
const OLD_DEDUP: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("dedup");
const OLD_EXPIRY: TableDefinition<'static, &[u8], ()> = TableDefinition::new("dedup_expiry");
const OLD_EXPLICIT: TableDefinition<'static, u64, &str> = TableDefinition::new("dedup_explicit");

/// The hash of a dedup key.
pub(crate) fn key_hash(key: &str) -> KeyHash {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

fn expiry_key(bucket: u32, hash: &KeyHash) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&bucket.to_be_bytes());
    k[4..].copy_from_slice(hash);
    k
}

/// The bucket of claims that never expire.
pub(crate) const PERMANENT: u32 = u32::MAX;

/// A dedup claim: the request that claimed a key, by the event that claimed
/// it, in the time bucket of that event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim {
    pub id: RequestId,
    pub seq: u64,
    pub bucket: u32,
    /// Claimed by an append whose first event does not carry the key (a
    /// `received` event with that `dedup_key`): not rebuildable from the log,
    /// so stored before the events are written.
    pub explicit: bool,
}

impl Claim {
    pub(super) fn encode(&self) -> [u8; 29] {
        let mut out = [0u8; 29];
        out[..4].copy_from_slice(&self.bucket.to_be_bytes());
        out[4..20].copy_from_slice(&id_bytes(self.id));
        out[20..28].copy_from_slice(&self.seq.to_be_bytes());
        out[28] = u8::from(self.explicit);
        out
    }

    pub(super) fn decode(b: &[u8]) -> Result<Claim, StoreError> {
        if b.len() != 29 {
            return Err(StoreError::Corrupt("dedup claim of wrong length".into()));
        }
        Ok(Claim {
            bucket: u32::from_be_bytes(b[..4].try_into().unwrap_or_default()),
            id: id_from(&b[4..20])?,
            seq: u64_from(&b[20..28])?,
            explicit: b[28] & 1 == 1,
        })
    }
}

/// When claims expire: a claim that expires lives in the bucket of its
/// event's time, and a bucket expires whole `ttl` after it ends.
#[derive(Debug, Clone)]
pub(crate) struct Ttl {
    pub bucket_secs: u64,
    pub ttl_secs: u64,
}

impl Ttl {
    /// Buckets of `bucket` at most, and of a 24th of the TTL at most (a
    /// second at least), so that a claim outlives its TTL by at most ~4 %.
    pub(crate) fn new(ttl: std::time::Duration, bucket: std::time::Duration) -> Ttl {
        let ttl_secs = ttl.as_secs();
        Ttl {
            bucket_secs: bucket.as_secs().min(ttl_secs / 24).max(1),
            ttl_secs,
        }
    }

    /// The bucket of a claim made at `time` ([`PERMANENT`] unless it `expires`).
    pub(crate) fn bucket_of(&self, expires: bool, time: DateTime<Utc>) -> u32 {
        if !expires {
            return PERMANENT;
        }
        let secs = u64::try_from(time.timestamp()).unwrap_or(0);
        u32::try_from(secs / self.bucket_secs.max(1)).unwrap_or(PERMANENT - 1)
    }

    /// The first bucket not expired at `now`.
    pub(crate) fn first_live(&self, now: DateTime<Utc>) -> u32 {
        let now = u64::try_from(now.timestamp()).unwrap_or(0);
        u32::try_from(now.saturating_sub(self.ttl_secs) / self.bucket_secs.max(1))
            .unwrap_or(PERMANENT - 1)
    }

    pub(crate) fn expired(&self, bucket: u32, now: DateTime<Utc>) -> bool {
        bucket != PERMANENT && bucket < self.first_live(now)
    }
}

impl Index {
    /// The claim on `key`, expired or not.
    pub(crate) fn claim(&self, key: &str) -> Result<Option<Claim>, StoreError> {
        let txn = self.db.begin_read().map_err(ix)?;
        let t = txn.open_table(CLAIMS).map_err(ix)?;
        let v = t.get(key_hash(key)).map_err(ix)?.map(|v| v.value());
        v.map(|v| Claim::decode(&v)).transpose()
    }

    /// Drop the claims stored ahead of their events (explicit claims) whose
    /// events never reached the log: those of events after `tip`.
    pub(crate) fn drop_claims_after(&self, tip: u64) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(ix)?;
        let mut dropped = 0;
        {
            let mut explicit = txn.open_table(CLAIM_EXPLICIT).map_err(ix)?;
            let mut stale = Vec::new();
            for item in explicit.range(tip.saturating_add(1)..).map_err(ix)? {
                let (k, v) = item.map_err(ix)?;
                stale.push((k.value(), v.value()));
            }
            let mut claims = txn.open_table(CLAIMS).map_err(ix)?;
            let mut expiry = txn.open_table(CLAIM_EXPIRY).map_err(ix)?;
            for (seq, hash) in stale {
                explicit.remove(seq).map_err(ix)?;
                let held = match claims.get(hash).map_err(ix)? {
                    Some(v) => Some(Claim::decode(&v.value())?),
                    None => None,
                };
                if let Some(c) = held.filter(|c| c.seq == seq) {
                    claims.remove(hash).map_err(ix)?;
                    expiry.remove(expiry_key(c.bucket, &hash)).map_err(ix)?;
                    dropped += 1;
                }
            }
        }
        txn.commit().map_err(ix)?;
        Ok(dropped)
    }

    /// Remove every claim in an expired bucket; the number removed.
    pub(crate) fn expire(&self, ttl: &Ttl, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let cutoff = expiry_key(ttl.first_live(now), &[0u8; 16]);
        let mut removed = 0;
        loop {
            let txn = self.db.begin_write().map_err(ix)?;
            let done;
            {
                let mut expiry = txn.open_table(CLAIM_EXPIRY).map_err(ix)?;
                let mut keys = Vec::new();
                for item in expiry.range(..cutoff).map_err(ix)?.take(10_000) {
                    keys.push(item.map_err(ix)?.0.value());
                }
                done = keys.len() < 10_000;
                let mut claims = txn.open_table(CLAIMS).map_err(ix)?;
                let mut explicit = txn.open_table(CLAIM_EXPLICIT).map_err(ix)?;
                for k in keys {
                    expiry.remove(k).map_err(ix)?;
                    let bucket = u32::from_be_bytes([k[0], k[1], k[2], k[3]]);
                    let mut hash = [0u8; 16];
                    hash.copy_from_slice(&k[4..]);
                    let held = match claims.get(hash).map_err(ix)? {
                        Some(v) => Some(Claim::decode(&v.value())?),
                        None => None,
                    };
                    if let Some(c) = held.filter(|c| c.bucket == bucket) {
                        claims.remove(hash).map_err(ix)?;
                        if c.explicit {
                            explicit.remove(c.seq).map_err(ix)?;
                        }
                        removed += 1;
                    }
                }
            }
            txn.commit().map_err(ix)?;
            if done {
                return Ok(removed);
            }
        }
    }
}

/// Store a batch's claims: the first claim of a key holds until it expires.
pub(super) fn write_claims(
    txn: &WriteTransaction,
    batch: &[(String, Claim)],
    ttl: &Ttl,
) -> Result<(), StoreError> {
    let mut claims = txn.open_table(CLAIMS).map_err(ix)?;
    let mut expiry = txn.open_table(CLAIM_EXPIRY).map_err(ix)?;
    let mut explicit = txn.open_table(CLAIM_EXPLICIT).map_err(ix)?;
    let now = Utc::now();
    for (key, claim) in batch {
        let hash = key_hash(key);
        let held = match claims.get(hash).map_err(ix)? {
            Some(v) => Some(Claim::decode(&v.value())?),
            None => None,
        };
        if held.is_some_and(|h| h.id != claim.id && !ttl.expired(h.bucket, now)) {
            continue;
        }
        claims.insert(hash, claim.encode()).map_err(ix)?;
        if claim.bucket != PERMANENT {
            expiry
                .insert(expiry_key(claim.bucket, &hash), ())
                .map_err(ix)?;
        }
        if claim.explicit {
            explicit.insert(claim.seq, hash).map_err(ix)?;
        }
    }
    Ok(())
}

/// Move claims kept under their whole key (format 1) to their hashes.
pub(super) fn convert_old_claims(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let mut old = Vec::new();
    {
        let t = txn.open_table(OLD_DEDUP).map_err(ix)?;
        for item in t.iter().map_err(ix)? {
            let (k, v) = item.map_err(ix)?;
            old.push((k.value().to_string(), Claim::decode(v.value())?));
        }
    }
    {
        let mut claims = txn.open_table(CLAIMS).map_err(ix)?;
        let mut expiry = txn.open_table(CLAIM_EXPIRY).map_err(ix)?;
        let mut explicit = txn.open_table(CLAIM_EXPLICIT).map_err(ix)?;
        for (key, claim) in &old {
            let hash = key_hash(key);
            claims.insert(hash, claim.encode()).map_err(ix)?;
            if claim.bucket != PERMANENT {
                expiry
                    .insert(expiry_key(claim.bucket, &hash), ())
                    .map_err(ix)?;
            }
            if claim.explicit {
                explicit.insert(claim.seq, hash).map_err(ix)?;
            }
        }
    }
    txn.delete_table(OLD_DEDUP).map_err(ix)?;
    txn.delete_table(OLD_EXPIRY).map_err(ix)?;
    txn.delete_table(OLD_EXPLICIT).map_err(ix)?;
    Ok(old.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_narrow_with_short_ttls() {
        let hour = std::time::Duration::from_secs(3600);
        let t = |s: u64| Ttl::new(std::time::Duration::from_secs(s), hour).bucket_secs;
        assert_eq!(t(7 * 86_400), 3600, "the default: hourly");
        assert_eq!(t(86_400), 3600);
        assert_eq!(t(3600), 150);
        assert_eq!(t(300), 12);
        assert_eq!(t(10), 1);
        assert_eq!(t(0), 1);
    }

    #[test]
    fn claims_round_trip_and_buckets_expire_whole() {
        let c = Claim {
            id: RequestId::new(),
            seq: 77,
            bucket: 12,
            explicit: true,
        };
        assert_eq!(Claim::decode(&c.encode()).unwrap(), c);
        let ttl = Ttl {
            bucket_secs: 3600,
            ttl_secs: 7 * 86400,
        };
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let b = ttl.bucket_of(true, t0);
        assert_eq!(ttl.bucket_of(false, t0), PERMANENT);
        // Alive for at least the TTL, gone by TTL + one bucket.
        assert!(!ttl.expired(b, t0 + chrono::Duration::days(7)));
        assert!(ttl.expired(
            b,
            t0 + chrono::Duration::days(7) + chrono::Duration::hours(1)
        ));
        assert!(!ttl.expired(PERMANENT, t0 + chrono::Duration::days(10_000)));
    }
}

//! The embedded store's dedup index: every event key's 64-bit hash and its ledger seq, in
//! memory, so that a commit group looks its keys up without a query and appends without a
//! random-key B-tree insert (DESIGN.md, "Measured": that index was the ingest ceiling).
//!
//! The hash only finds a candidate: the store confirms it on the ledger row (a 64-bit
//! collision is filed under the exact text), so dedup stays exact. The index is kept
//! durable as an append-only log of 16-byte records (hash, seq; little-endian), which the
//! ledger can always rebuild: see `scr.store.keylog`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;

/// Bytes of one log record: the key's hash, then its seq.
pub const RECORD_BYTES: usize = 16;

/// The keys are already uniform hashes: hashing them again would only cost time.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_i64(&mut self, value: i64) {
        self.0 = value as u64;
    }
}

/// The signed 64-bit hash of `(tenant, event_id)`: blake2b-64 of `tenant \0 event_id`,
/// read little-endian (`scr.store.records.event_key`).
pub fn event_key(tenant: &str, event_id: &str) -> i64 {
    let mut hasher = Blake2bVar::new(8).expect("8 is a valid blake2b output size");
    hasher.update(tenant.as_bytes());
    hasher.update(&[0]);
    hasher.update(event_id.as_bytes());
    let mut digest = [0u8; 8];
    hasher
        .finalize_variable(&mut digest)
        .expect("the buffer is the output size");
    i64::from_le_bytes(digest)
}

/// Key hash to ledger seq; a later seq for a hash replaces the earlier one (an event sent
/// again after its entry was purged).
#[derive(Default)]
pub struct KeyIndex {
    seqs: HashMap<i64, i64, BuildHasherDefault<PassThrough>>,
}

impl KeyIndex {
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    pub fn get(&self, key: i64) -> Option<i64> {
        self.seqs.get(&key).copied()
    }

    pub fn insert(&mut self, key: i64, seq: i64) {
        self.seqs.insert(key, seq);
    }

    /// Reads whole records from `log`, inserting each; returns how many bytes were whole
    /// records (a record cut short by a crash is left for the caller to truncate) and the
    /// largest seq read.
    pub fn load(&mut self, log: &[u8]) -> (usize, i64) {
        let whole = log.len() - log.len() % RECORD_BYTES;
        self.seqs.reserve(whole / RECORD_BYTES);
        let mut last = 0;
        for record in log[..whole].chunks_exact(RECORD_BYTES) {
            let (key, seq) = read_record(record);
            self.seqs.insert(key, seq);
            last = last.max(seq);
        }
        (whole, last)
    }
}

fn read_record(record: &[u8]) -> (i64, i64) {
    let mut key = [0u8; 8];
    let mut seq = [0u8; 8];
    key.copy_from_slice(&record[..8]);
    seq.copy_from_slice(&record[8..]);
    (i64::from_le_bytes(key), i64::from_le_bytes(seq))
}

/// The log records of `(key, seq)` pairs, in order.
pub fn records(keys: &[i64], seqs: &[i64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(keys.len() * RECORD_BYTES);
    for (key, seq) in keys.iter().zip(seqs) {
        out.extend_from_slice(&key.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_key_is_blake2b_64_of_tenant_nul_id() {
        // the reference: scr.log.keys.event_key("org_a", "evt_1")
        assert_eq!(event_key("org_a", "evt_1"), -4731976081014538607);
        assert_ne!(event_key("org_a", "evt_1"), event_key("org_a\0evt", "_1"));
        assert_ne!(event_key("org_a", "evt_1"), event_key("org_b", "evt_1"));
    }

    #[test]
    fn records_load_back_and_a_cut_record_is_left_out() {
        let mut log = records(&[7, -3, 7], &[1, 2, 9]);
        log.extend_from_slice(&[1, 2, 3]);
        let mut index = KeyIndex::default();
        let (whole, last) = index.load(&log);
        assert_eq!(whole, 3 * RECORD_BYTES);
        assert_eq!(last, 9);
        assert_eq!(index.len(), 2);
        assert_eq!(index.get(7), Some(9)); // the later seq wins
        assert_eq!(index.get(-3), Some(2));
        assert_eq!(index.get(5), None);
    }
}

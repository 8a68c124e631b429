//! The ledger's per-entry hashes, as `scr.log.entry` and `scr.log.merkle` define them.
//!
//! Chain hash: SHA-256(previous hash of the same tenant ‖ stored entry bytes).
//! Leaf hash (RFC 6962): SHA-256(0x00 ‖ stored entry bytes).
//! Node hash (RFC 6962): SHA-256(0x01 ‖ left ‖ right).

use sha2::{Digest, Sha256};

pub const HASH_BYTES: usize = 32;
pub type Hash = [u8; HASH_BYTES];

const LEAF_PREFIX: [u8; 1] = [0x00];
const NODE_PREFIX: [u8; 1] = [0x01];

/// The RFC 6962 leaf hash of one entry's stored bytes.
pub fn leaf_hash(stored: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(LEAF_PREFIX);
    hasher.update(stored);
    hasher.finalize().into()
}

/// The leaf hashes of many entries, in order.
pub fn leaf_hashes(entries: &[&[u8]]) -> Vec<Hash> {
    entries.iter().map(|stored| leaf_hash(stored)).collect()
}

/// The RFC 6962 hash of an interior node from its two children.
pub fn node_hash(left: &[u8], right: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(NODE_PREFIX);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// A node of the tree: its level (0: a leaf), its index in that level, and its hash.
pub type Node = (u32, u64, Hash);

/// Appends `leaves` to a tree of `size` leaves whose frontier (the roots of its perfect
/// subtrees, largest first) is `frontier`: returns every node they complete, each leaf
/// before the nodes it closes (`scr.log.merkle.extend_frontier`).
pub fn extend_frontier(frontier: &mut Vec<Hash>, size: u64, leaves: &[Hash]) -> Vec<Node> {
    let mut completed = Vec::with_capacity(leaves.len() * 2);
    for (position, leaf) in (size..).zip(leaves) {
        completed.push((0, position, *leaf));
        let (mut value, mut level, mut index) = (*leaf, 0u32, position);
        while index & 1 == 1 {
            // each trailing one bit of the old size closes a perfect subtree
            let left = frontier
                .pop()
                .expect("a tree's frontier has a root per one bit of its size");
            value = node_hash(&left, &value);
            level += 1;
            index >>= 1;
            completed.push((level, index, value));
        }
        frontier.push(value);
    }
    completed
}

/// The chain hash of an entry whose stored bytes are `stored`, after `previous`.
pub fn chain_hash(previous: &[u8], stored: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(stored);
    hasher.finalize().into()
}

/// Why a group's chain hashes cannot be computed.
#[derive(Debug, PartialEq, Eq)]
pub enum ChainError {
    /// `tenants` and `stored` differ in length.
    Lengths { tenants: usize, stored: usize },
    /// Entry `entry` names head `head`, but there are only `heads` heads.
    NoHead {
        entry: usize,
        head: i64,
        heads: usize,
    },
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainError::Lengths { tenants, stored } => write!(
                f,
                "chain_hashes needs one tenant per entry: {tenants} tenants for {stored} entries"
            ),
            ChainError::NoHead { entry, head, heads } => write!(
                f,
                "entry {entry} follows head {head}, but there are {heads} heads"
            ),
        }
    }
}

/// The chain hashes of a group of entries, in ledger order.
///
/// Entry `i` belongs to the tenant whose chain head before the group is `heads[tenants[i]]`;
/// each entry then becomes its tenant's head, so a tenant's entries chain in order.
pub fn chain_hashes(
    heads: &[&[u8]],
    tenants: &[i64],
    stored: &[&[u8]],
) -> Result<Vec<Hash>, ChainError> {
    if tenants.len() != stored.len() {
        return Err(ChainError::Lengths {
            tenants: tenants.len(),
            stored: stored.len(),
        });
    }
    let mut latest: Vec<Option<Hash>> = vec![None; heads.len()];
    let mut hashes = Vec::with_capacity(stored.len());
    for (entry, (&head, bytes)) in tenants.iter().zip(stored).enumerate() {
        let position = usize::try_from(head)
            .ok()
            .filter(|&index| index < heads.len());
        let Some(index) = position else {
            return Err(ChainError::NoHead {
                entry,
                head,
                heads: heads.len(),
            });
        };
        let slot = &mut latest[index];
        let previous: &[u8] = match slot {
            Some(hash) => hash,
            None => heads[index],
        };
        let hash = chain_hash(previous, bytes);
        *slot = Some(hash);
        hashes.push(hash);
    }
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_leaves_close_two_nodes_and_a_root() {
        let leaves: Vec<Hash> = (0u8..4).map(|n| leaf_hash(&[n])).collect();
        let mut frontier = Vec::new();
        let nodes = extend_frontier(&mut frontier, 0, &leaves);
        let left = node_hash(&leaves[0], &leaves[1]);
        let right = node_hash(&leaves[2], &leaves[3]);
        let root = node_hash(&left, &right);
        assert_eq!(frontier, vec![root]);
        let shape: Vec<(u32, u64)> = nodes
            .iter()
            .map(|(level, index, _)| (*level, *index))
            .collect();
        assert_eq!(
            shape,
            vec![(0, 0), (0, 1), (1, 0), (0, 2), (0, 3), (1, 1), (2, 0)]
        );
        assert_eq!(nodes[6].2, root);
    }

    fn hex(hash: &Hash) -> String {
        hash.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn leaf_hash_of_empty_entry_is_rfc6962s() {
        // SHA-256 of the single byte 0x00 (RFC 6962 test vectors: the hash of an empty leaf)
        assert_eq!(
            hex(&leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn leaf_hashes_keep_order() {
        let entries: [&[u8]; 3] = [b"a", b"", b"ccc"];
        let hashes = leaf_hashes(&entries);
        assert_eq!(
            hashes,
            vec![leaf_hash(b"a"), leaf_hash(b""), leaf_hash(b"ccc")]
        );
    }

    #[test]
    fn chain_hash_is_sha256_of_previous_then_stored() {
        // SHA-256("abc"), split anywhere between previous and stored
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(hex(&chain_hash(b"a", b"bc")), expected);
        assert_eq!(hex(&chain_hash(b"", b"abc")), expected);
    }

    #[test]
    fn chain_hashes_chain_each_tenant_in_order() {
        let genesis = [0u8; HASH_BYTES];
        let other = [7u8; HASH_BYTES];
        let heads: [&[u8]; 2] = [&genesis, &other];
        let stored: [&[u8]; 3] = [b"first", b"second", b"third"];
        let hashes = chain_hashes(&heads, &[0, 1, 0], &stored).unwrap();
        let first = chain_hash(&genesis, b"first");
        assert_eq!(hashes[0], first);
        assert_eq!(hashes[1], chain_hash(&other, b"second"));
        assert_eq!(hashes[2], chain_hash(&first, b"third"));
    }

    #[test]
    fn chain_hashes_refuse_a_missing_head() {
        let genesis = [0u8; HASH_BYTES];
        let heads: [&[u8]; 1] = [&genesis];
        let stored: [&[u8]; 2] = [b"x", b"y"];
        assert_eq!(
            chain_hashes(&heads, &[0, 1], &stored),
            Err(ChainError::NoHead {
                entry: 1,
                head: 1,
                heads: 1
            })
        );
        assert_eq!(
            chain_hashes(&heads, &[0, -1], &stored),
            Err(ChainError::NoHead {
                entry: 1,
                head: -1,
                heads: 1
            })
        );
        assert_eq!(
            chain_hashes(&heads, &[0], &stored),
            Err(ChainError::Lengths {
                tenants: 1,
                stored: 2
            })
        );
    }

    #[test]
    fn an_empty_group_has_no_hashes() {
        assert_eq!(chain_hashes(&[], &[], &[]), Ok(vec![]));
        assert!(leaf_hashes(&[]).is_empty());
    }
}

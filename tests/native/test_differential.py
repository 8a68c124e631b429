"""The native core against the Python reference: byte-identical answers for any input.

Inputs include the empty, the huge, non-ASCII text and arbitrary bytes; each property runs
a bounded number of examples, so the file takes a few seconds.
"""

from __future__ import annotations

import string
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scr.log import entry, keys, merkle
from scr.route import signing

EXAMPLES = 60
HUGE_BYTES = 1 << 20  # one example well past any event, to cross the hash's block loops

entry_bytes = st.one_of(st.binary(max_size=2048), st.just(b""), st.just(b"\x00" * HUGE_BYTES))
# any text Python can encode as UTF-8 (surrogates cannot be: see the test of that below)
text = st.one_of(st.text(max_size=200), st.text(string.printable, max_size=20), st.just("é\0😀"))
bounded = settings(max_examples=EXAMPLES, deadline=None)


@bounded
@given(st.lists(entry_bytes, max_size=20))
def test_leaf_hashes(core: ModuleType, entries: list[bytes]) -> None:
    assert core.leaf_hashes(entries) == merkle.leaf_hashes(entries)
    assert merkle.leaf_hashes(entries) == [merkle.leaf_hash(stored) for stored in entries]


@st.composite
def chained_groups(draw: st.DrawFn) -> tuple[list[bytes], list[int], list[bytes]]:
    """Heads (any bytes, the genesis hash among them) and a group of entries naming them."""
    heads = draw(st.lists(st.one_of(st.just(entry.GENESIS_HASH), st.binary(max_size=64)),
                          min_size=1, max_size=5))
    tenants = draw(st.lists(st.integers(0, len(heads) - 1), max_size=30))
    stored = draw(st.lists(entry_bytes, min_size=len(tenants), max_size=len(tenants)))
    return heads, tenants, stored


@bounded
@given(chained_groups())
def test_chain_hashes(core: ModuleType, group: tuple[list[bytes], list[int], list[bytes]]) -> None:
    heads, tenants, stored = group
    hashes = core.chain_hashes(heads, tenants, stored)
    assert hashes == entry.chain_hashes(heads, tenants, stored)
    # and the reference is the chain entry by entry
    latest = list(heads)
    for tenant, stored_bytes, digest in zip(tenants, stored, hashes, strict=True):
        assert digest == entry.chain_hash(latest[tenant], stored_bytes)
        latest[tenant] = digest


@pytest.mark.parametrize(
    ("tenants", "stored", "message"),
    [
        ([0, 1], [b"a", b"b"], "entry 1 follows head 1, but there are 1 heads"),
        ([-1], [b"a"], "entry 0 follows head -1, but there are 1 heads"),
        ([0], [b"a", b"b"], "chain_hashes needs one tenant per entry: 1 tenants for 2 entries"),
    ],
)
def test_chain_hashes_refuse_a_group_that_names_no_head(
    core: ModuleType, tenants: list[int], stored: list[bytes], message: str
) -> None:
    for chain_hashes in (core.chain_hashes, entry.chain_hashes):
        with pytest.raises(ValueError) as refused:
            chain_hashes([entry.GENESIS_HASH], tenants, stored)
        assert str(refused.value) == message


@bounded
@given(text, st.lists(text, max_size=20))
def test_webhook_ids(core: ModuleType, destination: str, event_ids: list[str]) -> None:
    ids = core.webhook_ids(destination, event_ids)
    assert ids == signing.webhook_ids(destination, event_ids)
    assert ids == [signing.webhook_id(destination, event_id) for event_id in event_ids]


@bounded
@given(text, st.integers(-(2**70), 2**70), st.integers(-(2**70), 2**70))
def test_batch_webhook_id(core: ModuleType, destination: str, first: int, last: int) -> None:
    expected = signing.batch_webhook_id(destination, first, last)
    assert core.batch_webhook_id(destination, first, last) == expected


secrets = st.lists(st.one_of(st.binary(min_size=1, max_size=100), st.just(b"")), min_size=1, max_size=4)


@bounded
@given(secrets, text, st.integers(-(2**70), 2**70), entry_bytes)
def test_sign(core: ModuleType, keys: list[bytes], msg_id: str, timestamp: int, body: bytes) -> None:
    header = core.sign(keys, msg_id, timestamp, body)
    assert header == signing.sign(keys, msg_id, timestamp, body)
    for key in keys:  # and a receiver that checks the reference way accepts it
        assert signing.verify(key, msg_id, str(timestamp), body, header, now=timestamp) == (
            timestamp >= 0
        )


def test_sign_refuses_no_secret(core: ModuleType) -> None:
    for sign in (core.sign, signing.sign):
        with pytest.raises(ValueError, match="signing needs at least one secret"):
            sign([], "msg_x", 1, b"{}")


def test_text_that_is_not_utf8_is_refused_by_both(core: ModuleType) -> None:
    lone_surrogate = "evt_\ud800"
    with pytest.raises(UnicodeEncodeError):
        signing.webhook_ids("billing", [lone_surrogate])
    with pytest.raises(UnicodeEncodeError):
        core.webhook_ids("billing", [lone_surrogate])
    with pytest.raises(UnicodeEncodeError):
        signing.sign([b"k"], lone_surrogate, 1, b"")
    with pytest.raises(UnicodeEncodeError):
        core.sign([b"k"], lone_surrogate, 1, b"")


def test_the_standard_webhooks_example_signs_alike(core: ModuleType) -> None:
    # the specification's own example (also in the Rust unit tests)
    key = signing.decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert core.sign([key], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    assert signing.sign([key], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


def test_arguments_of_the_wrong_type_are_refused(core: ModuleType) -> None:
    with pytest.raises(TypeError):
        core.leaf_hashes(["not bytes"])
    with pytest.raises(TypeError):
        core.webhook_ids("billing", [b"not text"])


@bounded
@given(st.lists(st.tuples(text, text), max_size=20))
def test_event_keys(core: ModuleType, pairs: list[tuple[str, str]]) -> None:
    tenants, event_ids = [t for t, _ in pairs], [e for _, e in pairs]
    assert core.event_keys(tenants, event_ids) == keys.event_keys(tenants, event_ids)


signed = st.integers(-(2**63), 2**63 - 1)


@bounded
@given(st.lists(st.tuples(signed, signed), max_size=40), st.lists(signed, max_size=10),
       st.binary(max_size=40))
def test_key_index(core: ModuleType, pairs: list[tuple[int, int]], probes: list[int], log: bytes) -> None:
    """The same seqs, log records and loads (a later seq replaces an earlier one; a record cut
    short is left out)."""
    native, reference = core.KeyIndex(), keys.KeyIndex()
    hashes, seqs = [k for k, _ in pairs], [s for _, s in pairs]
    records = native.insert(hashes, seqs)
    assert records == reference.insert(hashes, seqs)
    assert native.load(log) == reference.load(log)
    wanted = hashes + probes
    assert native.seqs(wanted) == reference.seqs(wanted)
    assert len(native) == len(reference)
    again = core.KeyIndex()
    assert again.load(records) == (len(records), max([0, *seqs]))


def test_key_index_refuses_unpaired_keys(core: ModuleType) -> None:
    for index in (core.KeyIndex(), keys.KeyIndex()):
        with pytest.raises(ValueError, match="insert needs one seq per key: 2 keys for 1 seqs"):
            index.insert([1, 2], [1])
    for event_keys in (core.event_keys, keys.event_keys):
        with pytest.raises(ValueError, match="needs one tenant per event id: 1 tenants for 0 ids"):
            event_keys(["org_a"], [])


hash_32 = st.binary(min_size=32, max_size=32)


@bounded
@given(st.integers(0, 2**40), st.lists(hash_32, max_size=40), st.data())
def test_extend_frontier(core: ModuleType, size: int, leaves: list[bytes], data: st.DataObject) -> None:
    """The same nodes (each leaf before the nodes it closes) and frontier from any tree."""
    frontier = data.draw(st.lists(hash_32, min_size=size.bit_count(), max_size=size.bit_count()))
    native = core.extend_frontier(frontier, size, leaves)
    assert native == merkle.extend_frontier(frontier, size, leaves)
    if size == 0 and leaves:  # from nothing, the frontier folds to the root of the leaves
        roots = native[1]
        folded = roots[-1]
        for left in reversed(roots[:-1]):
            folded = merkle.node_hash(left, folded)
        assert folded == merkle.root(leaves)


def test_extend_frontier_refuses_a_malformed_tree(core: ModuleType) -> None:
    for extend in (core.extend_frontier, merkle.extend_frontier):
        with pytest.raises(ValueError, match="a tree of 3 leaves has 2 frontier hashes, not 1"):
            extend([b"\0" * 32], 3, [])
        with pytest.raises(ValueError, match="leaf hash must be 32 bytes"):
            extend([], 0, [b"short"])

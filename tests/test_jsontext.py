"""scr.jsontext against references: the stdlib decoder for duplicate keys, a counter for depth."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from scr.errors import BadRequest
from scr.jsontext import MAX_JSON_DEPTH, UTF8_CHUNK_BYTES, check_json_text, duplicate_key, nests_deeper_than

# Few key names, so that generated objects repeat keys, and the same name at different levels.
KEY_CHARS = st.sampled_from(['a', 'b', '"', ":", "\\", "/", "é", "\n", "{", "]", " "])
KEYS = st.text(KEY_CHARS, max_size=3)
SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.text(KEY_CHARS, max_size=4)


@st.composite
def spelled(draw: st.DrawFn, text: str) -> str:
    """``text`` as a JSON string, each character spelled one of the ways JSON allows."""
    out = []
    for char in text:
        ways = [json.dumps(char, ensure_ascii=False)[1:-1], f"\\u{ord(char):04x}"]
        if char == "/":
            ways.append("\\/")
        out.append(draw(st.sampled_from(ways)))
    return '"' + "".join(out) + '"'


@st.composite
def documents(draw: st.DrawFn, depth: int = 3) -> str:
    """JSON text whose objects may repeat keys, with varied spelling and whitespace."""
    space = draw(st.sampled_from(["", " ", "\n  "]))
    kind = draw(st.sampled_from(["scalar", "array", "object"] if depth else ["scalar"]))
    if kind == "scalar":
        value = draw(SCALARS)
        return draw(spelled(value)) if isinstance(value, str) else json.dumps(value)
    if kind == "array":
        items = draw(st.lists(documents(depth - 1), max_size=3))
        return "[" + f",{space}".join(items) + "]"
    members = draw(st.lists(st.tuples(KEYS, documents(depth - 1)), max_size=4))
    return "{" + f",{space}".join(
        f"{draw(spelled(key))}{space}:{space}{value}" for key, value in members
    ) + "}"


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise KeyError("repeated")
    return dict(pairs)


def has_duplicate_key(text: bytes) -> bool:
    """The reference: the stdlib decoder, shown each object's members."""
    try:
        json.loads(text, object_pairs_hook=_unique_members)
    except KeyError:
        return True
    return False


class _Pairs(list[tuple[str, Any]]):
    pass


_STEP = re.compile(r'\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def repeats_at(text: bytes, path: str) -> bool:
    """Whether ``path`` leads, through first occurrences, to a key its object holds twice."""
    value: Any = json.loads(text, object_pairs_hook=_Pairs)
    steps = _STEP.findall(path[1:])
    assert path[0] == "$" and "".join(
        f".{name}" if name else f"[{index}]" if index else f"[{quoted}]" for name, index, quoted in steps
    ) == path[1:], path
    for number, (name, index, quoted) in enumerate(steps):
        if index:
            value = value[int(index)]
            continue
        key = name or json.loads(quoted)
        keys = [k for k, _ in value]
        if number == len(steps) - 1:
            return keys.count(key) >= 2
        value = value[keys.index(key)][1]
    return False


@settings(max_examples=1000, deadline=None)
@given(documents())
@example('{"a": "x", "b": {"a": 1}}')  # the same key at two levels is no repeat
@example('{"a": "\\"a\\":", "b": "a"}')  # quotes and colons inside strings
@example('{"\\u0061": 1, "a": 2}')  # one key, two spellings
@example('{"\\/": 1, "/": 2}')
@example('[{"a": 1}, {"a": 2}]')
@example('{"a\\\\": 1, "a\\\\": 2}')
def test_duplicate_key_agrees_with_the_stdlib_decoder(text: str) -> None:
    raw = text.encode()
    found = duplicate_key(raw)
    assert (found is not None) == has_duplicate_key(raw), (text, found)


@settings(max_examples=500, deadline=None)
@given(documents())
def test_the_path_leads_to_a_repeated_key(text: str) -> None:
    raw = text.encode()
    found = duplicate_key(raw)
    if found is not None:
        assert repeats_at(raw, found), (text, found)


def test_the_first_repeat_in_the_document_is_named() -> None:
    text = b'{"usage": {"model": "a", "provider": "p", "model": "b"}, "user": {"id": 1, "id": 2}}'
    assert duplicate_key(text) == "$.usage.model"
    assert duplicate_key(b'[{"k": 1}, {"a b": 1, "a b": 2}]') == '$[1]["a b"]'
    assert duplicate_key(b'{"tags": {"x": "1", "y": "1"}, "model": "1"}') is None


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@st.composite
def nested(draw: st.DrawFn) -> str:
    """Arrays and objects nested around the limit, strings holding brackets and escapes."""
    inner = draw(st.sampled_from(['1', '"[[{"', '"]]}"', '"\\\\"', '"\\"]"', "[]", "{}"]))
    for _ in range(draw(st.integers(MAX_JSON_DEPTH - 3, MAX_JSON_DEPTH + 3))):
        in_array = draw(st.booleans())
        inner = f'[{inner}, "]"]' if in_array else f'{{"k]": {inner}, "[": "}}"}}'
    return inner


@settings(max_examples=200, deadline=None)
@given(nested())
def test_depth_agrees_with_the_decoded_document(text: str) -> None:
    depth = _depth(msgspec.json.decode(text))
    assert nests_deeper_than(text.encode(), MAX_JSON_DEPTH) == (depth > MAX_JSON_DEPTH), depth


def depth_a_decoder_reaches(brackets: bytes, limit: int) -> bool:
    """The reference: read opener by opener, as far as a decoder gets (a closer that closes
    nothing stops it), whether it goes more than ``limit`` levels deep."""
    depth = 0
    for char in brackets:
        depth += 1 if char in b"[{" else -1
        if depth > limit:
            return True
        if depth < 0:
            return False
    return False


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=24).map(lambda raw: bytes(b"[]{}"[c % 4] for c in raw)), st.integers(0, 6))
def test_depth_agrees_with_a_reading_decoder_even_in_broken_text(brackets: bytes, limit: int) -> None:
    assert nests_deeper_than(brackets, limit) == depth_a_decoder_reaches(brackets, limit)


def test_depth_of_text_that_never_closes_is_counted() -> None:
    assert nests_deeper_than(b"[" * (MAX_JSON_DEPTH + 1), MAX_JSON_DEPTH)
    assert nests_deeper_than(b'["' + b"]" * 500 + b'"' + b"[" * MAX_JSON_DEPTH, MAX_JSON_DEPTH)
    assert not nests_deeper_than(b'["' + b"[" * 500 + b'"]', MAX_JSON_DEPTH)


@pytest.mark.parametrize(("text", "offset"), [
    (b'{"a": "\xff"}', 7),
    # a character split by the chunk boundary, and the bad byte just after it
    (b" " * (UTF8_CHUNK_BYTES - 1) + "é".encode() + b"\xff", UTF8_CHUNK_BYTES + 1),
    (b" " * (UTF8_CHUNK_BYTES - 1) + b"\xc3(", UTF8_CHUNK_BYTES - 1),  # a lead byte cut short
    (b'"' + "ok ✓".encode() + b'\xe2\x82"', 7),  # a character cut short
])
def test_invalid_utf8_is_named_by_its_offset(text: bytes, offset: int) -> None:
    with pytest.raises(BadRequest) as refused:
        check_json_text(text)
    assert f"at offset {offset} " in refused.value.details[0].message
    assert f"byte 0x{text[offset]:02x}" in refused.value.details[0].message


def test_utf8_text_passes() -> None:
    check_json_text(b" " * (UTF8_CHUNK_BYTES - 1) + "é ✓ 𝄞".encode() * 3)

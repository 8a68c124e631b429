"""JSON text from outside, checked where the decoder does not check it.

msgspec decodes JSON fast and strictly, but lets three things through:

- **Nesting.** It recurses once per array or object level, so 100,000 nested arrays exhaust
  the interpreter's recursion limit (a ``RecursionError``, not a ``DecodeError``).
  ``check_json_text`` refuses text nested deeper than ``MAX_JSON_DEPTH`` before any decoder
  sees it.
- **UTF-8.** JSON exchanged between systems is UTF-8 (RFC 8259, section 8.1); msgspec 0.22
  raises ``UnicodeDecodeError`` on invalid bytes in a string, and skips them unchecked in
  ``Raw`` values. ``check_json_text`` refuses the whole text, naming the first bad byte.
- **Duplicate keys.** RFC 8259 leaves an object with a repeated key undefined; msgspec keeps
  the last value, silently. ``duplicate_key`` finds the first repeat, for callers that must
  refuse one (an event whose fields could be read two ways).

Every route that reads a JSON body calls ``check_json_text`` before decoding it. A check
fails with ``BadRequest`` (400), located with a JSON path where it can be.
"""

from __future__ import annotations

import codecs
import functools
import json
import re
from typing import Any

from scr.errors import BadRequest, Detail

# Arrays and objects nested deeper than this are refused: serde_json's default limit (the
# planned native core's parser), far beyond any document scr reads (an event nests 3 deep).
MAX_JSON_DEPTH = 128
# Invalid UTF-8 is looked for a chunk at a time, so a large non-ASCII body never becomes one
# large str.
UTF8_CHUNK_BYTES = 1024 * 1024

# Objects and arrays nest alike: map both to one pair, drop every byte but those and quotes.
_ONE_BRACKET_KIND = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{}')
_QUOTED = re.compile(rb'"[^"]*(?:"|\Z)')  # a quoted run of the reduced text (or an unclosed one)
# The escapes that give a character a second spelling (\u0061 is a, \/ is /).
_SECOND_SPELLING = re.compile(rb"\\[u/]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_json_text(text: bytes) -> None:
    """Refuse (400) text that is not UTF-8, or that nests arrays and objects deeper than
    ``MAX_JSON_DEPTH``: what must be known before a decoder reads it."""
    _check_utf8(text)
    if nests_deeper_than(text, MAX_JSON_DEPTH):
        raise BadRequest(
            f"the JSON nests arrays and objects more than {MAX_JSON_DEPTH} levels deep",
            [Detail("$", f"nested deeper than {MAX_JSON_DEPTH} levels")],
        )


def _check_utf8(text: bytes) -> None:
    if text.isascii():  # C speed: nearly every body, and it needs nothing more
        return
    try:
        if len(text) <= UTF8_CHUNK_BYTES:  # one small str, at once: every single event
            text.decode("utf-8")
            return
        decoder = codecs.getincrementaldecoder("utf-8")()
        view = memoryview(text)
        for start in range(0, len(text), UTF8_CHUNK_BYTES):
            pending = len(decoder.getstate()[0])  # bytes of a character the last chunk began
            end = start + UTF8_CHUNK_BYTES
            try:
                decoder.decode(view[start:end], final=end >= len(text))
            except UnicodeDecodeError as error:
                error.start += start - pending  # from the chunk's start to the text's
                raise
    except UnicodeDecodeError as error:
        raise BadRequest(
            "the body is not valid UTF-8",
            [Detail("$", f"byte 0x{text[error.start]:02x} at offset {error.start} is not UTF-8 "
                         f"({error.reason})")],
        ) from None


def nests_deeper_than(text: bytes, limit: int) -> bool:
    """Whether arrays and objects in ``text`` nest more than ``limit`` levels deep.

    Exact for valid JSON. For text that is not, it never answers less than the depth a
    decoder reaches before the first syntax error (it may answer more), so a decoder that is
    told "not deeper" never recurses past ``limit``. Linear, at C speed, whatever the text
    (a 16 MiB body of deep brackets takes about 0.2 s).
    """
    structure = text.translate(_ONE_BRACKET_KIND, _NOT_STRUCTURE)
    if structure.count(b"[") <= limit:  # too few openers, even counting those in strings
        return False
    if b"\\" in text:
        structure = _unescaped(text).translate(_ONE_BRACKET_KIND, _NOT_STRUCTURE)
    # Two adjacent quotes end one string and begin the next, or enclose no bracket: dropping
    # them leaves every bracket as inside or outside a string as it was.
    brackets = structure.replace(b'""', b"")
    if b'"' in brackets:  # a string holds brackets (rare): drop quoted runs
        brackets = _QUOTED.sub(b"", brackets)
    matched = _nesting_at_most(limit).match(brackets)  # always matches: it may match nothing
    end = matched.end() if matched else 0
    # The match stops at the end, at a closer that closes nothing (a decoder fails there),
    # or at an opener one level too deep.
    return brackets[end:end + 1] == b"["


def _unescaped(text: bytes) -> bytes:
    """``text`` without escaped backslashes, then escaped quotes (paired left to right, as a
    decoder reads them): every quote left delimits a string. Strings that differed may now be
    alike; strings that were alike still are."""
    return text.replace(b"\\\\", b"").replace(b'\\"', b"")


@functools.cache
def _nesting_at_most(limit: int) -> re.Pattern[bytes]:
    """Brackets nested at most ``limit`` deep: each level is a run of groups, each group
    closed or left open at the end, around the level below (the deepest holds no group).
    Bounded depth makes this a regular language; possessive repeats match it in one pass,
    never backtracking."""
    level = b""
    for _ in range(limit):
        level = rb"(?:\[" + level + rb"(?:\]|\Z))*+"
    return re.compile(level)


def duplicate_key(text: bytes) -> str | None:
    """The JSON path of the first key (in document order) that appears twice in one object
    of ``text``, or None. ``text`` is valid JSON within ``MAX_JSON_DEPTH`` (check and decode
    it first).

    The cheap test first: if no two strings of the text are spelled alike, no key repeats.
    Only text where two are (a key name used at two levels, a repeated value, or a key with
    escapes) is parsed again, key by key.
    """
    if _no_two_strings_alike(text):
        return None
    return _first_duplicate_path(text)


def _no_two_strings_alike(text: bytes) -> bool:
    """True only if no two strings of ``text`` (keys or values) are the same string."""
    if b"\\" in text:
        text = _unescaped(text)
        if _SECOND_SPELLING.search(text):
            return False  # a character with two spellings: compare decoded keys instead
    # Outside \u and \/, a JSON string has one spelling (control characters are always
    # escaped), so strings spelled apart are different strings.
    strings = text.split(b'"')[1::2]
    return len(set(strings)) == len(strings)


class _RepeatedKey(Exception):
    """Raised by ``_members_once`` to stop the stdlib decoder at the first repeated key."""


def _members_once(members: list[tuple[str, Any]]) -> dict[str, Any]:
    unique = dict(members)
    if len(unique) != len(members):
        raise _RepeatedKey
    return unique


class _Members(list[tuple[str, Any]]):
    """An object's members in order, repeats kept (to locate a repeat once there is one)."""


def _first_duplicate_path(text: bytes) -> str | None:
    try:
        json.loads(text, object_pairs_hook=_members_once)
    except _RepeatedKey:
        return _find_duplicate(json.loads(text, object_pairs_hook=_Members), "$")
    except ValueError:  # not JSON: the decoder reports that, not this check
        return None
    return None


def _find_duplicate(value: Any, path: str) -> str | None:
    """Depth first, members in order: the first repeat met is the first in the document."""
    if isinstance(value, _Members):
        seen: set[str] = set()
        for key, member in value:
            here = _member_path(path, key)
            if key in seen:
                return here
            seen.add(key)
            found = _find_duplicate(member, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, element in enumerate(value):
            found = _find_duplicate(element, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _member_path(path: str, key: str) -> str:
    """``path.key``, or ``path["key"]`` when the key is not a plain name."""
    if _IDENTIFIER.match(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"

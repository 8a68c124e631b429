"""The YAML config: every key declared once, and a loader that reports every error with its line.

The msgspec Structs below are the validation: types, bounds, patterns and unknown-key
rejection come from the declarations, and each field's ``Meta(description=...)`` is the text of
the README's config reference (``config_reference()`` renders it). The few rules that relate
fields to each other (an http destination needs an endpoint, destination names are unique)
live in ``_destination_rules`` and ``_routing_rules``; a Struct built in code runs them in
``__post_init__`` and raises ``ConfigError``.

msgspec stops at the first error, so the loader walks the YAML node tree (``yaml.compose``,
``SafeLoader`` only) beside the declarations and converts each value on its own: one bad value
never hides another, and every message carries the file name and the line of the offending
key or value.
"""

from __future__ import annotations

import base64
import difflib
import json
import os
import re
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias, Union, get_args, get_origin

import msgspec
import yaml
from msgspec import Meta, Struct

from scr.errors import ConfigError, Detail
from scr.schema import OutcomeStatus, SessionType, TenantId, Tier

TOP_LEVEL_KEY = "session_completion_runtime"

DEFAULT_BUFFER_SIZE = 10_000
MAX_BUFFER_SIZE = 1_000_000
DEFAULT_FLUSH_INTERVAL_MS = 100
MAX_WAIT_MS = 60_000
# A budget alerts at most at this many shares of its limit, each at most MAX_BUDGET_SHARE.
MAX_BUDGET_THRESHOLDS = 16
MAX_BUDGET_SHARE = Decimal(10)
DEFAULT_DEDUPLICATION_WINDOW_S = 300
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
MIN_MAX_BODY_BYTES = 1024
MAX_MAX_BODY_BYTES = 1024 * 1024 * 1024
DEFAULT_MAX_BATCH_EVENTS = 10_000
MAX_BATCH_EVENTS = 1_000_000
DEFAULT_DRAIN_TIMEOUT_S = 30.0
MAX_WORKERS = 256
DEFAULT_READER_PROCESS = "destinations"
MAX_DRAIN_TIMEOUT_S = 3600.0
# Slow clients: a request's headers, then its body, must arrive within these (seconds).
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 60.0
MAX_REQUEST_TIMEOUT_S = 3600
# Open client connections one serving process holds at once (503 past it).
DEFAULT_MAX_CONNECTIONS = 1000
MAX_MAX_CONNECTIONS = 1_000_000
DEFAULT_CHECKPOINT_EVERY_ENTRIES = 1000
DEFAULT_CHECKPOINT_EVERY_S = 10.0
MAX_CHECKPOINT_EVERY_S = 86_400.0
DEFAULT_LEDGER_KEY_NAME = "scr"
# A publishable key serves every visitor of a site: its default allows 10 beacons/s sustained.
DEFAULT_BEACONS_PER_MINUTE = 600
DEFAULT_BEACON_BURST = 60
MAX_BEACON_RATE = 1_000_000
DEFAULT_OTLP_SESSION_IDLE_S = 300.0
MAX_OTLP_SESSION_IDLE_S = 86_400.0
DEFAULT_RETRY_ATTEMPTS = 3
MAX_RETRY_ATTEMPTS = 100
MAX_DESTINATION_BATCH_SIZE = 10_000
DEFAULT_BATCH_WAIT_MS = 200
DEFAULT_TIMEOUT_MS = 10_000
MAX_TIMEOUT_MS = 300_000
DEFAULT_BACKOFF_BASE_MS = 1000
DEFAULT_BACKOFF_MAX_MS = 3_600_000
DEFAULT_RETRY_AFTER_MAX_S = 3600
# A receiver asking for more than a week is better dead-lettered and replayed by an operator.
MAX_RETRY_AFTER_MAX_S = 7 * 86_400
DEFAULT_CONCURRENCY = 16
MAX_CONCURRENCY = 1024
DEFAULT_PARTITIONS = 16
MAX_PARTITIONS = 4096
DEFAULT_STREAM = "SCR_EVENTS"
MAX_STREAM_REPLICAS = 5
DEFAULT_BUS_CONNECT_TIMEOUT_MS = 2000
DEFAULT_PUBLISH_TIMEOUT_MS = 5000
DEFAULT_ACK_WAIT_MS = 5000
DEFAULT_MAX_DELIVER = 1000
DEFAULT_MAX_ACK_PENDING = 20_000
DEFAULT_FETCH_EVENTS = 1000
DEFAULT_OWNERSHIP_POLL_MS = 1000
DEFAULT_INSTANCE_TIMEOUT_MS = 10_000
DEFAULT_POOL_MIN_CONNECTIONS = 1
DEFAULT_POOL_MAX_CONNECTIONS = 8
MAX_POOL_CONNECTIONS = 1000
DEFAULT_POOL_WAIT_MS = 5000
DEFAULT_STORE_CONNECT_TIMEOUT_S = 5
MIN_STORE_CONNECT_TIMEOUT_S = 2  # libpq counts whole seconds and treats 1 as 2
MAX_STORE_CONNECT_TIMEOUT_S = 300

# Bounds on the YAML tree itself: aliases can make a small file a huge (or endless) tree.
MAX_CONFIG_VALUES = 100_000
MAX_CONFIG_DEPTH = 64
# Bounds from this size on are written with digit separators (1_000_000) in messages.
BIG_NUMBER = 10_000
# An unknown key sharing this many first characters with a known one is taken for a misspelling.
SUGGEST_PREFIX_CHARS = 4
# An invalid value is echoed in its error message up to this many characters.
MAX_SHOWN_CHARS = 80

NAME_PATTERN = "^[a-z0-9][a-z0-9_-]{0,63}$"
URL_PATTERN = r"^https?://[^\s/?#]+([/?#]\S*)?$"
# One NATS server URL, or several separated by commas (the servers of one NATS cluster).
NATS_URL_PATTERN = r"^(nats|tls)://[^\s,/?#]+(,(nats|tls)://[^\s,/?#]+)*$"
STREAM_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# Exactly the base64 alphabet with correct padding, at least one group.
SECRET_PATTERN = r"^whsec_([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}==)$"
SECRET_PREFIX = "whsec_"
PYTHON_REF_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
# A C2SP signed-note key name: no whitespace and no '+'; kept to one short printable token.
KEY_NAME_PATTERN = r"^[!-*,-~]{1,128}$"
HEADER_VALUE_PATTERN = r"^[^\r\n\x00]*$"
# Headers scr sets itself on every delivery; a config header may not replace them.
RESERVED_HEADERS = frozenset(
    {"webhook-id", "webhook-timestamp", "webhook-signature", "content-length", "host", "transfer-encoding"}
)
ENV_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class _FromEnvironment:
    """Marks a secret string: ``${NAME}`` is read from the environment, and it is never echoed."""


FROM_ENVIRONMENT = _FromEnvironment()


class _ExactDecimal:
    """Marks a decimal read from the YAML text itself: ``12.5`` never passes through a float."""


EXACT_DECIMAL = _ExactDecimal()


def _expects(text: str) -> Meta:
    """What a value must look like, in words, for error messages (the field's meaning is its description)."""
    return Meta(extra={"expects": text})


SourceName = Annotated[str, Meta(min_length=1, max_length=128)]
DestinationName = Annotated[
    str,
    Meta(pattern=NAME_PATTERN),
    _expects("1-64 characters of a-z, 0-9, _ and -, starting with a letter or digit"),
]
Endpoint = Annotated[str, Meta(pattern=URL_PATTERN), _expects("an http:// or https:// URL")]
FilePath = Annotated[str, Meta(min_length=1, max_length=4096)]
# The whsec_ format is checked in _destination_rules, not with Meta(pattern=...): msgspec 0.22
# corrupts memory (a crash at exit) when a pattern-constrained str shares a union with a list.
Secret = Annotated[str, _expects("`whsec_` followed by base64"), FROM_ENVIRONMENT]
PythonReference = Annotated[str, Meta(pattern=PYTHON_REF_PATTERN), _expects('"package.module:function"')]
HeaderName = Annotated[str, Meta(pattern=HEADER_NAME_PATTERN), _expects("an HTTP header name")]
HeaderValue = Annotated[
    str, Meta(pattern=HEADER_VALUE_PATTERN), _expects("a header value without line breaks")
]
BuiltinTransform = Literal["billing_v1", "analytics_v2", "audit_v1", "raw_v1"]
Milliseconds = Annotated[int, Meta(ge=0, le=MAX_WAIT_MS)]
StoreUri = Annotated[
    str,
    Meta(pattern=r"^postgres(ql)?://"),
    _expects("a postgresql:// URI (libpq form)"),
    FROM_ENVIRONMENT,  # it may carry a password: "${NAME}" reads it from the environment
]
# A plain decimal: digits, an optional fraction; no sign, no exponent (money and ratios).
DECIMAL_PATTERN = r"^(0|[1-9][0-9]{0,11})(\.[0-9]{1,18})?$"
ExactDecimal = Annotated[
    str, Meta(pattern=DECIMAL_PATTERN), _expects("a decimal such as 250 or 0.8"), EXACT_DECIMAL
]
KeyName = Annotated[
    str,
    Meta(pattern=KEY_NAME_PATTERN),
    _expects("1-128 printable ASCII characters without spaces or '+'"),
]


class BrowserConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Browser beacons: posted with publishable keys, limited per key."""

    rate_limit_per_minute: Annotated[
        int,
        Meta(
            ge=1, le=MAX_BEACON_RATE,
            description="beacons one publishable key may post per minute, sustained "
            "(429 with Retry-After above)",
        ),
    ] = DEFAULT_BEACONS_PER_MINUTE
    rate_limit_burst: Annotated[
        int,
        Meta(
            ge=1, le=MAX_BEACON_RATE,
            description="beacons one publishable key may post at once, above the sustained rate",
        ),
    ] = DEFAULT_BEACON_BURST


class OtlpConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """OpenTelemetry GenAI spans turned into session completions."""

    session_idle_s: Annotated[
        float,
        Meta(
            gt=0, le=MAX_OTLP_SESSION_IDLE_S,
            description="seconds without a new span after which an OpenTelemetry session is emitted "
            "(sooner when its root span ends)",
        ),
    ] = DEFAULT_OTLP_SESSION_IDLE_S


class CaptureConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How events enter: source labels and the group commit's batching."""

    sources: Annotated[
        list[SourceName], Meta(description="labels of the sources that send events (informational)")
    ] = []
    buffer_size: Annotated[
        int,
        Meta(ge=1, le=MAX_BUFFER_SIZE, description="most events one group commit writes"),
    ] = DEFAULT_BUFFER_SIZE
    flush_interval_ms: Annotated[
        Milliseconds,
        Meta(description="longest wait before queued events are committed (a maximum, not a delay)"),
    ] = DEFAULT_FLUSH_INTERVAL_MS
    browser: Annotated[BrowserConfig, Meta(description="browser beacons (publishable keys)")] = msgspec.field(
        default_factory=BrowserConfig
    )
    otlp: Annotated[OtlpConfig, Meta(description="OpenTelemetry GenAI ingest")] = msgspec.field(
        default_factory=OtlpConfig
    )


class ValidationConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What an event must satisfy to be accepted."""

    schema_version: Annotated[Literal["v1.2"], Meta(description="event schema version accepted")] = "v1.2"
    require_authentication: Annotated[
        bool, Meta(description="demand an API key on POST /v1/events and the read endpoints")
    ] = True
    deduplication_window_sec: Annotated[
        int,
        Meta(
            ge=0,
            description="seconds of the fast in-memory duplicate check in front of PostgreSQL's "
            "index (the ledger's dedup is exact; the embedded store's index is in memory already)",
        ),
    ] = DEFAULT_DEDUPLICATION_WINDOW_S


class ServerConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Limits of the HTTP API."""

    max_body_bytes: Annotated[
        int,
        Meta(ge=MIN_MAX_BODY_BYTES, le=MAX_MAX_BODY_BYTES,
             description="largest request body, as sent and once inflated from gzip (413 above)"),
    ] = DEFAULT_MAX_BODY_BYTES
    max_batch_events: Annotated[
        int, Meta(ge=1, le=MAX_BATCH_EVENTS, description="most events in one POST (413 above)")
    ] = DEFAULT_MAX_BATCH_EVENTS
    workers: Annotated[
        Annotated[int, Meta(ge=1, le=MAX_WORKERS)] | None,
        Meta(description="HTTP edge processes `scr serve` runs on the listening socket (null: one "
             "per core)"),
    ] = None
    drain_timeout_s: Annotated[
        float,
        Meta(gt=0, le=MAX_DRAIN_TIMEOUT_S, description="on SIGTERM, how long the processes may take "
             "to finish what they hold before they are killed (seconds)"),
    ] = DEFAULT_DRAIN_TIMEOUT_S
    header_timeout_s: Annotated[
        float,
        Meta(
            gt=0, le=MAX_REQUEST_TIMEOUT_S,
            description="seconds from a request's first byte to the end of its headers (past it: 408, "
            "and the connection is closed); a new connection that sends nothing is closed after it",
        ),
    ] = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: Annotated[
        float,
        Meta(
            gt=0, le=MAX_REQUEST_TIMEOUT_S,
            description="seconds from the end of a request's headers to the last byte of its body, in "
            "total (past it: 408, the connection is closed, nothing of the request is stored)",
        ),
    ] = DEFAULT_BODY_TIMEOUT_S
    max_connections: Annotated[
        int,
        Meta(
            ge=1, le=MAX_MAX_CONNECTIONS,
            description="client connections one serving process keeps open at once (a connection past "
            "it is answered 503 with `Connection: close`)",
        ),
    ] = DEFAULT_MAX_CONNECTIONS
    tls_cert: Annotated[
        str | None,
        Meta(description="PEM file of the server's certificate (and its chain): the edges serve HTTPS; "
             "set with `tls_key` (`scr serve --tls-cert`); relative to the working directory"),
    ] = None
    tls_key: Annotated[
        str | None,
        Meta(description="PEM file of the private key of `tls_cert` (`scr serve --tls-key`)"),
    ] = None

    def __post_init__(self) -> None:
        _enforce("server", _server_rules(msgspec.to_builtins(self)))


class LedgerConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The rhythm of signed ledger checkpoints."""

    checkpoint_every_entries: Annotated[
        int, Meta(ge=1, description="issue a checkpoint after this many new entries")
    ] = DEFAULT_CHECKPOINT_EVERY_ENTRIES
    checkpoint_every_s: Annotated[
        float,
        Meta(gt=0, le=MAX_CHECKPOINT_EVERY_S, description="issue a checkpoint at least this often (seconds)"),
    ] = DEFAULT_CHECKPOINT_EVERY_S
    key_name: Annotated[
        KeyName,
        Meta(
            description="name of the checkpoint signing key; each tenant's checkpoint origin is "
            "`<key_name>/<tenant>`"
        ),
    ] = DEFAULT_LEDGER_KEY_NAME
    key_file: Annotated[
        FilePath | None,
        Meta(description="PEM file of the Ed25519 checkpoint signing key (created 0600 if absent); "
             "unset: `ledger-key.pem` in the data folder. In a cluster, give every instance the "
             "same file: one key signs every tenant's tree"),
    ] = None


class ClusterConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Several instances over one bus: partitions, the JetStream stream and its timeouts."""

    partitions: Annotated[
        int,
        Meta(
            ge=1, le=MAX_PARTITIONS,
            description="tenants are hashed into this many partitions; each has one owner at a time "
            "(a PostgreSQL store keeps the count its first instance started with, and refuses another)",
        ),
    ] = DEFAULT_PARTITIONS
    stream: Annotated[
        str,
        Meta(pattern=STREAM_NAME_PATTERN, description="JetStream stream holding events until appended"),
        _expects("1-64 characters of A-Z, a-z, 0-9, _ and -"),
    ] = DEFAULT_STREAM
    replicas: Annotated[
        int,
        Meta(
            ge=1, le=MAX_STREAM_REPLICAS,
            description="stream replicas in a NATS cluster (a publish is acked once a majority stored it)",
        ),
    ] = 1
    instance_url: Annotated[
        Endpoint | None,
        Meta(description="this instance's URL as shown by GET /v1/cluster (default: http://host:port)"),
    ] = None
    connect_timeout_ms: Annotated[
        int, Meta(ge=1, le=MAX_TIMEOUT_MS, description="timeout of one connection attempt to NATS")
    ] = DEFAULT_BUS_CONNECT_TIMEOUT_MS
    publish_timeout_ms: Annotated[
        int,
        Meta(ge=1, le=MAX_TIMEOUT_MS, description="longest wait for JetStream to ack a publish (503 after)"),
    ] = DEFAULT_PUBLISH_TIMEOUT_MS
    ack_wait_ms: Annotated[
        int,
        Meta(
            ge=100, le=MAX_TIMEOUT_MS,
            description="an event not acked by its owner this long is delivered again (bounds failover "
            "of in-flight events)",
        ),
    ] = DEFAULT_ACK_WAIT_MS
    max_deliver: Annotated[
        int, Meta(ge=2, description="deliveries of one bus message to owners before JetStream gives up")
    ] = DEFAULT_MAX_DELIVER
    max_ack_pending: Annotated[
        int, Meta(ge=1, description="events of one partition in flight (fetched, not yet appended)")
    ] = DEFAULT_MAX_ACK_PENDING
    fetch_events: Annotated[
        int, Meta(ge=1, le=MAX_BUFFER_SIZE, description="most events an owner takes from a partition at once")
    ] = DEFAULT_FETCH_EVENTS
    ownership_poll_ms: Annotated[
        int,
        Meta(
            ge=10, le=MAX_WAIT_MS,
            description="how often an instance records its heartbeat and takes or gives back "
            "partitions (the failover time of a dead instance's partitions)",
        ),
    ] = DEFAULT_OWNERSHIP_POLL_MS
    instance_timeout_ms: Annotated[
        int,
        Meta(
            ge=100, le=MAX_TIMEOUT_MS,
            description="an instance silent this long is no longer listed by GET /v1/cluster",
        ),
    ] = DEFAULT_INSTANCE_TIMEOUT_MS


class StorePoolConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The PostgreSQL store's connections: its pool of readers and its timeouts."""

    min_connections: Annotated[
        int,
        Meta(ge=0, le=MAX_POOL_CONNECTIONS, description="reader connections kept open (PostgreSQL store)"),
    ] = DEFAULT_POOL_MIN_CONNECTIONS
    max_connections: Annotated[
        int,
        Meta(
            ge=1, le=MAX_POOL_CONNECTIONS,
            description="most reader connections; an instance also holds one writer and, with a "
            "bus, one ownership session",
        ),
    ] = DEFAULT_POOL_MAX_CONNECTIONS
    wait_ms: Annotated[
        int,
        Meta(
            ge=1, le=MAX_TIMEOUT_MS,
            description="a read waits this long for a free reader, then answers 503",
        ),
    ] = DEFAULT_POOL_WAIT_MS
    connect_timeout_s: Annotated[
        int,
        Meta(
            ge=MIN_STORE_CONNECT_TIMEOUT_S, le=MAX_STORE_CONNECT_TIMEOUT_S,
            description="timeout of one connection attempt to PostgreSQL (whole seconds, as libpq "
            "counts them)",
        ),
    ] = DEFAULT_STORE_CONNECT_TIMEOUT_S


class FilterConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Which events a destination takes: every condition given must contain the event's value."""

    session_type: Annotated[
        list[SessionType] | None, Meta(description="accepted `session.session_type` values")
    ] = None
    outcome_status: Annotated[
        list[OutcomeStatus] | None, Meta(description="accepted `outcome.status` values")
    ] = None
    tier: Annotated[list[Tier] | None, Meta(description="accepted `user.tier` values")] = None
    model: Annotated[
        list[str] | None,
        Meta(description='accepted `usage.model` values; shell wildcards allowed ("gpt-4o*")'),
    ] = None
    provider: Annotated[
        list[str] | None,
        Meta(description="accepted `usage.provider` values (an event without one never matches)"),
    ] = None
    tenant: Annotated[list[str] | None, Meta(description="accepted tenants (`user.organization_id`)")] = None


class PythonTransform(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A transform written by the operator: a function importable as ``package.module:function``."""

    python: Annotated[
        PythonReference, Meta(description="the function, called with (event dict, ledger entry)")
    ]


class DestinationConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One consumer of the ledger: where events go, in which shape, and how hard to try."""

    name: Annotated[DestinationName, Meta(description="unique name, used in URLs, metrics and cursors")]
    type: Annotated[
        Literal["http", "file", "log"],
        Meta(
            description="http: signed webhook POSTs; file: JSON lines appended to `path`; "
            "log: one log line per event"
        ),
    ] = "http"
    endpoint: Annotated[
        Endpoint | None, Meta(description="URL deliveries are POSTed to; required when type is http")
    ] = None
    path: Annotated[
        FilePath | None,
        Meta(description="JSON-lines file; required when type is file; relative to the data folder"),
    ] = None
    transform: Annotated[
        BuiltinTransform | PythonTransform,
        Meta(description='shape of each delivered event; or `{python: "module:function"}`'),
        _expects('one of billing_v1, analytics_v2, audit_v1, raw_v1, or {python: "module:function"}'),
    ] = "raw_v1"
    retry_attempts: Annotated[
        int,
        Meta(ge=0, le=MAX_RETRY_ATTEMPTS, description="retries after the first attempt, then dead letter"),
    ] = DEFAULT_RETRY_ATTEMPTS
    sampling_rate: Annotated[
        float, Meta(ge=0, le=1, description="share of (filtered) events delivered, chosen by event id")
    ] = 1.0
    retention_days: Annotated[
        Annotated[int, Meta(ge=1)] | None,
        Meta(description="informational, reported by GET /v1/destinations"),
    ] = None
    personal_fields: Annotated[
        bool,
        Meta(description="false: deliver events without their personal fields (user id as its "
             "keyed hash when encryption is on, else `redacted`; no source IP, final message or "
             "tag values)"),
    ] = True
    secret: Annotated[
        Secret | list[Secret] | None,
        Meta(
            description="Standard Webhooks signing key(s), `whsec_<base64>`; several during rotation; "
            '"${NAME}" reads environment variable NAME'
        ),
        _expects("`whsec_` followed by base64, or a list of them"),
    ] = None
    filter: Annotated[
        FilterConfig | None, Meta(description="conditions an event must meet (none: every event)")
    ] = None
    batch_size: Annotated[
        int,
        Meta(
            ge=1, le=MAX_DESTINATION_BATCH_SIZE,
            description="events per webhook request; above 1 a JSON array "
            "(file destinations batch on their own)",
        ),
    ] = 1
    batch_wait_ms: Annotated[Milliseconds, Meta(description="longest wait to fill a batch")] = (
        DEFAULT_BATCH_WAIT_MS
    )
    timeout_ms: Annotated[
        int, Meta(ge=1, le=MAX_TIMEOUT_MS, description="timeout of one delivery attempt")
    ] = DEFAULT_TIMEOUT_MS
    backoff_base_ms: Annotated[
        int,
        Meta(
            ge=0, description="retry n waits a random time up to this × 2^(n-1) (full jitter), or Retry-After"
        ),
    ] = DEFAULT_BACKOFF_BASE_MS
    backoff_max_ms: Annotated[
        int,
        Meta(ge=0, description="cap on the backoff wait (not on Retry-After); at least backoff_base_ms"),
    ] = DEFAULT_BACKOFF_MAX_MS
    retry_after_max_s: Annotated[
        int,
        Meta(
            ge=0, le=MAX_RETRY_AFTER_MAX_S,
            description="cap on a receiver's Retry-After (seconds), which is otherwise waited in full",
        ),
    ] = DEFAULT_RETRY_AFTER_MAX_S
    ordering: Annotated[
        Literal["none", "session"],
        Meta(description="session: events of one session are delivered in ledger order"),
    ] = "none"
    concurrency: Annotated[
        int, Meta(ge=1, le=MAX_CONCURRENCY, description="parallel requests to this destination")
    ] = DEFAULT_CONCURRENCY
    process: Annotated[
        DestinationName,
        Meta(description="under `scr serve`, the reader process that runs this destination "
             "(`scr: reader <process>`); destinations with the same name share one"),
    ] = DEFAULT_READER_PROCESS
    headers: Annotated[
        dict[HeaderName, HeaderValue],
        Meta(description="extra request headers (not webhook-*, host, content-length, transfer-encoding)"),
    ] = {}

    def __post_init__(self) -> None:
        _enforce("destination", _destination_rules(msgspec.to_builtins(self)))

    def secrets(self) -> list[bytes]:
        """The decoded signing keys (the base64 after ``whsec_``); ``[]`` when unsigned."""
        if self.secret is None:
            return []
        given = [self.secret] if isinstance(self.secret, str) else self.secret
        return [base64.b64decode(s.removeprefix(SECRET_PREFIX), validate=True) for s in given]


class RoutingConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where committed events go."""

    destinations: Annotated[
        list[DestinationConfig], Meta(description="each destination reads the ledger from its own cursor")
    ] = []

    def __post_init__(self) -> None:
        _enforce("routing", _routing_rules(msgspec.to_builtins(self)))


class SecurityConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Encryption of personal data at rest (``scr.privacy``)."""

    master_key_file: Annotated[
        FilePath | None,
        Meta(description="file holding the master key (32 random bytes in base64) that wraps each "
             "subject's data key; set: personal fields are stored encrypted (the environment "
             "variable SCR_MASTER_KEY_FILE takes precedence)"),
    ] = None


class BudgetConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A tenant's spending limit per period, and the share of it that raises an alert."""

    tenant: Annotated[TenantId, Meta(description="the tenant (`user.organization_id`) whose cost counts")]
    period: Annotated[
        Literal["day", "month"], Meta(description="the UTC day or month of the events' `timestamp`")
    ]
    limit_usd: Annotated[ExactDecimal, Meta(description="the period's limit in USD (read exactly)")]
    alert_at: Annotated[
        list[ExactDecimal],
        Meta(min_length=1, max_length=MAX_BUDGET_THRESHOLDS,
             description="shares of the limit that raise an alert once per period (1.0: the limit)"),
    ] = msgspec.field(default_factory=lambda: ["0.8", "1.0"])
    destinations: Annotated[
        list[DestinationName],
        Meta(min_length=1, description="the destinations (`routing.destinations` names) alerted"),
    ]

    @property
    def limit(self) -> Decimal:
        return Decimal(self.limit_usd)

    @property
    def thresholds(self) -> list[Decimal]:
        return [Decimal(share) for share in self.alert_at]


class AnomalyConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Anomaly detection over the usage aggregates: which metrics, per which window, alerted where."""

    metrics: Annotated[
        list[Literal["cost_usd", "total_tokens", "error_rate"]],
        Meta(min_length=1, description="the metrics judged per tenant and closed window"),
    ] = msgspec.field(default_factory=lambda: ["cost_usd", "total_tokens", "error_rate"])
    window: Annotated[
        Literal["hour", "day"], Meta(description="the UTC window judged once it has closed")
    ] = "hour"
    destinations: Annotated[
        list[DestinationName],
        Meta(min_length=1, description="the destinations (`routing.destinations` names) alerted"),
    ]


class UsageConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Budgets and anomaly detection over the usage aggregates."""

    budgets: Annotated[
        list[BudgetConfig], Meta(description="alerts when a tenant's cost crosses a share of a limit")
    ] = []
    anomalies: Annotated[
        AnomalyConfig | None,
        Meta(description="alerts when a tenant's cost, tokens or error rate leaves its usual band"),
    ] = None

    def __post_init__(self) -> None:
        _enforce("usage", _usage_rules(msgspec.to_builtins(self)))


EnrichField = Literal["content.user_request", "content.summary", "content.tool_outputs",
                      "outcome.final_message"]
LOCAL_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class EmbedderConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The model that turns a session's text into a vector."""

    kind: Annotated[
        Literal["local", "openai"],
        Meta(description="`local`: all-MiniLM-L6-v2 on this machine's CPU (installed with scr, "
             "offline); `openai`: an OpenAI-compatible `/v1/embeddings` endpoint"),
    ] = "local"
    model: Annotated[
        Annotated[str, Meta(min_length=1, max_length=256)] | None,
        Meta(description=f"the model's name (`local`: {LOCAL_EMBEDDING_MODEL}, the default; "
             "`openai`: required)"),
    ] = None
    url: Annotated[
        Endpoint | None,
        Meta(description="`openai`: the base URL (`/embeddings` is appended), e.g. `https://api.openai.com/v1`"),
    ] = None
    api_key_env: Annotated[
        Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")] | None,
        Meta(description="`openai`: the environment variable holding the key (sent as a Bearer token)"),
    ] = None


class EnrichmentIndexConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How similar sessions are searched."""

    exact_below: Annotated[
        int,
        Meta(ge=0, le=1_000_000, description="a search filter that keeps fewer vectors than this "
             "is answered by exact search (and says `\"exact\": true`)"),
    ] = 2_000


class EnrichmentConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Embeddings of sessions and similar-session search (off when absent)."""

    embedder: Annotated[EmbedderConfig, Meta(description="the embedding model")] = msgspec.field(
        default_factory=EmbedderConfig
    )
    fields: Annotated[
        list[EnrichField],
        Meta(min_length=1, description="the event fields whose text is embedded (joined); an "
             "event with none of them gets no vector"),
    ] = msgspec.field(default_factory=lambda: list(get_args(EnrichField)))
    index: Annotated[EnrichmentIndexConfig, Meta(description="the search")] = msgspec.field(
        default_factory=EnrichmentIndexConfig
    )

    def __post_init__(self) -> None:
        _enforce("enrichment", _enrichment_rules(msgspec.to_builtins(self)))


Days = Annotated[int, Meta(ge=0, le=36_500)]


class TenantRetentionConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One tenant's own retention (each field left out keeps the default's)."""

    hot_days: Annotated[Days | None, Meta(description="days an entry stays in the hot store")] = None
    cold_days: Annotated[Days | None, Meta(description="days before an archived entry is purged")] = None


class RetentionConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Hot store, archive segments and purge (off when absent; ages count from commit time)."""

    hot_days: Annotated[Days, Meta(description="days an entry stays in the hot store before it "
                                   "is archived (0: as soon as a checkpoint covers it)")] = 30
    cold_days: Annotated[Days, Meta(description="days (from commit) before an archived entry "
                                    "is purged; at least `hot_days`")] = 2555
    archive_dir: Annotated[
        FilePath | None,
        Meta(description="where archive segments are written; none: `archive` in the data folder"),
    ] = None
    tenants: Annotated[
        dict[Annotated[str, Meta(min_length=1, max_length=128)], TenantRetentionConfig],
        Meta(description="per-tenant `hot_days` and `cold_days`"),
    ] = {}
    check_every_s: Annotated[
        float, Meta(ge=1, le=86_400, description="how often the archiver looks for old entries")
    ] = 600.0
    segment_entries: Annotated[
        int, Meta(ge=256, le=10_000_000, description="most entries in one archive segment")
    ] = 100_000

    def __post_init__(self) -> None:
        _enforce("retention", _retention_rules(self))

    def days(self, tenant: str) -> tuple[int, int]:
        """The tenant's (hot days, cold days)."""
        own = self.tenants.get(tenant)
        hot = own.hot_days if own is not None and own.hot_days is not None else self.hot_days
        cold = own.cold_days if own is not None and own.cold_days is not None else self.cold_days
        return hot, cold


class Config(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Everything under ``session_completion_runtime``."""

    capture: Annotated[CaptureConfig, Meta(description="how events enter")] = msgspec.field(
        default_factory=CaptureConfig
    )
    validation: Annotated[ValidationConfig, Meta(description="what an event must satisfy")] = msgspec.field(
        default_factory=ValidationConfig
    )
    routing: Annotated[RoutingConfig, Meta(description="where committed events go")] = msgspec.field(
        default_factory=RoutingConfig
    )
    server: Annotated[ServerConfig, Meta(description="limits of the HTTP API")] = msgspec.field(
        default_factory=ServerConfig
    )
    ledger: Annotated[LedgerConfig, Meta(description="signed checkpoint rhythm")] = msgspec.field(
        default_factory=LedgerConfig
    )
    store: Annotated[
        StoreUri | None,
        Meta(
            description="the PostgreSQL store (`postgresql://user@host/db`); none: SQLite in the data "
            'folder; `scr serve --store` overrides it; "${NAME}" reads environment variable NAME'
        ),
    ] = None
    bus: Annotated[
        Annotated[str, Meta(pattern=NATS_URL_PATTERN)] | None,
        Meta(
            description="NATS JetStream URL(s), comma-separated (`nats://host:4222`): events are "
            "acknowledged once the bus stored them, then appended by their partition's owner"
        ),
        _expects("nats://host:port, or several separated by commas"),
    ] = None
    cluster: Annotated[ClusterConfig, Meta(description="partitions, stream and timeouts of the bus")] = (
        msgspec.field(default_factory=ClusterConfig)
    )
    store_pool: Annotated[
        StorePoolConfig, Meta(description="connections and timeouts of the PostgreSQL store")
    ] = msgspec.field(default_factory=StorePoolConfig)
    security: Annotated[
        SecurityConfig, Meta(description="encryption of personal data at rest")
    ] = msgspec.field(default_factory=SecurityConfig)
    usage: Annotated[
        UsageConfig, Meta(description="budgets and anomalies over the usage aggregates")
    ] = msgspec.field(default_factory=UsageConfig)
    enrichment: Annotated[
        EnrichmentConfig | None,
        Meta(description="embeddings of sessions' text and similar-session search; off when absent"),
    ] = None
    retention: Annotated[
        RetentionConfig | None,
        Meta(description="hot days, archive segments, cold days and purge; off when absent"),
    ] = None

    def __post_init__(self) -> None:
        values = msgspec.to_builtins(self)
        _enforce("usage", _budget_destination_rules(values))
        _enforce("retention", _cluster_archive_rules(values))


class _ConfigFile(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole file: one required top-level key."""

    session_completion_runtime: Config


# ----- rules that relate fields ----------------------------------------------------------------

# A rule reads a section as builtins (field name -> value, defaults filled in; a value that
# failed its own check is ``INVALID`` and the rule leaves it alone) and returns located problems.
Rule: TypeAlias = Callable[[Mapping[str, Any]], list[Detail]]


class _Invalid:
    def __repr__(self) -> str:
        return "INVALID"


INVALID: Any = _Invalid()


def _destination_rules(values: Mapping[str, Any]) -> list[Detail]:
    problems: list[Detail] = []
    kind = values["type"]
    if kind == "http" and values["endpoint"] is None:
        problems.append(Detail("endpoint", "an http destination needs `endpoint` (or set `type: file`)"))
    if kind in ("file", "log") and values["endpoint"] is not None:
        problems.append(Detail("endpoint", f"`endpoint` is only used by http destinations, not {kind}"))
    if kind == "file" and values["path"] is None:
        problems.append(Detail("path", "a file destination needs `path`"))
    if kind in ("http", "log") and values["path"] is not None:
        problems.append(Detail("path", f"`path` is only used by file destinations, not {kind}"))
    base, ceiling = values["backoff_base_ms"], values["backoff_max_ms"]
    if isinstance(base, int) and isinstance(ceiling, int) and ceiling < base:
        problems.append(
            Detail("backoff_max_ms", f"backoff_max_ms ({ceiling}) must be >= backoff_base_ms ({base})")
        )
    secret = values["secret"]
    keys = [secret] if isinstance(secret, str) else secret if isinstance(secret, list) else []
    for index, key in enumerate(keys):
        where = "secret" if isinstance(secret, str) else f"secret[{index}]"
        if isinstance(key, str) and not re.fullmatch(SECRET_PATTERN, key):
            problems.append(Detail(where, f"{where} must be `whsec_` followed by base64 (value not shown)"))
    headers = values["headers"]
    if isinstance(headers, Mapping):
        seen: dict[str, str] = {}
        for header in headers:
            if not isinstance(header, str):
                continue
            lowered = header.lower()
            if lowered in RESERVED_HEADERS:
                problems.append(Detail(f"headers.{header}", f"header `{header}` is set by scr itself"))
            elif lowered in seen:
                problems.append(
                    Detail(
                        f"headers.{header}", f"headers `{seen[lowered]}` and `{header}` are the same header"
                    )
                )
            seen[lowered] = header
    return problems


def _routing_rules(values: Mapping[str, Any]) -> list[Detail]:
    problems: list[Detail] = []
    destinations = values["destinations"]
    if not isinstance(destinations, list):
        return problems
    first_index: dict[str, int] = {}
    for index, destination in enumerate(destinations):
        name = destination.get("name") if isinstance(destination, Mapping) else None
        if not isinstance(name, str):
            continue
        if name in first_index:
            problems.append(
                Detail(
                    f"destinations[{index}].name",
                    f"destination name `{name}` is already used by destinations[{first_index[name]}]",
                )
            )
        else:
            first_index[name] = index
    return problems


def _budget_rules(values: Mapping[str, Any]) -> list[Detail]:
    problems: list[Detail] = []
    limit = values["limit_usd"]
    if isinstance(limit, str) and Decimal(limit) == 0:
        problems.append(Detail("limit_usd", "limit_usd must be more than 0"))
    shares = values["alert_at"]
    for key in ("alert_at", "destinations"):
        if values[key] == []:
            problems.append(Detail(key, f"{key} must list at least one item"))
    if isinstance(shares, list) and len(shares) > MAX_BUDGET_THRESHOLDS:
        problems.append(Detail("alert_at", f"alert_at lists at most {MAX_BUDGET_THRESHOLDS} shares"))
    seen: set[Decimal] = set()
    for index, share in enumerate(shares if isinstance(shares, list) else []):
        if not isinstance(share, str):
            continue
        amount = Decimal(share)
        if not 0 < amount <= MAX_BUDGET_SHARE:
            problems.append(Detail(f"alert_at[{index}]", f"alert_at[{index}] must be more than 0 and at "
                                   f"most {MAX_BUDGET_SHARE}, got {share}"))
        elif amount in seen:
            problems.append(Detail(f"alert_at[{index}]", f"alert_at[{index}] ({share}) is listed twice"))
        seen.add(amount)
    return problems


def _usage_rules(values: Mapping[str, Any]) -> list[Detail]:
    problems: list[Detail] = []
    budgets = values["budgets"]
    first_index: dict[tuple[str, str], int] = {}
    for index, budget in enumerate(budgets if isinstance(budgets, list) else []):
        if not isinstance(budget, Mapping):
            continue
        key = (budget.get("tenant"), budget.get("period"))
        if not all(isinstance(part, str) for part in key):
            continue
        if key in first_index:
            problems.append(Detail(
                f"budgets[{index}].period",
                f"tenant `{key[0]}` already has a {key[1]} budget: budgets[{first_index[key]}]",
            ))
        else:
            first_index[key] = index  # type: ignore[index]
    return problems


def _enrichment_rules(values: Mapping[str, Any]) -> list[Detail]:
    embedder = values["embedder"]
    if not isinstance(embedder, Mapping) or embedder.get("kind") != "openai":
        return []
    return [Detail(f"embedder.{key}", f"an `openai` embedder needs `{key}`")
            for key in ("model", "url") if embedder.get(key) is None]


def _retention_rules(retention: RetentionConfig) -> list[Detail]:
    """An entry is purged only after it was archived: cold days at least hot days, per tenant."""
    problems = []
    for tenant in ["", *retention.tenants]:
        hot, cold = retention.days(tenant)
        if cold < hot:
            where = f"tenants.{tenant}" if tenant else ""
            problems.append(Detail(f"{where}{'.' if where else ''}cold_days",
                                   f"cold_days ({cold}) must be at least hot_days ({hot})"))
    return problems


def _budget_destination_rules(values: Mapping[str, Any]) -> list[Detail]:
    """Every budget names configured destinations (a rule across two sections)."""
    routing, usage = values["routing"], values["usage"]
    if not isinstance(routing, Mapping) or not isinstance(usage, Mapping):
        return []
    destinations = routing["destinations"] if isinstance(routing["destinations"], list) else []
    known = {d.get("name") for d in destinations if isinstance(d, Mapping)}
    budgets = usage.get("budgets")
    budgets = budgets if isinstance(budgets, list) else []
    alerting = [(f"usage.budgets[{index}]", "budget", budget) for index, budget in enumerate(budgets)]
    alerting.append(("usage.anomalies", "anomaly", usage.get("anomalies")))
    problems: list[Detail] = []
    for path, what, section in alerting:
        named = section.get("destinations") if isinstance(section, Mapping) else None
        for position, name in enumerate(named if isinstance(named, list) else []):
            if isinstance(name, str) and name not in known:
                problems.append(Detail(
                    f"{path}.destinations[{position}]",
                    f"{what} destination `{name}` is not in routing.destinations",
                ))
    return problems


def _cluster_archive_rules(values: Mapping[str, Any]) -> list[Detail]:
    """In a cluster the archiver runs on whichever instance holds its lease, and every instance
    reads archived entries back: the segments need one directory all of them reach, never a
    data folder of one instance."""
    retention = values["retention"]
    if values["bus"] is None or not isinstance(retention, Mapping):
        return []
    if retention.get("archive_dir") is not None:
        return []
    return [Detail("retention.archive_dir", "with `bus:` (a cluster) `retention.archive_dir` is required: "
                   "a directory every instance reaches at that path (the default, in one instance's "
                   "data folder, is not shared)")]


def _config_rules(values: Mapping[str, Any]) -> list[Detail]:
    return _budget_destination_rules(values) + _cluster_archive_rules(values)


def _anomaly_rules(values: Mapping[str, Any]) -> list[Detail]:
    problems = [Detail(key, f"{key} must list at least one item")
                for key in ("metrics", "destinations") if values[key] == []]
    metrics = values["metrics"]
    for index, metric in enumerate(metrics if isinstance(metrics, list) else []):
        if metric in metrics[:index]:
            problems.append(Detail(f"metrics[{index}]", f"metrics[{index}] ({metric}) is listed twice"))
    return problems


def _server_rules(values: Mapping[str, Any]) -> list[Detail]:
    cert, key = values["tls_cert"], values["tls_key"]
    if cert is not None and key is None:
        return [Detail("tls_key", "`tls_cert` needs `tls_key` (the certificate's private key)")]
    if key is not None and cert is None:
        return [Detail("tls_cert", "`tls_key` needs `tls_cert` (the certificate it belongs to)")]
    return []


def _store_pool_rules(values: Mapping[str, Any]) -> list[Detail]:
    low, high = values["min_connections"], values["max_connections"]
    if isinstance(low, int) and isinstance(high, int) and low > high:
        return [Detail("min_connections", f"min_connections ({low}) must be <= max_connections ({high})")]
    return []


_RULES: dict[type[Struct], Rule] = {
    DestinationConfig: _destination_rules,
    RoutingConfig: _routing_rules,
    StorePoolConfig: _store_pool_rules,
    ServerConfig: _server_rules,
    BudgetConfig: _budget_rules,
    AnomalyConfig: _anomaly_rules,
    UsageConfig: _usage_rules,
    EnrichmentConfig: _enrichment_rules,
    Config: _config_rules,
}


def _enforce(section: str, problems: list[Detail]) -> None:
    if problems:
        raise ConfigError(f"invalid {section}: " + "; ".join(p.message for p in problems), problems)


# ----- public API ------------------------------------------------------------------------------


def default_config() -> Config:
    """The config with every default and no destinations."""
    return Config()


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and check a YAML config file; raise ``ConfigError`` listing every problem with its line.

    ``environ`` (default ``os.environ``) resolves ``"${NAME}"`` secrets.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ConfigError(
            f"cannot read config file {source}: {reason}", [Detail("<file>", f"{source}: {reason}")]
        ) from None
    return parse_config(text, source, environ=environ)


def parse_config(text: str, source: str = "<config>", *, environ: Mapping[str, str] | None = None) -> Config:
    """Check YAML config text (``source`` names it in messages); raise ``ConfigError`` on problems."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as error:
        raise _reader_error(source, text, error) from None
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as error:
            raise _yaml_error(source, error) from None
        except yaml.reader.ReaderError as error:
            raise _reader_error(source, text, error) from None
        checker = _Checker(source, os.environ if environ is None else environ, loader)
        if root is None:
            checker.error(None, TOP_LEVEL_KEY, f"the file is empty; it needs a `{TOP_LEVEL_KEY}` mapping")
            tree = INVALID
        else:
            tree = checker.check(root, _ConfigFile, "", "the file")
    finally:
        loader.dispose()
    if checker.problems:
        # In file order, as a person fixes them; the sort is stable within a line.
        details = [detail for _, detail in sorted(checker.problems, key=lambda problem: problem[0])]
        count = len(details)
        raise ConfigError(f"{source}: {count} error{'s' if count > 1 else ''}", details)
    # Every value and rule has passed: this conversion cannot fail, and fills in the defaults.
    return msgspec.convert(tree, _ConfigFile).session_completion_runtime


def config_reference() -> str:
    """The README's config reference: a Markdown table of every key, rendered from the Structs."""
    rows = ["| Key | Type | Default | Meaning |", "|---|---|---|---|"]
    rows.append(f"| `{TOP_LEVEL_KEY}` | a mapping | required | the only top-level key |")
    for key, annotation, default, meaning in _reference_rows(Config, TOP_LEVEL_KEY):
        rows.append(f"| `{key}` | {_describe(annotation)} | {default} | {meaning} |")
    return "\n".join(rows) + "\n"


# ----- the loader: YAML nodes checked against the declarations ---------------------------------

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_UNION_TYPES = (Union, types.UnionType)


def _yaml_error(source: str, error: yaml.MarkedYAMLError) -> ConfigError:
    mark = error.problem_mark or error.context_mark
    line = f" line {mark.line + 1}" if mark is not None else ""
    problem = " ".join(part for part in (error.context, error.problem) if part)
    message = f"{source}{line}: invalid YAML: {problem}"
    return ConfigError(f"{source}: invalid YAML", [Detail("<yaml>", message)])


def _reader_error(source: str, text: str, error: yaml.reader.ReaderError) -> ConfigError:
    line = text.count("\n", 0, error.position) + 1
    message = f"{source} line {line}: invalid YAML: character {error.character!r} is not allowed"
    return ConfigError(f"{source}: invalid YAML", [Detail("<yaml>", message)])


@dataclass
class _Checker:
    """Walks a YAML node tree beside a type; collects every problem as a located ``Detail``."""

    source: str
    environ: Mapping[str, str]
    loader: yaml.SafeLoader
    problems: list[tuple[int, Detail]] = field(default_factory=list)
    visited: int = 0

    def error(self, node: yaml.Node | None, path: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        detail = Detail(path or TOP_LEVEL_KEY, f"{self.source} line {line}: {message}")
        self.problems.append((line, detail))

    def check(self, node: yaml.Node, annotation: Any, path: str, label: str, depth: int = 0) -> Any:
        """The builtin value of ``node`` if it fits ``annotation``; ``INVALID`` (and errors) if not."""
        self._spend(node, path, depth)
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in (_MAP_TAG, _SEQ_TAG):
            self.error(node, path, f"{label}: unsupported YAML tag {node.tag}")
            return INVALID
        base = _strip(annotation)
        if get_origin(base) in _UNION_TYPES:
            return self._union(node, annotation, path, label, depth)
        if _is_null(node) and _is_container(base):
            # An empty section (`routing:` with nothing under it) means its defaults.
            if get_origin(base) is list:
                node = yaml.SequenceNode(_SEQ_TAG, [], node.start_mark, node.end_mark)
            else:
                node = yaml.MappingNode(_MAP_TAG, [], node.start_mark, node.end_mark)
        if _is_struct(base):
            return self._struct(node, base, path, label, depth)
        if get_origin(base) is list:
            return self._list(node, annotation, path, label, depth)
        if get_origin(base) is dict:
            return self._dict(node, annotation, path, label, depth)
        return self._scalar(node, [annotation], path, label, annotation)

    def _spend(self, node: yaml.Node, path: str, depth: int) -> None:
        """Count one more value read; stop a tree that aliases have made huge or endless."""
        self.visited += 1
        if self.visited > MAX_CONFIG_VALUES or depth > MAX_CONFIG_DEPTH:
            line = node.start_mark.line + 1
            message = (
                f"{self.source} line {line}: more than {MAX_CONFIG_VALUES} values or {MAX_CONFIG_DEPTH} "
                "levels (recursive or runaway YAML aliases?)"
            )
            raise ConfigError(f"{self.source}: config too large", [Detail(path or TOP_LEVEL_KEY, message)])

    def _union(self, node: yaml.Node, annotation: Any, path: str, label: str, depth: int) -> Any:
        options = [a for a in get_args(_strip(annotation)) if a is not type(None)]
        if _is_null(node) and type(None) in get_args(_strip(annotation)):
            return None
        if isinstance(node, yaml.ScalarNode):
            scalars = [a for a in options if not _is_container(a)]
            if scalars:
                return self._scalar(node, scalars, path, label, annotation)
        else:
            want = yaml.MappingNode if isinstance(node, yaml.MappingNode) else yaml.SequenceNode
            matching = [a for a in options if _is_container(a) and _node_kind(a) is want]
            if matching:
                return self.check(node, matching[0], path, label, depth + 1)
        self.error(node, path, f"{label} must be {_describe(annotation)}, got {self._shown(node)}")
        return INVALID

    def _struct(self, node: yaml.Node, cls: type[Struct], path: str, label: str, depth: int) -> Any:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, f"{label} must be a mapping, got {self._shown(node)}")
            return INVALID
        fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
        values: dict[str, Any] = {}
        first_seen: dict[str, yaml.Node] = {}
        for key_node, value_node, own in self._pairs(node, path):
            key = self._key(key_node, path, label)
            if key is None:
                continue
            if own and key in first_seen:
                first_line = first_seen[key].start_mark.line + 1
                self.error(key_node, _join(path, key), f"duplicate key `{key}` (first at line {first_line})")
            if own:
                first_seen[key] = key_node
            if key not in fields:
                self.error(key_node, _join(path, key), _unknown_key_message(key, cls))
                continue
            values[key] = self.check(value_node, fields[key].type, _join(path, key), key, depth + 1)
        for name, info in fields.items():
            if info.required and name not in values:
                self.error(node, _join(path, name), f"missing required key `{name}` in {label}")
                values[name] = INVALID
        rule = _RULES.get(cls)
        if rule is not None:
            filled = {
                name: values[name] if name in values else _default(info) for name, info in fields.items()
            }
            for problem in rule(filled):
                self.error(self._locate(node, problem.path), _join(path, problem.path), problem.message)
        return values

    def _list(self, node: yaml.Node, annotation: Any, path: str, label: str, depth: int) -> Any:
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, path, f"{label} must be {_describe(annotation)}, got {self._shown(node)}")
            return INVALID
        (item_type,) = get_args(_strip(annotation))
        return [
            self.check(item, item_type, f"{path}[{index}]", f"{label}[{index}]", depth + 1)
            for index, item in enumerate(node.value)
        ]

    def _dict(self, node: yaml.Node, annotation: Any, path: str, label: str, depth: int) -> Any:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, f"{label} must be {_describe(annotation)}, got {self._shown(node)}")
            return INVALID
        key_type, value_type = get_args(_strip(annotation))
        values: dict[Any, Any] = {}
        written_here: set[str] = set()
        for key_node, value_node, own in self._pairs(node, path):
            key = self._key(key_node, path, label)
            if key is None:
                continue
            item_path, item_label = _join(path, key), f"{label}.{key}"
            if own and key in written_here:
                self.error(key_node, item_path, f"duplicate key `{key}`")
            if own:
                written_here.add(key)
            if self._scalar(key_node, [key_type], item_path, f"key `{key}` in {label}", key_type) is INVALID:
                continue
            values[key] = self.check(value_node, value_type, item_path, item_label, depth + 1)
        return values

    def _scalar(self, node: yaml.Node, options: list[Any], path: str, label: str, described: Any) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, path, f"{label} must be {_describe(described)}, got {self._shown(node)}")
            return INVALID
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or str(error)
            self.error(node, path, f"{label}: cannot read this value: {problem}")
            return INVALID
        if any(EXACT_DECIMAL in _markers(option) for option in options) and node.tag != _STR_TAG:
            value = node.value  # the number as written: YAML would read 12.5 as a float
        secret = any(FROM_ENVIRONMENT in _markers(option) for option in options)
        # A secret's value is never echoed in a message.
        got = "" if secret else f", got {self._shown(node)}"
        if secret and isinstance(value, str) and (reference := ENV_REFERENCE.match(value)):
            variable = reference.group(1)
            if variable not in self.environ:
                self.error(node, path, f"{label} reads environment variable {variable}, which is not set")
                return INVALID
            value, got = self.environ[variable], f" (in environment variable {variable})"
        for option in options:
            try:
                return msgspec.convert(value, option)
            except msgspec.ValidationError:
                continue
        message = f"{label} must be {_describe(described)}{got}"
        if node.style is None and not isinstance(value, str) and _fits_any(node.value, options):
            message += f'; write it in quotes ("{node.value}") to make it a string'
        self.error(node, path, message)
        return INVALID

    def _key(self, key_node: yaml.Node, path: str, label: str) -> str | None:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR_TAG:
            return str(key_node.value)
        self.error(key_node, path, f"keys in {label} must be strings, got {self._shown(key_node)}")
        return None

    def _pairs(
        self, node: yaml.MappingNode, path: str, report: bool = True, depth: int = 0
    ) -> list[tuple[yaml.Node, yaml.Node, bool]]:
        """Key/value pairs with YAML merge keys (``<<: *anchor``) expanded; ``own`` marks pairs written here.

        Later pairs win, as when a dict is built: merged pairs come first (the first source
        listed last, so it wins among them), then the mapping's own pairs.
        """
        merged: list[tuple[yaml.Node, yaml.Node, bool]] = []
        own: list[tuple[yaml.Node, yaml.Node, bool]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                own.append((key_node, value_node, True))
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for merge_source in reversed(sources):
                self._spend(merge_source, path, depth + 1)
                if isinstance(merge_source, yaml.MappingNode):
                    inherited = self._pairs(merge_source, path, report, depth + 1)
                    self.visited += len(inherited)
                    merged.extend((k, v, False) for k, v, _ in inherited)
                elif report:
                    self.error(merge_source, path, "`<<` can only merge mappings")
        return merged + own

    def _locate(self, node: yaml.Node, relative_path: str) -> yaml.Node:
        """The node at ``relative_path`` (``destinations[2].name``) under ``node``, or the nearest above."""
        for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", relative_path):
            if name and isinstance(node, yaml.MappingNode):
                found = [
                    v for k, v, _ in self._pairs(node, "", report=False) if getattr(k, "value", None) == name
                ]
                if not found:
                    return node
                node = found[-1]
            elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
                node = node.value[int(index)]
            else:
                return node
        return node

    def _shown(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping" if node.value else "{}"
        if isinstance(node, yaml.SequenceNode):
            return "a list" if node.value else "[]"
        if _is_null(node):
            return "null"
        text = str(node.value)
        if len(text) > MAX_SHOWN_CHARS:
            text = text[:MAX_SHOWN_CHARS] + "…"
        return json.dumps(text) if node.tag == _STR_TAG else text


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def _is_struct(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Struct)


def _is_container(annotation: Any) -> bool:
    base = _strip(annotation)
    return _is_struct(base) or get_origin(base) in (list, dict)


def _node_kind(annotation: Any) -> type[yaml.Node]:
    return yaml.SequenceNode if get_origin(_strip(annotation)) is list else yaml.MappingNode


def _fits_any(value: str, options: list[Any]) -> bool:
    for option in options:
        try:
            msgspec.convert(value, option)
        except msgspec.ValidationError:
            continue
        return True
    return False


def _default(info: msgspec.structs.FieldInfo) -> Any:
    if info.default is not msgspec.NODEFAULT:
        return msgspec.to_builtins(info.default)
    if info.default_factory is not msgspec.NODEFAULT:
        return msgspec.to_builtins(info.default_factory())
    return INVALID


def _unknown_key_message(key: str, cls: type[Struct]) -> str:
    known = [f.encode_name for f in msgspec.structs.fields(cls)]
    if cls is _ConfigFile and key in {f.encode_name for f in msgspec.structs.fields(Config)}:
        return f"unknown top-level key `{key}`; it belongs under `{TOP_LEVEL_KEY}`"
    close = difflib.get_close_matches(key, known, n=1) or _same_start(key, known)
    if close:
        return f"unknown key `{key}`; did you mean `{close[0]}`?"
    return f"unknown key `{key}`; known keys: {', '.join(known)}"


def _same_start(key: str, known: list[str]) -> list[str]:
    """Known keys sharing the longest start with ``key`` (``retries`` -> ``retry_attempts``)."""
    shared = {name: _shared_start(key, name) for name in known}
    best = max(shared.values(), default=0)
    return [name for name, length in shared.items() if length == best] if best >= SUGGEST_PREFIX_CHARS else []


def _shared_start(first: str, second: str) -> int:
    pairs = enumerate(zip(first, second, strict=False))
    return next((i for i, (a, b) in pairs if a != b), min(len(first), len(second)))


# ----- reading the declarations ----------------------------------------------------------------


def _strip(annotation: Any) -> Any:
    """The type under any ``Annotated`` layers."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _metadata(annotation: Any) -> Iterator[Any]:
    """Every ``Annotated`` metadata item of ``annotation``, outermost first."""
    while get_origin(annotation) is Annotated:
        yield from annotation.__metadata__
        annotation = get_args(annotation)[0]


def _markers(annotation: Any) -> list[Any]:
    return [item for item in _metadata(annotation) if not isinstance(item, Meta)]


def _metas(annotation: Any) -> list[Meta]:
    return [item for item in _metadata(annotation) if isinstance(item, Meta)]


def _describe(annotation: Any) -> str:
    """What a value of ``annotation`` must be, in words, from its declaration."""
    metas = _metas(annotation)
    for meta in metas:
        if meta.extra and "expects" in meta.extra:
            return str(meta.extra["expects"])
    base = _strip(annotation)
    origin = get_origin(base)
    if origin in _UNION_TYPES:
        options = [_describe(a) for a in get_args(base) if a is not type(None)]
        return " or ".join(options) + (" or null" if type(None) in get_args(base) else "")
    if origin is Literal:
        return "one of " + ", ".join(str(choice) for choice in get_args(base))
    if origin is list:
        return "a list of " + _plural(_describe(get_args(base)[0]))
    if origin is dict or _is_struct(base):
        return "a mapping"
    if base is bool:
        return "true or false"
    if base is int or base is float:
        return ("an integer" if base is int else "a number") + _bounds(metas)
    if base is str:
        return "a non-empty string" if any(m.min_length for m in metas) else "a string"
    return getattr(base, "__name__", str(base))


def _plural(description: str) -> str:
    for singular, plural in _PLURALS:
        if description.startswith(singular):
            return plural + description[len(singular) :]
    return f"items that are each {description}"


_PLURALS = (
    ("an integer", "integers"),
    ("a number", "numbers"),
    ("a non-empty string", "non-empty strings"),
    ("a string", "strings"),
    ("a mapping", "mappings"),
    ("one of ", "values from "),
)


def _bounds(metas: list[Meta]) -> str:
    low = next((m.ge for m in metas if m.ge is not None), None)
    above = next((m.gt for m in metas if m.gt is not None), None)
    high = next((m.le for m in metas if m.le is not None), None)
    if low is not None and high is not None:
        return f" from {_number(low)} to {_number(high)}"
    parts = [
        f"{sign} {_number(bound)}"
        for sign, bound in ((">=", low), (">", above), ("<=", high))
        if bound is not None
    ]
    return " " + " and ".join(parts) if parts else ""


def _number(value: float) -> str:
    """A bound as a person reads it: ``1_000_000``, ``0.5``."""
    if float(value).is_integer() and abs(value) >= BIG_NUMBER:
        return f"{int(value):_}"
    return str(value)


def _reference_rows(cls: type[Struct], prefix: str) -> Iterator[tuple[str, Any, str, str]]:
    """(key path, annotation, default, meaning) for every field under ``cls``, sections first."""
    for info in msgspec.structs.fields(cls):
        key = f"{prefix}.{info.encode_name}"
        meanings = [m.description for m in _metas(info.type) if m.description]
        yield key, info.type, _shown_default(info), meanings[0] if meanings else ""
        for nested, suffix in _nested_structs(info.type):
            yield from _reference_rows(nested, key + suffix)


def _nested_structs(annotation: Any) -> Iterator[tuple[type[Struct], str]]:
    base = _strip(annotation)
    if _is_struct(base):
        yield base, ""
    elif get_origin(base) in _UNION_TYPES:
        for option in get_args(base):
            yield from _nested_structs(option)
    elif get_origin(base) is list:
        for nested, suffix in _nested_structs(get_args(base)[0]):
            yield nested, "[]" + suffix


def _shown_default(info: msgspec.structs.FieldInfo) -> str:
    if info.required:
        return "required"
    default = _default(info)
    if isinstance(default, dict) and default and _is_struct(_strip(info.type)):
        return "(section)"
    return f"`{json.dumps(default)}`" if not isinstance(default, str) else f"`{default}`"


__all__ = [
    "TOP_LEVEL_KEY",
    "BrowserConfig",
    "CaptureConfig",
    "Config",
    "DestinationConfig",
    "FilterConfig",
    "LedgerConfig",
    "OtlpConfig",
    "PythonTransform",
    "RetentionConfig",
    "RoutingConfig",
    "ServerConfig",
    "TenantRetentionConfig",
    "ValidationConfig",
    "config_reference",
    "default_config",
    "load_config",
    "parse_config",
]


def with_tls(config: Config, cert: str | None, key: str | None) -> Config:
    """``config`` with ``scr serve --tls-cert/--tls-key`` over ``server.tls_cert`` and
    ``server.tls_key`` (a flag given wins over its key; the pair is checked like the keys)."""
    if cert is None and key is None:
        return config
    server = msgspec.structs.replace(config.server, tls_cert=cert or config.server.tls_cert,
                                     tls_key=key or config.server.tls_key)
    return msgspec.structs.replace(config, server=server)


def with_bus(config: Config, uri: str) -> Config:
    """``config`` with ``uri`` (``scr serve --bus``) as its ``bus:``, checked like the key."""
    checked = parse_config(f"session_completion_runtime:\n  bus: {json.dumps(uri)}\n", "--bus")
    return msgspec.structs.replace(config, bus=checked.bus)

"""The YAML config: the source document's YAML as written, defaults, and located errors."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scr.config import (
    MAX_CONFIG_VALUES,
    Config,
    DestinationConfig,
    PythonTransform,
    RoutingConfig,
    config_reference,
    default_config,
    load_config,
    parse_config,
)
from scr.errors import ConfigError, Detail

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KEY = base64.b64encode(b"k" * 32).decode()
SECRET = f"whsec_{KEY}"
DEST = "session_completion_runtime.routing.destinations"


def errors_of(text: str, environ: dict[str, str] | None = None) -> list[Detail]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.yaml", environ=environ or {})
    return caught.value.details


def one_error(text: str, environ: dict[str, str] | None = None) -> Detail:
    details = errors_of(text, environ)
    assert len(details) == 1, details
    return details[0]


def with_destination(*lines: str) -> str:
    """A config whose one destination has ``lines`` as its keys; the first key is on line 4."""
    body = "\n".join(f"        {line}" for line in lines)
    return f"session_completion_runtime:\n  routing:\n    destinations:\n      - {body.lstrip()}\n"


# ----- accepted as written -----------------------------------------------------------------------


def test_source_document_yaml_loads_with_its_values_and_defaults() -> None:
    config = load_config(EXAMPLES / "source-document.yaml", environ={})

    assert config.capture.sources == ["openai_api", "chatgpt_web", "agent_framework"]
    assert config.capture.buffer_size == 10000
    assert config.capture.flush_interval_ms == 100
    assert config.validation.schema_version == "v1.2"
    assert config.validation.require_authentication is True
    assert config.validation.deduplication_window_sec == 300
    billing, analytics, compliance = config.routing.destinations
    assert (billing.name, billing.endpoint, billing.transform, billing.retry_attempts) == (
        "billing_system",
        "https://billing.internal/events",
        "billing_v1",
        3,
    )
    assert (analytics.name, analytics.transform, analytics.sampling_rate) == (
        "analytics_pipeline",
        "analytics_v2",
        1.0,
    )
    assert (compliance.name, compliance.transform, compliance.retention_days) == (
        "compliance_log",
        "audit_v1",
        2555,
    )
    # What the source document leaves out takes the documented defaults.
    assert billing.type == "http" and billing.secret is None and billing.secrets() == []
    assert billing.sampling_rate == 1.0 and billing.retention_days is None and billing.filter is None
    assert (billing.batch_size, billing.batch_wait_ms, billing.timeout_ms) == (1, 200, 10_000)
    assert (billing.backoff_base_ms, billing.backoff_max_ms) == (1000, 3_600_000)
    assert (billing.ordering, billing.concurrency, billing.headers) == ("none", 16, {})
    assert analytics.retry_attempts == 3
    assert config.server.max_body_bytes == 16 * 1024 * 1024
    assert config.server.max_batch_events == 10_000
    assert (config.server.header_timeout_s, config.server.body_timeout_s) == (10.0, 60.0)
    assert config.server.max_connections == 1000
    assert config.ledger.checkpoint_every_entries == 1000
    assert config.ledger.checkpoint_every_s == 10
    assert config.ledger.key_name == "scr"


def test_make_run_config_has_three_local_file_destinations() -> None:
    config = load_config(EXAMPLES / "scr.yaml", environ={})

    assert [(d.name, d.type, d.path, d.transform) for d in config.routing.destinations] == [
        ("billing", "file", "deliveries/billing.jsonl", "billing_v1"),
        ("analytics", "file", "deliveries/analytics.jsonl", "analytics_v2"),
        ("compliance", "file", "deliveries/compliance.jsonl", "audit_v1"),
    ]
    assert config.routing.destinations[1].sampling_rate == 1.0
    assert config.routing.destinations[2].retention_days == 2555


def test_the_commented_examples_in_scr_yaml_are_valid_when_uncommented() -> None:
    text = (EXAMPLES / "scr.yaml").read_text()
    uncommented = re.sub(r"^(\s*)# (- name: billing_webhook|  \w+:)", r"\1\2", text, flags=re.M)
    uncommented = re.sub(r"^(\s*)# (filter:|  \w+: \[)", r"\1\2", uncommented, flags=re.M)

    config = parse_config(uncommented, environ={"BILLING_WEBHOOK_SECRET": SECRET})

    webhook = config.routing.destinations[-1]
    assert webhook.name == "billing_webhook" and webhook.type == "http"
    assert webhook.endpoint == "https://billing.example.com/scr/events"
    assert webhook.secrets() == [b"k" * 32]
    assert webhook.ordering == "session" and webhook.headers == {"X-Team": "billing"}
    analytics_filter = config.routing.destinations[1].filter
    assert analytics_filter is not None
    assert analytics_filter.session_type == ["chat", "autonomous"]
    assert analytics_filter.model == ["gpt-4o*", "claude-*"]


def test_default_config_has_no_destinations_and_every_default() -> None:
    config = default_config()

    assert config.routing.destinations == []
    assert config.capture.buffer_size == 10_000 and config.validation.require_authentication
    assert parse_config("session_completion_runtime: {}\n") == config


def test_empty_sections_mean_their_defaults() -> None:
    config = parse_config("session_completion_runtime:\n  capture:\n  routing:\n    destinations:\n")

    assert config == default_config()


def test_python_transform_filter_headers_and_secret_list() -> None:
    config = parse_config(
        with_destination(
            "name: crm",
            "endpoint: http://127.0.0.1:9000/hook",
            'transform: {python: "my_pkg.transforms:to_crm"}',
            f"secret: [{SECRET}, whsec_{base64.b64encode(b'old').decode()}]",
            "filter: {outcome_status: [error, timeout], tier: [enterprise], provider: [openai]}",
            "headers: {X-Api-Version: '2'}",
            "batch_size: 100",
        )
    )

    (crm,) = config.routing.destinations
    assert crm.transform == PythonTransform(python="my_pkg.transforms:to_crm")
    assert crm.secrets() == [b"k" * 32, b"old"]
    assert crm.filter is not None and crm.filter.outcome_status == ["error", "timeout"]
    assert crm.filter.session_type is None
    assert crm.headers == {"X-Api-Version": "2"} and crm.batch_size == 100


def test_yaml_merge_keys_share_settings_and_own_keys_win() -> None:
    config = parse_config(
        "session_completion_runtime:\n"
        "  routing:\n"
        "    destinations:\n"
        "      - &base {name: a, type: file, path: a.jsonl, retry_attempts: 7, headers: &h {X-A: '1'}}\n"
        "      - {<<: *base, name: b, path: b.jsonl, headers: {<<: *h, X-A: '2', X-B: '3'}}\n"
    )

    first, second = config.routing.destinations
    assert (second.name, second.path, second.retry_attempts) == ("b", "b.jsonl", 7)
    assert second.headers == {"X-A": "2", "X-B": "3"}
    assert (first.path, first.headers) == ("a.jsonl", {"X-A": "1"})


def test_config_is_frozen() -> None:
    config = default_config()

    with pytest.raises(AttributeError):
        config.capture = config.capture  # type: ignore[misc]


# ----- environment secrets ---------------------------------------------------------------------


def test_secret_is_read_from_the_environment_variable_it_names() -> None:
    text = with_destination("name: hook", "endpoint: https://x.example/h", 'secret: "${HOOK_SECRET}"')

    (hook,) = parse_config(text, environ={"HOOK_SECRET": SECRET}).routing.destinations

    assert hook.secret == SECRET
    assert hook.secrets() == [b"k" * 32]


def test_secret_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCR_TEST_HOOK_SECRET", SECRET)
    text = with_destination("name: hook", "endpoint: https://x.example/h", "secret: ${SCR_TEST_HOOK_SECRET}")

    (hook,) = parse_config(text).routing.destinations

    assert hook.secrets() == [b"k" * 32]


def test_missing_environment_variable_is_an_error_naming_it() -> None:
    text = with_destination("name: hook", "endpoint: https://x.example/h", 'secret: "${HOOK_SECRET}"')

    error = one_error(text)

    assert error.path == f"{DEST}[0].secret"
    assert error.message.startswith("t.yaml line 6:")
    assert "HOOK_SECRET" in error.message and "not set" in error.message


def test_bad_secret_is_an_error_that_does_not_echo_the_secret() -> None:
    text = with_destination("name: hook", "endpoint: https://x.example/h", 'secret: "${HOOK_SECRET}"')

    error = one_error(text, {"HOOK_SECRET": "whsec_not*base64"})

    assert error.path == f"{DEST}[0].secret"
    assert "line 6" in error.message and "whsec_" in error.message
    assert "not*base64" not in error.message


@pytest.mark.parametrize(
    "secret", ["k3y", "whsec_", "whsec_abc", "whsec_ab=c", "whsec_abcd===", f"{SECRET} "]
)
def test_secret_must_be_whsec_and_padded_base64(secret: str) -> None:
    text = with_destination(
        "name: hook", "endpoint: https://x.example/h", f'secret: ["{SECRET}", "{secret}"]'
    )

    error = one_error(text)

    assert error.path == f"{DEST}[0].secret[1]"
    assert "line 6" in error.message


# ----- located errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "key", "expected"),
    [
        ("retry_attempts: -1", "retry_attempts", "retry_attempts must be an integer from 0 to 100, got -1"),
        ("retry_attempts: 101", "retry_attempts", "got 101"),
        ("retry_attempts: three", "retry_attempts", 'got "three"'),
        ("retry_attempts: 2.5", "retry_attempts", "got 2.5"),
        ("retry_attempts: true", "retry_attempts", "got true"),
        ("sampling_rate: 1.5", "sampling_rate", "sampling_rate must be a number from 0 to 1, got 1.5"),
        ("sampling_rate: '0.5'", "sampling_rate", 'got "0.5"'),
        ("type: ftp", "type", 'type must be one of http, file, log, got "ftp"'),
        ("transform: billing_v9", "transform", "one of billing_v1, analytics_v2, audit_v1, raw_v1"),
        ("transform: {python: os}", "transform.python", '"package.module:function", got "os"'),
        ("transform: {python: 'a:b', extra: 1}", "transform.extra", "unknown key `extra`"),
        ("endpoint: ftp://files.internal/x", "endpoint", "an http:// or https:// URL"),
        ("endpoint: https://", "endpoint", "an http:// or https:// URL"),
        ("retention_days: 0", "retention_days", "retention_days must be an integer >= 1 or null, got 0"),
        ("batch_size: 0", "batch_size", "batch_size must be an integer from 1 to 10_000"),
        ("batch_wait_ms: 60001", "batch_wait_ms", "from 0 to 60_000"),
        ("timeout_ms: 0", "timeout_ms", "from 1 to 300_000"),
        ("backoff_base_ms: -5", "backoff_base_ms", "an integer >= 0"),
        ("ordering: fifo", "ordering", "one of none, session"),
        ("concurrency: 2000", "concurrency", "from 1 to 1024"),
        ("headers: [a, b]", "headers", "headers must be a mapping, got a list"),
        ('headers: {"X-A": "one\\ntwo"}', "headers.X-A", "without line breaks"),
        ("headers: {'bad header': x}", "headers.bad header", "an HTTP header name"),
        ("headers: {Webhook-Signature: 'v1,forged'}", "headers.Webhook-Signature", "set by scr itself"),
        ("filter: {tier: [gold]}", "filter.tier[0]", 'one of free, pro, enterprise, got "gold"'),
        ("filter: {session_type: chat}", "filter.session_type", "a list of values from chat, api"),
        ("filter: {outcome_status: [success, lost]}", "filter.outcome_status[1]", 'got "lost"'),
        ("filter: {model: [gpt-4o, 4]}", "filter.model[1]", 'write it in quotes ("4")'),
        ("filter: {colour: [red]}", "filter.colour", "unknown key `colour`"),
        ("filter: yes", "filter", "filter must be a mapping or null, got yes"),
    ],
)
def test_bad_destination_value_names_its_path_and_line(line: str, key: str, expected: str) -> None:
    second = "transform: raw_v1" if key == "endpoint" else "endpoint: https://b.example/e"
    error = one_error(with_destination("name: billing", second, line))

    assert error.path == f"{DEST}[0].{key}"
    assert error.message.startswith("t.yaml line 6: ")
    assert expected in error.message


@pytest.mark.parametrize(
    ("section", "line", "path", "expected"),
    [
        ("capture", "buffer_size: 0", "capture.buffer_size", "an integer from 1 to 1_000_000, got 0"),
        ("capture", "flush_interval_ms: 60001", "capture.flush_interval_ms", "from 0 to 60_000"),
        ("capture", "sources: openai_api", "capture.sources", "a list of non-empty strings"),
        ("capture", "sources: [a, '']", "capture.sources[1]", "a non-empty string"),
        ("validation", "schema_version: v1.1", "validation.schema_version", "one of v1.2"),
        ("validation", "require_authentication: maybe", "validation.require_authentication", "true or false"),
        ("validation", "deduplication_window_sec: -1", "validation.deduplication_window_sec", ">= 0"),
        ("server", "max_body_bytes: 10", "server.max_body_bytes", "from 1024 to 1_073_741_824"),
        ("server", "max_batch_events: 0", "server.max_batch_events", "from 1 to 1_000_000"),
        ("server", "header_timeout_s: 0", "server.header_timeout_s", "a number > 0 and <= 3600"),
        ("server", "body_timeout_s: 3601", "server.body_timeout_s", "a number > 0 and <= 3600"),
        ("server", "max_connections: 0", "server.max_connections", "from 1 to 1_000_000"),
        ("ledger", "checkpoint_every_entries: 0", "ledger.checkpoint_every_entries", ">= 1"),
        ("ledger", "checkpoint_every_s: 0", "ledger.checkpoint_every_s", "a number > 0 and <= 86_400"),
        ("ledger", "checkpoint_every_s: .inf", "ledger.checkpoint_every_s", "got .inf"),
        ("ledger", "key_name: 'a+b'", "ledger.key_name", "without spaces or '+'"),
        ("capture", "buffer: 5", "capture.buffer", "unknown key `buffer`; did you mean `buffer_size`?"),
        ("store_pool", "max_connections: 0", "store_pool.max_connections", "from 1 to 1000"),
        ("store_pool", "wait_ms: 0", "store_pool.wait_ms", "from 1 to 300_000"),
        ("store_pool", "connect_timeout_s: 1", "store_pool.connect_timeout_s", "from 2 to 300, got 1"),
    ],
)
def test_bad_section_value_names_its_path_and_line(section: str, line: str, path: str, expected: str) -> None:
    error = one_error(f"session_completion_runtime:\n  {section}:\n    {line}\n")

    assert error.path == f"session_completion_runtime.{path}"
    assert error.message.startswith("t.yaml line 3: ")
    assert expected in error.message


def test_unknown_key_suggests_the_key_meant() -> None:
    error = one_error(with_destination("name: billing", "endpoint: https://b.example/e", "retries: 3"))

    assert error == Detail(
        f"{DEST}[0].retries", "t.yaml line 6: unknown key `retries`; did you mean `retry_attempts`?"
    )


def test_unknown_key_without_a_near_match_lists_the_known_ones() -> None:
    error = one_error("session_completion_runtime:\n  server:\n    zzz: 1\n")

    assert error.path == "session_completion_runtime.server.zzz"
    assert "unknown key `zzz`; known keys: max_body_bytes, max_batch_events" in error.message


def test_destination_name_must_be_a_lowercase_slug() -> None:
    for bad in ("Billing", "-billing", "billing system", "b" * 65):
        error = one_error(with_destination(f"name: '{bad}'", "type: log"))
        assert error.path == f"{DEST}[0].name"
        assert "line 4" in error.message and "a-z, 0-9, _ and -" in error.message


def test_number_where_a_string_is_meant_suggests_quotes() -> None:
    error = one_error(with_destination("name: 2024", "type: log"))

    assert "got 2024; write it in quotes" in error.message


def test_http_destination_without_endpoint_is_an_error_at_the_destination() -> None:
    error = one_error(with_destination("name: billing", "transform: billing_v1"))

    assert error.path == f"{DEST}[0].endpoint"
    assert error.message.startswith("t.yaml line 4: ") and "needs `endpoint`" in error.message


def test_file_destination_without_path_is_an_error() -> None:
    error = one_error(with_destination("name: billing", "type: file"))

    assert error.path == f"{DEST}[0].path" and "needs `path`" in error.message


def test_keys_of_another_destination_type_are_errors_at_their_line() -> None:
    details = errors_of(with_destination("name: a", "type: log", "path: x.jsonl", "endpoint: http://x"))

    assert [(d.path, d.message[:14]) for d in details] == [
        (f"{DEST}[0].path", "t.yaml line 6:"),
        (f"{DEST}[0].endpoint", "t.yaml line 7:"),
    ]


def test_backoff_max_below_base_is_an_error() -> None:
    error = one_error(
        with_destination("name: a", "endpoint: http://x", "backoff_base_ms: 5000", "backoff_max_ms: 100")
    )

    assert error.path == f"{DEST}[0].backoff_max_ms"
    assert "line 7" in error.message and "must be >= backoff_base_ms (5000)" in error.message


def test_store_pool_keeping_more_than_its_most_is_an_error() -> None:
    error = one_error(
        "session_completion_runtime:\n  store_pool:\n    min_connections: 9\n    max_connections: 4\n"
    )

    assert error.path == "session_completion_runtime.store_pool.min_connections"
    assert "line 3" in error.message and "min_connections (9) must be <= max_connections (4)" in error.message


def test_duplicate_destination_name_is_an_error_at_the_second() -> None:
    text = (
        "session_completion_runtime:\n  routing:\n    destinations:\n"
        "      - {name: billing, type: log}\n"
        "      - {name: analytics, type: log}\n"
        "      - {name: billing, type: log}\n"
    )

    error = one_error(text)

    assert error.path == f"{DEST}[2].name"
    assert error.message == "t.yaml line 6: destination name `billing` is already used by destinations[0]"


def test_duplicate_yaml_key_is_an_error() -> None:
    error = one_error(with_destination("name: a", "type: log", "type: log"))

    assert error.path == f"{DEST}[0].type"
    assert error.message == "t.yaml line 6: duplicate key `type` (first at line 5)"


def test_every_error_in_a_file_is_reported_in_file_order() -> None:
    text = (
        "session_completion_runtime:\n"  # 1
        "  capture:\n"  # 2
        "    buffer_size: 0\n"  # 3
        "    flush: 10\n"  # 4
        "  validation: {schema_version: v9}\n"  # 5
        "  routing:\n"  # 6
        "    destinations:\n"  # 7
        "      - name: billing\n"  # 8
        "        retry_attempts: -1\n"  # 9
        "        endpoint: https://b.example/e\n"  # 10
        "        retries: 3\n"  # 11
        "      - name: billing\n"  # 12
        "        type: file\n"  # 13
        "        sampling_rate: 2\n"  # 14
        "  extra: true\n"  # 15
    )

    details = errors_of(text)

    assert [(d.path, d.message.split(":")[0]) for d in details] == [
        ("session_completion_runtime.capture.buffer_size", "t.yaml line 3"),
        ("session_completion_runtime.capture.flush", "t.yaml line 4"),
        ("session_completion_runtime.validation.schema_version", "t.yaml line 5"),
        (f"{DEST}[0].retry_attempts", "t.yaml line 9"),
        (f"{DEST}[0].retries", "t.yaml line 11"),
        (f"{DEST}[1].path", "t.yaml line 12"),
        (f"{DEST}[1].name", "t.yaml line 12"),
        (f"{DEST}[1].sampling_rate", "t.yaml line 14"),
        ("session_completion_runtime.extra", "t.yaml line 15"),
    ]


def test_load_config_names_the_file_and_counts_the_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        with_destination("name: a", "endpoint: http://x", "retry_attempts: -1", "sampling_rate: -1")
    )

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.message == f"{path}: 2 errors"
    assert [d.message.split(": ")[0] for d in caught.value.details] == [f"{path} line 6", f"{path} line 7"]


# ----- the file as a whole ---------------------------------------------------------------------


def test_missing_top_level_key_is_an_error() -> None:
    details = errors_of("capture:\n  buffer_size: 10\n")

    assert [d.path for d in details] == ["capture", "session_completion_runtime"]
    assert (
        "unknown top-level key `capture`; it belongs under `session_completion_runtime`" in details[0].message
    )
    assert (
        details[1].message == "t.yaml line 1: missing required key `session_completion_runtime` in the file"
    )


def test_anything_else_at_top_level_is_an_error() -> None:
    error = one_error("session_completion_runtime: {}\nversion: 2\n")

    assert error.path == "version"
    assert error.message.startswith("t.yaml line 2: unknown key `version`")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "t.yaml line 1: the file is empty"),
        ("# only a comment\n", "t.yaml line 1: the file is empty"),
        ("just text\n", 'the file must be a mapping, got "just text"'),
        ("session_completion_runtime: 5\n", "session_completion_runtime must be a mapping, got 5"),
    ],
)
def test_a_file_that_is_not_a_config_mapping_is_an_error(text: str, expected: str) -> None:
    assert expected in one_error(text).message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("session_completion_runtime:\n  capture: {buffer_size: 1\n", 3),
        ("session_completion_runtime:\n  capture:\n    - a\n    b: 1\n", 4),
        ("session_completion_runtime:\n\tcapture: {}\n", 2),
        ("a: 1\n---\nb: 2\n", 2),
        ("session_completion_runtime:\n  capture: \x00\n", 2),
    ],
)
def test_malformed_yaml_is_a_config_error_with_its_line(text: str, line: int) -> None:
    error = one_error(text)

    assert error.path == "<yaml>"
    assert error.message.startswith(f"t.yaml line {line}: invalid YAML")


def test_python_tags_are_refused_by_the_safe_loader() -> None:
    error = one_error("session_completion_runtime:\n  capture:\n    sources: [!!python/name:os.system x]\n")

    assert error.path == "session_completion_runtime.capture.sources[0]"
    assert "line 3" in error.message and "cannot read this value" in error.message


def test_non_standard_mapping_tags_are_refused() -> None:
    error = one_error("session_completion_runtime: !!python/object:os.Popen {}\n")

    assert "unsupported YAML tag" in error.message


def test_recursive_merge_is_an_error_not_a_hang() -> None:
    error = one_error("session_completion_runtime:\n  capture: &c {<<: *c}\n")

    assert error.message.startswith("t.yaml line 2: more than")


def test_merge_key_bomb_is_refused() -> None:
    # Each level merges the previous one ten times: 10**7 pairs if expanded.
    levels = ["      - &m0 {name: a, type: log}"]
    levels += [f"      - &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 10)}]}}" for i in range(1, 8)]
    text = "session_completion_runtime:\n  routing:\n    destinations:\n" + "\n".join(levels) + "\n"

    error = one_error(text)

    assert f"more than {MAX_CONFIG_VALUES} values" in error.message


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.yaml")

    assert "missing.yaml" in caught.value.message
    assert caught.value.details and caught.value.details[0].path == "<file>"


# ----- built in code -----------------------------------------------------------------------------


def test_structs_built_in_code_check_the_same_rules() -> None:
    with pytest.raises(ConfigError) as caught:
        DestinationConfig(name="billing")
    assert caught.value.details == [
        Detail("endpoint", "an http destination needs `endpoint` (or set `type: file`)")
    ]
    log = DestinationConfig(name="a", type="log")
    with pytest.raises(ConfigError):
        RoutingConfig(destinations=[log, log])
    assert Config(routing=RoutingConfig(destinations=[log])).routing.destinations == [log]


@given(st.integers(min_value=-1000, max_value=1000))
def test_retry_attempts_is_accepted_exactly_within_its_bounds(attempts: int) -> None:
    text = with_destination("name: a", "type: log", f"retry_attempts: {attempts}")

    if 0 <= attempts <= 100:
        assert parse_config(text).routing.destinations[0].retry_attempts == attempts
    else:
        assert one_error(text).path == f"{DEST}[0].retry_attempts"


# ----- the reference -----------------------------------------------------------------------------


def _leaf_paths(cls: type[msgspec.Struct], prefix: str) -> list[str]:
    paths = []
    for info in msgspec.structs.fields(cls):
        paths.append(f"{prefix}.{info.name}")
    return paths


def test_config_reference_documents_every_key_with_its_default_and_meaning() -> None:
    table = config_reference()
    rows = {line.split(" | ")[0].strip("| `"): line.split(" | ") for line in table.splitlines()[2:]}

    expected = (
        _leaf_paths(Config, "session_completion_runtime")
        + _leaf_paths(DestinationConfig, f"{DEST}[]")
        + [
            f"session_completion_runtime.{s}.{k}"
            for s, k in [
                ("capture", "buffer_size"),
                ("validation", "deduplication_window_sec"),
                ("server", "max_body_bytes"),
                ("ledger", "checkpoint_every_s"),
            ]
        ]
        + [f"{DEST}[].filter.tier", f"{DEST}[].transform.python"]
    )
    for path in expected:
        assert path in rows, path
        assert rows[path][3].strip(" |"), f"{path} has no meaning"
    assert rows[f"{DEST}[].retry_attempts"][1:3] == ["an integer from 0 to 100", "`3`"]
    assert rows[f"{DEST}[].name"][2] == "required"
    assert rows["session_completion_runtime.server.max_body_bytes"][2] == "`16777216`"

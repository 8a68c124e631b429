"""A LangChain callback handler: one event per chain or agent run, with its LLM calls' usage.

    chain.invoke(inputs, config={"callbacks": [ScrCallbackHandler(scr.Client(organization_id="org_acme"))]})

The handler watches a run tree. When a root run (a chain or agent, or a lone chat model)
ends, it captures one event (session type ``autonomous`` by default) with the token usage of
every LLM call inside it, read from each answer's ``usage_metadata`` (input, output, cache
reads ``input_token_details.cache_read``, cache writes ``cache_creation``, reasoning
``output_token_details.reasoning``), or else the provider's ``llm_output.token_usage``. The
event's model is the one that used the most tokens; when several models ran, ``cost_usd`` is
the exact sum of each model's own cost, and the tag ``scr.models`` lists them. A run that
raised is captured with ``status: error`` and the exception's class as ``error_code``.

The session id is the handler's ``session_id`` (each run then is its own event in that
session), else the root run's id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from scr.integrations.completions import content_fields
from scr.schema import OutcomeStatus, SessionType, Usage
from scr.sdk.client import BaseClient, CaptureFields
from scr.sdk.event import derive_event_id

log = logging.getLogger("scr.integrations.langchain")

MODELS_TAG = "scr.models"
UNKNOWN_MODEL = "unknown"


@dataclass
class _ModelUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class _Run:
    """A root run being captured: its start and the usage of the LLM calls inside it."""

    started_at: float
    by_model: dict[str, _ModelUsage] = field(default_factory=dict)
    llm_models: dict[UUID, str] = field(default_factory=dict)  # model asked for, per LLM call
    llm_error: str | None = None
    texts: CaptureFields = field(default_factory=lambda: CaptureFields())  # with record_text


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _texts_of(messages: Any) -> CaptureFields:
    """The last human message and the tool results of a chat model's input."""
    user, tools = None, []
    for message in messages if isinstance(messages, list) else []:
        # str(): langchain-core's ``text`` is a str subclass msgspec does not encode
        if isinstance(message, HumanMessage) and isinstance(message.text, str):
            user = str(message.text)
        elif isinstance(message, ToolMessage) and isinstance(message.text, str):
            tools.append(str(message.text))
    return content_fields(user, tools)


class ScrCallbackHandler(BaseCallbackHandler):
    """Captures each root chain or agent run with the accumulated usage of its LLM calls."""

    def __init__(
        self,
        scr_client: BaseClient,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        organization_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        provider: str | None = None,
        session_type: SessionType = "autonomous",
        record_text: bool = False,
    ) -> None:
        self.scr_client = scr_client
        self.session_id, self.user_id, self.organization_id = session_id, user_id, organization_id
        self.tags, self.provider, self.session_type = dict(tags or {}), provider, session_type
        self.record_text = record_text  # the run's messages as the event's content (off by default)
        self._lock = threading.Lock()
        self._runs: dict[UUID, _Run] = {}
        self._root_of: dict[UUID, UUID] = {}

    # ----- the run tree -------------------------------------------------------------------------

    def _enter(self, run_id: UUID, parent_run_id: UUID | None) -> UUID:
        with self._lock:
            if parent_run_id is None:
                self._runs[run_id] = _Run(time.time())
                root = run_id
            else:
                root = self._root_of.get(parent_run_id, parent_run_id)
            self._root_of[run_id] = root
            return root

    def _run_of(self, run_id: UUID) -> _Run | None:
        with self._lock:
            return self._runs.get(self._root_of.get(run_id, run_id))

    def on_chain_start(self, serialized: dict[str, Any], inputs: dict[str, Any], *, run_id: UUID,
                       parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._enter(run_id, parent_run_id)

    def on_tool_start(self, serialized: dict[str, Any], input_str: str, *, run_id: UUID,
                      parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._enter(run_id, parent_run_id)

    def on_retriever_start(self, serialized: dict[str, Any], query: str, *, run_id: UUID,
                           parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._enter(run_id, parent_run_id)

    def on_chat_model_start(self, serialized: dict[str, Any], messages: Any, *, run_id: UUID,
                            parent_run_id: UUID | None = None,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._llm_start(run_id, parent_run_id, metadata, kwargs.get("invocation_params"))
        run = self._run_of(run_id)
        if self.record_text and run is not None and messages:
            run.texts = _texts_of(messages[0])  # each call holds the conversation so far

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID,
                     parent_run_id: UUID | None = None, metadata: dict[str, Any] | None = None,
                     **kwargs: Any) -> None:
        self._llm_start(run_id, parent_run_id, metadata, kwargs.get("invocation_params"))

    def _llm_start(self, run_id: UUID, parent_run_id: UUID | None, metadata: Mapping[str, Any] | None,
                   invocation: Mapping[str, Any] | None) -> None:
        self._enter(run_id, parent_run_id)
        asked = (metadata or {}).get("ls_model_name") or (invocation or {}).get("model") or (
            invocation or {}).get("model_name")
        run = self._run_of(run_id)
        if run is not None and isinstance(asked, str):
            run.llm_models[run_id] = asked

    # ----- ends ---------------------------------------------------------------------------------

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None,
                   **kwargs: Any) -> None:
        try:
            run = self._run_of(run_id)
            if run is not None:
                self._add_usage(run, run_id, response)
            if parent_run_id is None:  # a chat model called on its own is its own run
                self._finish(run_id, "success")
        except Exception:  # scr must never break the host's chain
            log.exception("scr: could not read an LLM answer's usage")

    def on_llm_error(self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None,
                     **kwargs: Any) -> None:
        run = self._run_of(run_id)
        if run is not None:
            run.llm_error = type(error).__name__
        if parent_run_id is None:
            self._finish(run_id, "error", type(error).__name__)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                     **kwargs: Any) -> None:
        if parent_run_id is None:
            self._finish(run_id, "success")

    def on_chain_error(self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None,
                       **kwargs: Any) -> None:
        if parent_run_id is None:
            self._finish(run_id, "error", type(error).__name__)

    def _add_usage(self, run: _Run, run_id: UUID, response: LLMResult) -> None:
        asked = run.llm_models.get(run_id)
        seen = False
        for generations in response.generations:
            for generation in generations:
                if not isinstance(generation, ChatGeneration):
                    continue
                message = generation.message
                usage = getattr(message, "usage_metadata", None)
                if not usage:
                    continue
                seen = True
                metadata = message.response_metadata
                answered = metadata.get("model_name") or metadata.get("model")
                tally = run.by_model.setdefault(str(answered or asked or UNKNOWN_MODEL), _ModelUsage())
                tally.input_tokens += _count(usage.get("input_tokens"))
                tally.output_tokens += _count(usage.get("output_tokens"))
                inputs = usage.get("input_token_details") or {}
                outputs = usage.get("output_token_details") or {}
                tally.cache_read_tokens += _count(inputs.get("cache_read"))
                tally.cache_write_tokens += _count(inputs.get("cache_creation"))
                tally.reasoning_tokens += _count(outputs.get("reasoning"))
        token_usage = (response.llm_output or {}).get("token_usage")
        if not seen and isinstance(token_usage, Mapping):
            model = (response.llm_output or {}).get("model_name") or asked or UNKNOWN_MODEL
            tally = run.by_model.setdefault(str(model), _ModelUsage())
            tally.input_tokens += _count(token_usage.get("prompt_tokens"))
            tally.output_tokens += _count(token_usage.get("completion_tokens"))
        elif not seen and asked is not None:
            run.by_model.setdefault(asked, _ModelUsage())  # the model ran, its usage is unknown

    def _finish(self, root_id: UUID, status: OutcomeStatus, error_code: str | None = None) -> None:
        with self._lock:
            run = self._runs.pop(root_id, None)
            for run_id in [r for r, root in self._root_of.items() if root == root_id]:
                del self._root_of[run_id]
        if run is None:
            return
        try:
            self._capture(root_id, run, status, error_code)
        except Exception:
            log.exception("scr: could not capture a LangChain run")

    def _capture(self, root_id: UUID, run: _Run, status: OutcomeStatus, error_code: str | None) -> None:
        totals = _ModelUsage()
        for tally in run.by_model.values():
            totals.input_tokens += tally.input_tokens
            totals.output_tokens += tally.output_tokens
            totals.cache_read_tokens += tally.cache_read_tokens
            totals.cache_write_tokens += tally.cache_write_tokens
            totals.reasoning_tokens += tally.reasoning_tokens
        ranked = sorted(run.by_model.items(), key=lambda item: (-item[1].total, item[0]))
        model = ranked[0][0] if ranked else UNKNOWN_MODEL
        tags = dict(self.tags)
        fields: CaptureFields = {
            "input_tokens": totals.input_tokens, "output_tokens": totals.output_tokens,
            "cache_read_tokens": totals.cache_read_tokens or None,
            "cache_write_tokens": totals.cache_write_tokens or None,
            "reasoning_tokens": totals.reasoning_tokens or None,
            "session_type": self.session_type, "status": status,
            "error_code": error_code or (run.llm_error if status == "error" else None),
            "start_time": run.started_at, "end_time": time.time(),
        }
        if len(ranked) > 1:
            tags[MODELS_TAG] = ",".join(name for name, _ in ranked)
            cost = self._summed_cost(ranked)
            if cost is not None:
                fields["cost_usd"] = cost
        if tags:
            fields["tags"] = tags
        fields.update(run.texts)
        for name, value in (("user_id", self.user_id), ("organization_id", self.organization_id),
                            ("provider", self.provider)):
            if value is not None:
                fields[name] = value  # type: ignore[literal-required]  # names are CaptureFields keys
        session_id = self.session_id or str(root_id)
        if self.session_id is not None:
            fields["event_id"] = derive_event_id(f"{self.session_id}/{root_id}")
        self.scr_client.capture(session_id, model, **fields)

    def _summed_cost(self, ranked: list[tuple[str, _ModelUsage]]) -> Decimal | None:
        """The exact sum of each model's cost; ``None`` if any model has no price."""
        total = Decimal(0)
        for name, tally in ranked:
            cost = self.scr_client.prices.cost(Usage(
                tally.input_tokens, tally.output_tokens, tally.total, name, Decimal(0),
                cache_read_tokens=tally.cache_read_tokens,
            ))
            if cost is None:
                return None
            total += cost
        return total

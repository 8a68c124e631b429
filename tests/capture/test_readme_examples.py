"""The README's "Capturing events" examples run as written, against real servers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from capture.conftest import LiveServer
from capture.openai_server import OpenAIServer
from scr.sdk import derive_event_id

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SECTION = README.split("## Capturing events", 1)[1].split("\n## ", 1)[0]


def example(title: str) -> str:
    block = re.search(rf"### {re.escape(title)}\n.*?```python\n(.*?)```", SECTION, re.S)
    assert block, f"the {title} section lost its example"
    return block.group(1)


@pytest.fixture
def scr_env(scr_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> LiveServer:
    monkeypatch.setenv("SCR_URL", scr_server.url)
    monkeypatch.setenv("SCR_KEY", scr_server.ingest_key)
    return scr_server


def run(code: str, namespace: dict[str, Any]) -> dict[str, Any]:
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def test_the_sdk_example_prints_what_the_readme_says(
    scr_env: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    printed = re.search(r"### Python SDK\n.*?```\nprints\n```\n(.*?)```", SECTION, re.S)
    assert printed, "the Python SDK section lost what its example prints"
    run(example("Python SDK"), {})["client"].close()
    assert capsys.readouterr().out == printed.group(1)
    assert scr_env.event(derive_event_id("sess_42")) is not None


def test_the_openai_example_captures_its_call(
    scr_env: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OpenAIServer() as llm:
        monkeypatch.setenv("OPENAI_BASE_URL", llm.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        namespace = run(example("OpenAI"), {})
        namespace["capture"].close()
    event = scr_env.event(derive_event_id(namespace["answer"].id))
    assert event is not None and event["user"]["user_id"] == "user_7"


def test_the_langchain_example_captures_its_chain(scr_env: LiveServer) -> None:
    model = FakeMessagesListChatModel(responses=[AIMessage(
        content="ok", usage_metadata={"input_tokens": 5, "output_tokens": 2, "total_tokens": 7})])
    chain = ChatPromptTemplate.from_messages([("user", "{text}")]) | model | StrOutputParser()
    namespace = run(example("LangChain"), {"chain": chain})
    namespace["handler"].scr_client.close()
    events = scr_env.session("chat_42")
    assert [e["event"]["usage"]["total_tokens"] for e in events] == [7]


def test_the_opentelemetry_example_completes_its_conversation(scr_env: LiveServer) -> None:
    from scr.capture.genai import session_event_id

    run(example("OpenTelemetry"), {})
    event = scr_env.event(session_event_id("org_acme", "c:conv_7", 0))
    assert event is not None
    assert (event["usage"]["input_tokens"], event["usage"]["output_tokens"]) == (120, 30)

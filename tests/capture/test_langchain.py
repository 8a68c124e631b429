"""``ScrCallbackHandler`` in real langchain-core chains (prompt | model | parser) with
langchain-core's fake chat models, captured into a real ``scr serve``."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from langchain_core.language_models.fake_chat_models import (
    FakeMessagesListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

import scr
from capture.conftest import LiveServer
from scr.integrations.langchain import ScrCallbackHandler
from scr.route.prices import default_prices
from scr.schema import Usage
from scr.sdk import derive_event_id

PROMPT = ChatPromptTemplate.from_messages([("user", "Summarize: {text}")])


def answer(text: str, model: str, inputs: int, outputs: int, cache_read: int = 0,
           reasoning: int = 0) -> AIMessage:
    return AIMessage(
        content=text, response_metadata={"model_name": model},
        usage_metadata={"input_tokens": inputs, "output_tokens": outputs,
                        "total_tokens": inputs + outputs,
                        "input_token_details": {"cache_read": cache_read},
                        "output_token_details": {"reasoning": reasoning}},
    )


def test_a_chain_is_one_event_with_the_usage_of_its_llm_calls(
    scr_server: LiveServer, capture: scr.Client
) -> None:
    model = GenericFakeChatModel(messages=iter([
        answer("short summary", "gpt-4o-mini", 1000, 100, cache_read=600),
        answer("shorter", "gpt-4o-mini", 300, 20, reasoning=5),
    ]))
    # Two LLM calls inside one chain: the second summarizes the first's answer.
    chain = (PROMPT | model | StrOutputParser() | RunnableLambda(lambda text: {"text": text})
             | PROMPT | model | StrOutputParser())
    handler = ScrCallbackHandler(capture, session_id="lc_sess_1", user_id="user_lc",
                                 tags={"chain": "summarize"})
    assert chain.invoke({"text": "a long document"}, config={"callbacks": [handler]}) == "shorter"
    event = scr_server.only_event(capture, "lc_sess_1")
    usage = event["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (1300, 120, 1420)
    assert (usage["cache_read_tokens"], usage["reasoning_tokens"]) == (600, 5)
    assert usage["model"] == "gpt-4o-mini"
    assert Decimal(usage["estimated_cost_usd"]) == default_prices().cost(
        Usage(1300, 120, 1420, "gpt-4o-mini", Decimal(0), cache_read_tokens=600))
    assert event["session"]["session_type"] == "autonomous"
    assert event["outcome"] == {"status": "success"}
    assert event["user"]["user_id"] == "user_lc"
    assert event["metadata"]["custom_tags"] == {"chain": "summarize"}


def test_two_models_in_one_run_cost_the_exact_sum_of_each(
    scr_server: LiveServer, capture: scr.Client
) -> None:
    planner = FakeMessagesListChatModel(responses=[answer("plan", "gpt-4o", 2000, 200)])
    writer = FakeMessagesListChatModel(responses=[answer("text", "gpt-4o-mini", 500, 800)])
    chain = PROMPT | planner | StrOutputParser() | (lambda plan: {"text": plan}) | PROMPT | writer
    handler = ScrCallbackHandler(capture, session_id="lc_two_models")
    chain.invoke({"text": "x"}, config={"callbacks": [handler]})
    usage = scr_server.only_event(capture, "lc_two_models")["usage"]
    prices = default_prices()
    expected = (prices.cost(Usage(2000, 200, 2200, "gpt-4o", Decimal(0)))
                + prices.cost(Usage(500, 800, 1300, "gpt-4o-mini", Decimal(0))))  # type: ignore[operator]
    assert Decimal(usage["estimated_cost_usd"]) == expected
    assert usage["model"] == "gpt-4o" and usage["total_tokens"] == 3500


def test_a_failing_chain_is_an_error_with_the_usage_so_far(
    scr_server: LiveServer, capture: scr.Client
) -> None:
    def explode(_: str) -> str:
        raise ValueError("the parser gave up")

    model = FakeMessagesListChatModel(responses=[answer("half", "gpt-4o", 40, 4)])
    chain = PROMPT | model | StrOutputParser() | RunnableLambda(explode)
    handler = ScrCallbackHandler(capture, session_id="lc_failed")
    with pytest.raises(ValueError, match="gave up"):
        chain.invoke({"text": "x"}, config={"callbacks": [handler]})
    event = scr_server.only_event(capture, "lc_failed")
    assert event["outcome"] == {"status": "error", "error_code": "ValueError"}
    assert event["usage"]["input_tokens"] == 40


def test_without_a_session_id_each_run_is_its_own_session(
    scr_server: LiveServer, capture: scr.Client
) -> None:
    model = FakeMessagesListChatModel(responses=[answer("a", "gpt-4o", 1, 1)])
    handler = ScrCallbackHandler(capture)
    chain = PROMPT | model | StrOutputParser()
    run_id = uuid.uuid4()
    chain.invoke({"text": "x"}, config={"callbacks": [handler], "run_id": run_id})
    assert capture.flush(timeout_s=10)
    event = scr_server.event(derive_event_id(str(run_id)))
    assert event is not None and event["session"]["session_id"] == str(run_id)


def test_record_text_keeps_the_last_human_message_and_tool_results(
    scr_server: LiveServer, capture: scr.Client
) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage

    conversation = [HumanMessage("find my order"), ToolMessage("order 7 shipped", tool_call_id="t1"),
                    HumanMessage("when does it arrive?")]
    for session, record in (("lc_text_on", True), ("lc_text_off", False)):
        model = GenericFakeChatModel(messages=iter([answer("tomorrow", "gpt-4o-mini", 50, 5)]))
        handler = ScrCallbackHandler(capture, session_id=session, record_text=record)
        model.invoke(conversation, config={"callbacks": [handler]})
    assert scr_server.only_event(capture, "lc_text_on")["content"] == {
        "user_request": "when does it arrive?", "tool_outputs": ["order 7 shipped"]}
    assert "content" not in scr_server.only_event(capture, "lc_text_off")

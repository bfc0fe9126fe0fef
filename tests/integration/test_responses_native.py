"""/v1/responses on routes whose upstream speaks the Responses API itself (`responses: native`,
the fake OpenAI's own /v1/responses): the body passed through with only `model` rewritten,
the answer and its events relabelled with the public model, built-in tools sent where they
can run, and a natively made response continued on its upstream, or rebuilt elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fakes.openai_upstream import DEFAULT_REPLY, FakeOpenAI, drop_after
from fakes.proxy_harness import UPSTREAM_KEY, ProxyLauncher, RunningProxy
from fakes.responses_api import RESPONSES_PATH

WEB_SEARCH = {"type": "web_search"}


def native_policy(base_url: str) -> dict[str, Any]:
    upstream = {"type": "openai", "base_url": base_url, "api_key": UPSTREAM_KEY}
    native = {**upstream, "responses": "native"}
    return {
        "upstreams": {"native": native, "native-2": dict(native), "chat": upstream},
        "models": {
            "gpt-native": {"routes": [{"upstream": "native", "model": "upstream-native"}]},
            "both": {
                "strategy": "priority",
                "routes": [
                    {"upstream": "chat", "model": "upstream-chat"},
                    {"upstream": "native", "model": "upstream-native"},
                ],
            },
            "chat-only": {"routes": [{"upstream": "chat", "model": "upstream-chat"}]},
            "elsewhere": {"routes": [{"upstream": "native-2", "model": "upstream-native-2"}]},
        },
        "retry": {"attempts": 1},
        "cache": {"backend": "none"},
        "responses": {"storage": "memory"},
    }


@pytest.fixture(scope="module")
def proxy(proxy_launcher: ProxyLauncher, fake_openai_server: FakeOpenAI) -> RunningProxy:
    return proxy_launcher.start(native_policy(fake_openai_server.base_url))


@pytest.fixture
def client(proxy: RunningProxy) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0) as c:
        yield c


def native_requests(fake: FakeOpenAI) -> list[Any]:
    return [r for r in fake.requests if r.path == RESPONSES_PATH]


def test_the_body_passes_through_with_only_the_model_rewritten(
    proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    body = {
        "model": "gpt-native",
        "input": [{"role": "user", "content": "Hi"}],
        "instructions": "Brief.",
        "include": ["reasoning.encrypted_content"],
        "some_new_field": {"kept": True},
        "tools": [WEB_SEARCH],
    }
    answer = httpx.post(f"{proxy.base_url}/responses", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-llm-proxy-route"] == "native/upstream-native"
    sent = native_requests(fake_openai)[-1].json
    assert sent == {**body, "model": "upstream-native"}
    response = answer.json()
    assert response["model"] == "gpt-native"
    assert response["id"].startswith("resp_fake")  # the upstream's own id
    assert response["output"][0]["content"][0]["text"] == DEFAULT_REPLY
    assert fake_openai.chat_requests == []


def test_a_native_stream_is_relabelled(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    with client.responses.stream(model="gpt-native", input="echo: a b c") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert final.output_text == "a b c" and final.model == "gpt-native"
    assert events[0].response.model == "gpt-native"
    request = native_requests(fake_openai)[-1]
    # the fake notes each event after writing it: read them once its answer is done
    assert request.wait_done(), "the fake never finished its answer"
    assert [e.type for e in events] == [e["type"] for e in request.sent_events]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.usage is not None and final.usage.output_tokens == 3


def test_a_built_in_tool_goes_to_the_route_that_can_run_it(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    response = client.responses.create(model="both", input="News?", tools=[WEB_SEARCH])  # type: ignore[list-item]
    assert response.output_text == DEFAULT_REPLY
    assert native_requests(fake_openai)[-1].json["tools"] == [WEB_SEARCH]
    assert fake_openai.chat_requests == []
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="chat-only", input="News?", tools=[WEB_SEARCH])  # type: ignore[list-item]
    assert caught.value.body["param"] == "tools[0].type"  # type: ignore[index]


def test_continued_on_the_upstream_that_made_it(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    first = client.responses.create(model="gpt-native", input="My name is Ada.")
    second = client.responses.create(model="both", input="My name?", previous_response_id=first.id)
    assert second.model == "both"
    sent = native_requests(fake_openai)[-1].json
    assert sent["previous_response_id"] == first.id  # the upstream holds the conversation
    assert sent["input"] == "My name?" and sent["model"] == "upstream-native"
    assert fake_openai.chat_requests == []  # the priority route was passed over


def test_rebuilt_for_a_chat_route(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    first = client.responses.create(model="gpt-native", input="My name is Ada.")
    client.responses.create(model="chat-only", input="My name?", previous_response_id=first.id)
    assert fake_openai.last_request.json["messages"] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": DEFAULT_REPLY},
        {"role": "user", "content": "My name?"},
    ]


def test_rebuilt_for_another_native_upstream(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    first = client.responses.create(model="gpt-native", input="My name is Ada.")
    client.responses.create(model="elsewhere", input="My name?", previous_response_id=first.id)
    sent = native_requests(fake_openai)[-1].json
    assert "previous_response_id" not in sent  # that upstream never saw it
    assert [item["role"] for item in sent["input"]] == ["user", "assistant", "user"]
    assert sent["input"][0]["content"] == [{"type": "input_text", "text": "My name is Ada."}]
    assert "id" not in sent["input"][0]
    assert sent["input"][1]["content"][0]["text"] == DEFAULT_REPLY
    assert sent["input"][2]["content"] == "My name?"


def test_a_native_response_is_stored(client: openai.OpenAI) -> None:
    made = client.responses.create(model="gpt-native", input="Keep me")
    again = client.responses.retrieve(made.id)
    assert again.model == "gpt-native" and again.output_text == made.output_text
    items = client.responses.input_items.list(made.id)
    assert items.data[0].content[0].text == "Keep me"  # type: ignore[union-attr]


def test_a_native_stream_failure_is_response_failed(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(drop_after(4))
    events = list(client.responses.create(model="gpt-native", input="Hi", stream=True))
    assert [e.type for e in events][:4] == [
        e["type"] for e in native_requests(fake_openai)[-1].sent_events
    ]
    assert events[-1].type == "response.failed" and events[-1].sequence_number == 4
    assert events[-1].response.error is not None
    assert events[-1].response.model == "gpt-native"

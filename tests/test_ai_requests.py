"""Whole-request AI keys: ``@ai_cached(request=...)`` keys a chat call on what shapes the
reply and on nothing else; the keys are pinned, and the fast map always agrees with the
full derivation."""

from __future__ import annotations

import copy
import dataclasses
import enum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from memo import InMemoryCache, ai_cached
from memo._requestkeys import (
    NEVER_KEYED,
    RequestKeyBuilder,
    canonical_request,
    is_nondeterministic,
)
from memo.exceptions import ConfigError, KeyDerivationError


async def chat(request: Any) -> dict[str, Any]:
    return {}


async def create(**request: Any) -> dict[str, Any]:
    return {}


def keys(**settings: Any) -> RequestKeyBuilder:
    return RequestKeyBuilder(chat, operation="chat", request_arg="request", **settings)


KEYS = keys()


def key(request: Any) -> str:
    return KEYS((request,), {})


BASE: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You answer in one sentence."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        },
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ],
    "tool_choice": "auto",
    "response_format": {"type": "json_object"},
    "temperature": 0.0,
    "top_p": 1.0,
    "max_tokens": 100,
    "stop": ["\n\n"],
    "seed": 7,
}


def changed(**fields: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    out.update(fields)
    return out


def edit(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


# -- pydantic and dataclass forms of the same request --------------------------------


class ImageURL(BaseModel):
    url: str


class Part(BaseModel):
    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class Message(BaseModel):
    role: str
    content: str | list[Part]
    name: str | None = None


class Request(BaseModel):
    model: str
    messages: list[Message]
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | None = None
    response_format: dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    timeout: float | None = None


@dataclasses.dataclass
class SystemMessage:
    content: str
    role: str = "system"


def as_model() -> Request:
    return Request(**copy.deepcopy(BASE))


def reordered(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(v) for v in value]
    return value


SAME: dict[str, Any] = {
    "top-level fields reordered": {k: BASE[k] for k in reversed(list(BASE))},
    "nested fields reordered": reordered(BASE),
    "a None field added": changed(frequency_penalty=None),
    "a None field inside a message": edit(("messages", 0, "name"), None),
    "temperature 0 as an int": changed(temperature=0),
    "max_tokens as a float": changed(max_tokens=100.0),
    "top_p 1 as an int": changed(top_p=1),
    "a request id": changed(request_id="req-8f1c"),
    "a timeout": changed(timeout=30),
    "another timeout": changed(timeout=2.5),
    "a user id": changed(user="user-1234"),
    "an API key": changed(api_key="sk-not-a-real-key"),
    "stream on": changed(stream=True),
    "stream options": changed(stream=True, stream_options={"include_usage": True}),
    "extra headers": changed(extra_headers={"X-Trace": "abc"}),
    "metadata": changed(metadata={"ticket": "T-1"}),
    "an idempotency key and retries": changed(idempotency_key="k-1", max_retries=3),
    "a pydantic model of the request": as_model(),
    "pydantic messages in a dict": changed(messages=as_model().messages),
    "stop as a tuple": changed(stop=("\n\n",)),
}

DIFFERENT: dict[str, Any] = {
    "one message's text": edit(("messages", 0, "content"), "You answer in two sentences."),
    "a role": edit(("messages", 0, "role"), "developer"),
    "a tool added": changed(tools=[*BASE["tools"], {"type": "function", "function": {}}]),
    "a tool's schema": edit(("tools", 0, "function", "parameters", "properties"), {}),
    "the model": changed(model="gpt-4o"),
    "the temperature": changed(temperature=0.7),
    "the seed": changed(seed=8),
    "no seed": {k: v for k, v in BASE.items() if k != "seed"},
    "an image part": edit(("messages", 1, "content", 1, "image_url", "url"), "https://x/dog.png"),
    "content parts in another order": edit(
        ("messages", 1, "content"), list(reversed(BASE["messages"][1]["content"]))
    ),
    "messages in another order": changed(messages=list(reversed(BASE["messages"]))),
    "a message added": changed(messages=[*BASE["messages"], {"role": "user", "content": "?"}]),
    "max_tokens": changed(max_tokens=101),
    "top_p": changed(top_p=0.9),
    "stop": changed(stop=["\n"]),
    "response format": changed(response_format={"type": "text"}),
    "tool choice": changed(tool_choice="none"),
    "n": changed(n=2),
    "a provider extra": changed(extra_body={"top_k": 5}),
    "a field memo does not know": changed(reasoning_effort="high"),
}


def test_twenty_equivalent_requests_share_the_key_of_the_request() -> None:
    assert len(SAME) == 20
    base = key(BASE)
    assert {name: key(request) for name, request in SAME.items()} == dict.fromkeys(SAME, base)


def test_twenty_requests_that_differ_in_what_shapes_the_reply_each_get_their_own_key() -> None:
    assert len(DIFFERENT) == 20
    found = {name: key(request) for name, request in DIFFERENT.items()}
    assert key(BASE) not in found.values()
    assert len(set(found.values())) == 20


def test_request_keys_are_pinned() -> None:
    """Golden keys: a changed derivation is a deliberate, versioned act."""
    assert key(BASE) == "ai:chat:v1:87a938f32e8d8fe47244f76e3053b855"
    long = changed(messages=[{"role": "user", "content": "x" * 5000}])
    assert key(long) == "ai:chat:v1:0ca07ee1b4d5453e61d859728e70fcfd"


def test_the_fast_map_gives_exactly_the_full_derivation_and_answers_repeats() -> None:
    builder = keys()
    for request in [BASE, *SAME.values(), *DIFFERENT.values()]:
        assert builder((request,), {}) == builder._derive((request,), {})
    derived: list[Any] = []
    full = builder._derive
    builder._derive = lambda args, kwargs: derived.append(args) or full(args, kwargs)  # type: ignore[method-assign]
    for request in DIFFERENT.values():
        assert builder((copy.deepcopy(request),), {}) == full((request,), {})
    assert derived == []  # every repeat, even of an equal copy, was answered by the map


def test_bools_ints_and_floats_never_share_a_fast_map_entry() -> None:
    builder = keys()
    flags = [changed(logprobs=v) for v in (True, 1, 1.0)]
    found = [builder((r,), {}) for r in flags]
    assert found == [builder._derive((r,), {}) for r in flags]
    assert found[0] != found[1] == found[2]  # 1 == 1.0 is one key, True is another


class Effort(enum.IntEnum):
    HIGH = 1


def test_a_subclass_of_a_builtin_takes_the_full_derivation() -> None:
    builder = keys()
    plain, enum_valued = changed(effort=1), changed(effort=Effort.HIGH)
    assert builder((plain,), {}) == builder._derive((plain,), {})
    assert builder((enum_valued,), {}) == builder._derive((enum_valued,), {})
    assert builder((plain,), {}) != builder((enum_valued,), {})


def test_a_dataclass_message_keys_as_the_dict_it_stands_for() -> None:
    as_dict = changed(messages=[{"role": "system", "content": "hi"}])
    as_dataclass = changed(messages=[SystemMessage("hi")])
    assert key(as_dict) == key(as_dataclass)


def test_long_message_text_enters_the_key_as_a_digest() -> None:
    text = "y" * 20_000
    node = canonical_request({"messages": [{"role": "user", "content": text}]})
    assert node["messages"][0]["content"] == text  # canonical form keeps it; encode hashes
    a = key(changed(messages=[{"role": "user", "content": text}]))
    b = key(changed(messages=[{"role": "user", "content": text[:-1] + "z"}]))
    assert a != b


def test_kwargs_as_the_request_keys_like_the_same_request_passed_whole() -> None:
    by_kwargs = RequestKeyBuilder(create, operation="chat", request_arg="request")
    assert by_kwargs((), dict(BASE)) == key(BASE)
    assert by_kwargs((), {**BASE, "timeout": 9, "stream": True}) == key(BASE)


def test_request_ignore_drops_more_fields() -> None:
    builder = keys(request_ignore=("trace",))
    assert builder((changed(trace="a"),), {}) == builder((changed(trace="b"),), {})
    assert key(changed(trace="a")) != key(changed(trace="b"))  # kept by default


def test_never_keyed_names_the_fields_a_user_expects_dropped() -> None:
    assert {"stream", "timeout", "request_id", "user", "api_key"} <= NEVER_KEYED


def test_request_names_a_parameter_of_the_function() -> None:
    with pytest.raises(ConfigError, match=r"request='req' is not a parameter.*request"):

        @ai_cached("chat", request="req", cache=InMemoryCache())
        async def f(request: dict[str, Any]) -> str:
            return ""


def test_deterministic_only_needs_a_request() -> None:
    with pytest.raises(ConfigError, match="deterministic_only=True needs request="):
        ai_cached("chat", deterministic_only=True)


def test_an_unkeyable_value_in_a_request_names_the_argument() -> None:
    with pytest.raises(KeyDerivationError, match="argument 'request'"):
        key(changed(handle=object()))


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        ({"temperature": 0}, False),  # greedy decoding
        ({"temperature": 0.7}, True),
        ({"temperature": 0.7, "seed": 1}, False),
        ({}, True),  # the provider's default temperature is above 0
        ({"seed": 3}, False),
    ],
)
def test_which_requests_count_as_non_deterministic(
    request_: dict[str, Any], expected: bool
) -> None:
    assert is_nondeterministic(request_) is expected
    assert is_nondeterministic(Request(model="m", messages=[], **request_)) is expected


async def test_deterministic_only_runs_a_sampled_request_uncached_and_counts_it() -> None:
    cache = InMemoryCache()
    calls: list[dict[str, Any]] = []

    @ai_cached("chat", request="request", cache=cache, deterministic_only=True)
    async def ask(request: dict[str, Any]) -> str:
        calls.append(request)
        return "reply"

    sampled = {"model": "m", "messages": [], "temperature": 0.9}
    greedy = {"model": "m", "messages": [], "temperature": 0}
    for _ in range(3):
        await ask(sampled)
        await ask(greedy)
    assert len(calls) == 4  # three sampled calls, one greedy one
    stats = ask.stats()
    assert (stats["nondeterministic"], stats["bypassed"], stats["hits"]) == (3, 3, 2)


async def test_by_default_a_sampled_request_is_cached() -> None:
    cache = InMemoryCache()
    calls = 0

    @ai_cached("chat", request="request", cache=cache)
    async def ask(request: dict[str, Any]) -> str:
        nonlocal calls
        calls += 1
        return "reply"

    for _ in range(3):
        await ask({"model": "m", "messages": [], "temperature": 0.9})
    assert calls == 1


async def test_a_request_method_keys_without_self() -> None:
    cache = InMemoryCache()

    class Client:
        def __init__(self, name: str) -> None:
            self.name = name

        @ai_cached("chat", request="request", cache=cache)
        async def complete(self, request: dict[str, Any]) -> str:
            return self.name

    assert await Client("a").complete(BASE) == "a"
    assert await Client("b").complete(copy.deepcopy(BASE)) == "a"


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["model", "temperature", "seed", "top_p", "stop", "n", "x"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-3, 3),
            st.floats(-2, 2, allow_nan=False),
            st.text(max_size=5),
            st.lists(st.text(max_size=3), max_size=3),
        ),
    )
)
def test_the_fast_map_agrees_with_the_full_derivation_on_any_request(
    request: dict[str, Any],
) -> None:
    builder = keys()
    first = builder((request,), {})
    assert first == builder._derive((request,), {})
    assert builder((copy.deepcopy(request),), {}) == first


def test_bytes_like_values_key_alike_whatever_was_called_before() -> None:
    """The fast map packs bytes, bytearray and memoryview alike: so does the key."""
    for order in ((bytes, bytearray, memoryview), (memoryview, bytearray, bytes)):
        builder = keys()
        found = {kind.__name__: builder((changed(audio=kind(b"\x00\x01")),), {}) for kind in order}
        fresh = keys()
        kinds = (bytes, bytearray, memoryview)
        derived = {k.__name__: fresh._derive((changed(audio=k(b"\x00\x01")),), {}) for k in kinds}
        assert found == derived
        assert len(set(found.values())) == 1


def test_int_mapping_keys_key_as_the_strings_json_sends() -> None:
    assert key(changed(logit_bias={1: 5})) == key(changed(logit_bias={"1": 5}))
    assert key(changed(logit_bias={1: 5})) != key(changed(logit_bias={"1": 6}))


def test_a_request_nested_too_deeply_is_a_key_error_naming_the_argument() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(5000):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(KeyDerivationError, match="argument 'request' is nested too deeply"):
        key(changed(extra=deep))


async def extra_default(request: Any, stop: tuple[str, ...] = ("\n",)) -> str:
    return ""


def test_an_argument_left_at_a_tuple_default_stays_out_of_the_key() -> None:
    builder = RequestKeyBuilder(extra_default, operation="chat", request_arg="request")
    plain = RequestKeyBuilder(chat, operation="chat", request_arg="request")
    assert builder((BASE,), {}) == builder((BASE, ("\n",)), {}) == plain((BASE,), {})
    assert builder((BASE, ("x",)), {}) != plain((BASE,), {})

"""Every fenced block of README.md and docs/*.md, checked by the test run (issue 12).

The rule: a block's language tag decides what is done with it.

- ``python``: run, as its own test (id ``FILE:LINE``, the line of the opening fence).
  The block is compiled with top-level ``await`` (``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT``) and
  awaited in the test's event loop, in a fresh namespace holding the stand-ins below for
  the reader's own objects (``reader_namespace``). After it, the names it defined that
  ``EXERCISES`` knows are called (``get_user``, ``Summarizer``, ``Assistant``,
  ``stream``: twice each, the second call must not reach the stand-in behind it), and
  every FastAPI application it built is started (lifespan) and sent a GET on each of its
  GET routes, which must not fail.
- ``bash`` (also ``sh``, ``shell``): run line by line. ``a && b`` is two commands and
  ``# ...`` a comment. ``VAR=value`` lines become the environment of the commands after
  them; a block that only assigns is checked by building ``memo.config_from_env()`` from
  its variables, each of which must be one memo reads. ``pip install`` and
  ``python -m pytest`` lines are skipped (installing is what made this run possible; the
  suite is this run). A ``memo ...`` or ``python -m memo ...`` command runs in a
  subprocess with a 60 s timeout and must exit 0 or 1 (1 is the documented "nothing
  found") without a traceback; ``python examples/...`` must exit 0. Any other command
  fails the test: a new kind of command extends this rule first.
- untagged (or ``text``): an output listing (what a command prints, a usage synopsis).
  It is not run, and it must not compile as Python, so code cannot hide untagged.
- any other tag: the test fails, naming it.

Markers, HTML comments on the lines right above a fence (no blank line between):

- ``<!-- memo-docs: redis -->``: the block needs a Redis server. A Python block runs
  against memory and against the test's own redis-server; a shell block against the
  server only (without one, ``memo health`` has nothing to check).
- ``<!-- memo-docs: skip (reason) -->``: not run. At most ``MAX_SKIPS`` in all, each with
  its reason (``test_skips_are_few_and_explained``).

Targets. *memory*: no ``CACHE_REDIS_URL``, and every Redis URL written in a block
(``redis://localhost:6379``, ``redis://cache:6379/0`` ...) is pointed at a loopback port
where nothing listens: Redis is down, which a cache survives by promise. *redis*:
``CACHE_REDIS_URL`` and every Redis URL in the block point at the test's redis-server
(the database number kept). The Redis tests skip, or fail with ``MEMO_REQUIRE_REDIS=1``,
without redis-server, as everywhere in the suite.

``test_a_broken_block_fails`` feeds broken blocks through the same functions.
"""

from __future__ import annotations

import ast
import copy
import inspect
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel, Field

import memo
from memo import AIResponseCache, Cache, CacheFactory, GenericRedisCache, InMemoryCache
from tests.redis_harness import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_SKIPS = 3
COMMAND_TIMEOUT = 60

PYTHON_TAGS = {"python", "py"}
SHELL_TAGS = {"bash", "sh", "shell"}
OUTPUT_TAGS = {"", "text"}

FENCE_OPEN = re.compile(r"^```\s*(?P<lang>[\w+-]*)\s*$")
FENCE_CLOSE = re.compile(r"^```\s*$")
MARKER = re.compile(r"^<!--\s*memo-docs:\s*(?P<directive>.*?)\s*-->\s*$")
SKIP = re.compile(r"^skip\s*\((?P<reason>.*)\)$")
REDIS_URL = re.compile(r"rediss?://[^\s/\"'`)]+(?:/(?P<db>\d+))?")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def documented_variables() -> tuple[str, ...]:
    """The variables memo reads: the rows of docs/configuration.md's environment table."""
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = page.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    return tuple(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", section, re.M))


MEMO_ENV = documented_variables()


class DocsRuleError(Exception):
    """A block, or a marker, that the rule above does not cover."""


# --- reading the blocks ------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository, e.g. "docs/ai.md"
    line: int  # 1-based line of the opening fence
    lang: str  # the tag, lower case; "" when untagged
    code: str
    markers: tuple[str, ...] = ()  # the memo-docs directives right above the fence

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def kind(self) -> str:
        """``python``, ``shell`` or ``output``; DocsRuleError for anything else."""
        if self.lang in PYTHON_TAGS:
            kind = "python"
        elif self.lang in SHELL_TAGS:
            kind = "shell"
        elif self.lang in OUTPUT_TAGS:
            kind = "output"
        else:
            raise DocsRuleError(f"{self.id}: no rule for blocks tagged {self.lang!r}")
        if self.redis and kind == "output":
            raise DocsRuleError(f"{self.id}: an output listing cannot need Redis")
        return kind

    @property
    def redis(self) -> bool:
        return "redis" in self.markers

    @property
    def skip_reason(self) -> str | None:
        for directive in self.markers:
            found = SKIP.match(directive)
            if found:
                return found["reason"].strip()
        return None


def parse_markdown(text: str, path: str) -> list[Block]:
    """The fenced blocks of a markdown text, with the markers right above each."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE_OPEN.match(lines[i])
        if lines[i].startswith("```") and opening is None:
            raise DocsRuleError(f"{path}:{i + 1}: cannot read the fence {lines[i]!r}")
        if opening is None:
            if MARKER.match(lines[i]) and not _marker_run_ends_at_fence(lines, i):
                raise DocsRuleError(f"{path}:{i + 1}: a memo-docs marker not right above a fence")
            i += 1
            continue
        start = i
        markers: list[str] = []
        j = start - 1
        while j >= 0 and (found := MARKER.match(lines[j])):
            markers.insert(0, _directive(found["directive"], f"{path}:{j + 1}"))
            j -= 1
        i += 1
        body: list[str] = []
        while i < len(lines) and not FENCE_CLOSE.match(lines[i]):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise DocsRuleError(f"{path}:{start + 1}: the block is never closed")
        blocks.append(
            Block(path, start + 1, opening["lang"].lower(), "\n".join(body) + "\n", tuple(markers))
        )
        i += 1
    return blocks


def _marker_run_ends_at_fence(lines: list[str], i: int) -> bool:
    while i < len(lines) and MARKER.match(lines[i]):
        i += 1
    return i < len(lines) and lines[i].startswith("```")


def _directive(directive: str, where: str) -> str:
    if directive == "redis":
        return directive
    found = SKIP.match(directive)
    if found is None:
        raise DocsRuleError(f"{where}: unknown memo-docs directive {directive!r}")
    if not found["reason"].strip():
        raise DocsRuleError(f"{where}: a skip must give its reason: skip (why)")
    return directive


def doc_blocks() -> list[Block]:
    blocks: list[Block] = []
    for file in DOC_FILES:
        blocks += parse_markdown(
            file.read_text(encoding="utf-8"), file.relative_to(ROOT).as_posix()
        )
    return blocks


def check_output_listing(block: Block) -> None:
    """An untagged block is output: it must not be Python left untagged."""
    assert block.kind == "output"
    try:
        ast.parse(block.code)
    except SyntaxError:
        return
    raise DocsRuleError(
        f"{block.id}: this untagged block is valid Python: tag it ```python (to run it) "
        "or make it an output listing"
    )


# --- where a block runs ------------------------------------------------------------------


@dataclass
class Target:
    """memory (Redis URLs point where nothing listens) or redis (the test's server)."""

    name: str
    server_url: str | None = None
    dead_port: int = field(default_factory=free_port)

    def url(self, db: str = "0") -> str:
        if self.server_url is None:
            return f"redis://127.0.0.1:{self.dead_port}/{db}"
        return f"{self.server_url.rsplit('/', 1)[0]}/{db}"

    def rewrite(self, text: str) -> str:
        """``text`` with every Redis URL pointed at this target."""
        return REDIS_URL.sub(lambda found: self.url(found["db"] or "0"), text)

    def environment(self) -> dict[str, str]:
        return {} if self.server_url is None else {"CACHE_REDIS_URL": self.url()}


# --- the reader's own objects, as stand-ins ------------------------------------------------


class FakeDatabase:
    """``db``: ``await db.fetch_user(user_id)`` gives a user dict; ``calls`` counts them."""

    def __init__(self) -> None:
        self.calls = 0

    async def fetch_user(self, user_id: int) -> dict[str, Any]:
        self.calls += 1
        return {"id": user_id, "name": f"user-{user_id}", "roles": ["reader"]}


class FakeLLM:
    """``llm``: ``await llm.summarize(text, **options)`` gives a summary dict."""

    def __init__(self) -> None:
        self.calls = 0

    async def summarize(self, text: str, **options: Any) -> dict[str, Any]:
        self.calls += 1
        return {"summary": text[: options.get("max_length", 100)], "options": options}


class FakeModel:
    """A pydantic-like reply object: attributes, and ``model_dump()`` for the dict.

    Like a real client's objects it is *not* a type memo stores, so a block that caches it
    without ``model_dump()`` stores nothing, and its exercise notices."""

    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_fields"][name]
        except KeyError:
            raise AttributeError(name) from None

    def model_dump(self) -> dict[str, Any]:
        return copy.deepcopy(self._fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeModel) and other._fields == self._fields

    __hash__ = None  # type: ignore[assignment]


class FakeChatClient:
    """``client`` (and ``self.client``): an OpenAI-style client.

    ``await client.chat.completions.create(**request)`` gives a completion object;
    with ``stream=True`` an async iterator of chunk objects, the last carrying ``usage``.
    ``calls`` counts the requests that reached it."""

    def __init__(self) -> None:
        self.calls = 0
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    async def _create(self, *, stream: bool = False, **request: Any) -> Any:
        self.calls += 1
        words = f"You asked: {request['messages'][-1]['content']}".split()
        usage = {"prompt_tokens": 12, "completion_tokens": len(words)}
        if not stream:
            message = {"role": "assistant", "content": " ".join(words)}
            return FakeModel(
                id="chatcmpl-1",
                model=request["model"],
                choices=[{"index": 0, "message": message, "finish_reason": "stop"}],
                usage=usage,
            )
        return self._chunks(request["model"], words, usage)

    async def _chunks(self, model: str, words: list[str], usage: dict[str, int]) -> Any:
        for i, word in enumerate(words):
            delta = {"content": word if i == 0 else " " + word}
            yield FakeModel(id="chatcmpl-1", model=model, choices=[{"index": 0, "delta": delta}])
        yield FakeModel(id="chatcmpl-1", model=model, choices=[], usage=usage)


class SummarizeRequest(BaseModel):
    """``SummarizeRequest``: the request body of docs/fastapi.md's ``/summarize``."""

    text: str
    options: dict[str, Any] = Field(default_factory=dict)


DOC_TEXT = " ".join(["Caching keeps an answer close to where it is asked again."] * 40)
CHAT_REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "What does a cache keep?"}],
    "temperature": 0,
}


async def reader_namespace(target: Target) -> dict[str, Any]:
    """The globals a block runs in: the names its text uses without defining them.

    ``db``, ``llm``, ``client``: the stand-ins above. ``doc``: a 2 400-character text.
    ``cache``: a cache of the target (an ``InMemoryCache``, or a connected
    ``GenericRedisCache`` on the test's server). ``factory``: a ``CacheFactory``.
    ``log``: a logger. ``SummarizeRequest``: a pydantic request body.
    """
    if target.server_url is None:
        cache: Cache = InMemoryCache()
    else:
        cache = GenericRedisCache(target.url())
        assert await cache.connect()
    return {
        "__name__": "memo_docs_block",
        "db": FakeDatabase(),
        "llm": FakeLLM(),
        "client": FakeChatClient(),
        "doc": DOC_TEXT,
        "cache": cache,
        "factory": CacheFactory(),
        "log": logging.getLogger("memo.docs_block"),
        "SummarizeRequest": SummarizeRequest,
    }


# --- calling what a block defined --------------------------------------------------------


async def _collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


async def exercise_get_user(get_user: Any, ns: dict[str, Any]) -> None:
    first = await get_user(42)
    again = await get_user(user_id=42)
    assert first == again
    if first is not None:  # a `...` body returns None, which is not stored
        assert get_user.stats()["hits"] >= 1, "the second call of get_user was not a hit"


async def exercise_summarizer(summarizer: type, ns: dict[str, Any]) -> None:
    service = summarizer()
    first = await service.summarize(ns["doc"], {"max_length": 100})
    calls = ns["llm"].calls
    assert await service.summarize(text=ns["doc"], options={"max_length": 100}) == first
    assert ns["llm"].calls == calls, "the second summarize reached the model"


async def _exercise_chat(complete: Any, stream: Any, client: FakeChatClient) -> None:
    if complete is not None:
        first = await complete(dict(CHAT_REQUEST))
        calls = client.calls
        assert await complete(dict(CHAT_REQUEST)) == first
        assert client.calls == calls, "the second complete() reached the model: not stored"
    if stream is not None:
        first_chunks = await _collect(stream(dict(CHAT_REQUEST)))
        calls = client.calls
        assert first_chunks, "the stream gave no chunk"
        assert await _collect(stream(dict(CHAT_REQUEST))) == first_chunks
        assert client.calls == calls, "the second stream() reached the model: not stored"


async def exercise_assistant(assistant: type, ns: dict[str, Any]) -> None:
    service = assistant()
    if not hasattr(service, "client"):  # the docs/ai.md variant reads self.client
        service.client = ns["client"]
    complete = getattr(service, "complete", None)
    await _exercise_chat(complete, getattr(service, "stream", None), ns["client"])


async def exercise_stream(stream: Any, ns: dict[str, Any]) -> None:
    await _exercise_chat(None, stream, ns["client"])


#: What is called after a block, by the name the block defined.
EXERCISES: dict[str, Callable[[Any, dict[str, Any]], Awaitable[None]]] = {
    "get_user": exercise_get_user,
    "Summarizer": exercise_summarizer,
    "Assistant": exercise_assistant,
    "stream": exercise_stream,
}


async def drive_fastapi_apps(ns: dict[str, Any]) -> int:
    """Start every FastAPI app of ``ns`` and GET each GET route (path parameters "1")."""
    if "fastapi" not in sys.modules:
        return 0
    import httpx
    from fastapi import FastAPI
    from fastapi.routing import APIRoute

    apps = [value for value in ns.values() if isinstance(value, FastAPI)]
    for app in apps:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://docs") as http:
                for route in app.routes:
                    if isinstance(route, APIRoute) and "GET" in route.methods:
                        response = await http.get(re.sub(r"\{[^}]+\}", "1", route.path))
                        assert response.status_code < 500, (route.path, response.text)
    return len(apps)


# --- running a block ---------------------------------------------------------------------


async def run_python_block(block: Block, target: Target) -> dict[str, Any]:
    """Run ``block`` on ``target``, then what it defined; the namespace it left."""
    assert block.kind == "python"
    source = "\n" * block.line + target.rewrite(block.code)  # tracebacks give the .md line
    code = compile(
        source, block.path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    ns = await reader_namespace(target)
    given = dict(ns)
    try:
        result = eval(code, ns)  # the block's own text, nothing else
        if inspect.iscoroutine(result):
            await result
        for name, exercise in EXERCISES.items():
            if name in ns and ns[name] is not given.get(name):
                await exercise(ns[name], ns)
        await drive_fastapi_apps(ns)
    finally:
        await close_caches([*ns.values(), *given.values()])
    return ns


async def close_caches(values: list[Any]) -> None:
    seen: set[int] = set()
    for value in values:
        if isinstance(value, (Cache, AIResponseCache)) and id(value) not in seen:
            seen.add(id(value))
            await value.aclose()
    await memo.aclose_all()


@dataclass
class ShellOutcome:
    ran: list[list[str]] = field(default_factory=list)  # the commands run
    skipped: list[list[str]] = field(default_factory=list)  # pip install, pytest
    environment: dict[str, str] = field(default_factory=dict)  # what the block assigned


def shell_commands(code: str) -> list[list[str]]:
    """The commands of a shell block: one per line, ``&&`` splitting, comments dropped."""
    commands: list[list[str]] = []
    for line in code.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for token in lexer:
            if token == "&&":
                commands.append(command)
                command = []
            elif token and set(token) <= set("();<>|&"):
                raise DocsRuleError(f"no rule for the shell operator {token!r} in {line!r}")
            else:
                command.append(token)
        if command:
            commands.append(command)
    return commands


def memo_script() -> str:
    beside = Path(sys.executable).with_name("memo")
    found = str(beside) if beside.exists() else shutil.which("memo")
    if found is None:
        pytest.fail("the memo console script is not installed: run pip install -e .")
    return found


def run_shell_block(block: Block, target: Target) -> ShellOutcome:
    """Run the ``memo`` and ``python examples/`` commands of ``block`` (see the rule)."""
    assert block.kind == "shell"
    outcome = ShellOutcome()
    base = {k: v for k, v in os.environ.items() if k not in MEMO_ENV}
    base.update(target.environment())
    for command in shell_commands(target.rewrite(block.code)):
        assigned = {}
        while command and ASSIGNMENT.match(command[0]):
            name, _, value = command.pop(0).partition("=")
            assigned[name] = value
        if not command:  # a line of assignments: the environment from here on
            outcome.environment.update(assigned)
            continue
        words = command[2:] if command[:2] == ["python", "-m"] else command
        if words[:2] == ["pip", "install"] or words[:1] == ["pytest"]:
            outcome.skipped.append(command)
            continue
        if command[0] == "memo" or command[:3] == ["python", "-m", "memo"]:
            argv, allowed = [memo_script(), *words[1:]], (0, 1)
        elif command[0] == "python" and command[1:2] and command[1].startswith("examples/"):
            argv, allowed = [sys.executable, str(ROOT / command[1]), *command[2:]], (0,)
        else:
            raise DocsRuleError(f"{block.id}: no rule runs {shlex.join(command)!r}")
        env = {**base, **outcome.environment, **assigned}
        done = subprocess.run(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        shown = f"{block.id}: {shlex.join(command)} exited {done.returncode}\n{done.stderr}"
        assert done.returncode in allowed, shown
        assert "Traceback" not in done.stderr, shown
        outcome.ran.append(command)
    if not outcome.ran:
        if not outcome.environment:
            raise DocsRuleError(f"{block.id}: the block runs nothing and assigns nothing")
        check_environment(block, outcome.environment)
    return outcome


def check_environment(block: Block, assigned: dict[str, str]) -> None:
    """A block of assignments: each a variable memo reads (docs/configuration.md's table),
    and together a configuration ``config_from_env`` accepts."""
    unknown = sorted(set(assigned) - set(MEMO_ENV))
    assert not unknown, f"{block.id}: memo reads no variable {unknown} (it reads {MEMO_ENV})"
    memo.config_from_env(assigned)


# --- the tests ---------------------------------------------------------------------------

BLOCKS = doc_blocks()


def _of(kind: str, *, redis: bool | None = None) -> list[Any]:
    chosen = []
    for block in BLOCKS:
        try:
            if block.kind != kind or (redis is not None and block.redis != redis):
                continue
        except DocsRuleError:
            continue  # test_every_block_is_covered_by_the_rule fails for it
        chosen.append(pytest.param(block, id=block.id))
    return chosen


def _skip_if_marked(block: Block) -> None:
    if block.skip_reason is not None:
        pytest.skip(f"{block.id}: {block.skip_reason}")


def test_every_block_is_covered_by_the_rule() -> None:
    """Each fence of README.md and docs/*.md is read, and has a kind: none is left out."""
    for file in DOC_FILES:
        fences = sum(line.startswith("```") for line in file.read_text().splitlines())
        path = file.relative_to(ROOT).as_posix()
        assert fences == 2 * sum(block.path == path for block in BLOCKS), path
    kinds = {block.id: block.kind for block in BLOCKS}  # raises for a block of no rule
    assert set(kinds.values()) == {"python", "shell", "output"}
    assert sum(kind == "python" for kind in kinds.values()) >= 10
    assert any(block.redis for block in BLOCKS)


def test_the_variables_memo_reads_are_read_from_the_docs() -> None:
    assert set(MEMO_ENV) >= {"CACHE_PRESET", "CACHE_REDIS_URL", "CACHE_CUSTOM_CONFIG"}


def test_skips_are_few_and_explained() -> None:
    skipped = {block.id: block.skip_reason for block in BLOCKS if block.skip_reason is not None}
    assert len(skipped) <= MAX_SKIPS, skipped
    assert all(skipped.values()), skipped


@pytest.mark.parametrize("block", _of("python"))
async def test_python_block_against_memory(block: Block) -> None:
    _skip_if_marked(block)
    await run_python_block(block, Target("memory"))


@pytest.mark.parametrize("block", _of("python", redis=True))
async def test_python_block_against_redis(
    block: Block, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _skip_if_marked(block)
    target = Target("redis", redis_server.url)
    for name, value in target.environment().items():
        monkeypatch.setenv(name, value)
    await run_python_block(block, target)


@pytest.mark.parametrize("block", _of("shell", redis=False))
def test_shell_block(block: Block) -> None:
    _skip_if_marked(block)
    run_shell_block(block, Target("memory"))


@pytest.mark.parametrize("block", _of("shell", redis=True))
def test_shell_block_against_redis(block: Block, redis_server: RedisServer) -> None:
    _skip_if_marked(block)
    outcome = run_shell_block(block, Target("redis", redis_server.url))
    assert outcome.ran


@pytest.mark.parametrize("block", _of("output"))
def test_output_listing(block: Block) -> None:
    check_output_listing(block)


# --- the rule itself, on synthetic markdown ------------------------------------------------

BROKEN_PYTHON = {
    "an option the decorator does not take": (
        "from memo import cached\n\n@cached(ttl=300, no_such_option=1)\n"
        "async def f(x: int) -> int:\n    return x\n",
        TypeError,
    ),
    "a name nothing defines": ("await cache.set('k', undefined_value)\n", NameError),
    "a method the cache does not have": ("await cache.no_such_method('k')\n", AttributeError),
    "a failing assertion in the block": (
        "await cache.set('k', 1)\nassert await cache.get('k') == 2\n",
        AssertionError,
    ),
}


def test_every_exercise_is_used_by_some_block() -> None:
    """No exercise (nor the stand-in behind it) outlives the blocks that needed it."""
    defined: set[str] = set()
    for block in BLOCKS:
        if block.lang in PYTHON_TAGS:
            tree = ast.parse(block.code)
            kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
            defined |= {node.name for node in tree.body if isinstance(node, kinds)}
    assert set(EXERCISES) <= defined, set(EXERCISES) - defined


async def test_breaking_a_real_block_fails() -> None:
    """The first README block, given an option memo does not have, fails as a docs test."""
    block = next(b for b in BLOCKS if b.path == "README.md" and "@cached(ttl=300)" in b.code)
    await run_python_block(block, Target("memory"))
    broken = Block(
        block.path,
        block.line,
        block.lang,
        block.code.replace("@cached(ttl=300)", "@cached(ttl=300, no_such_option=1)"),
    )
    with pytest.raises(TypeError, match="no_such_option"):
        await run_python_block(broken, Target("memory"))


def _markdown(lang: str, code: str, marker: str = "") -> str:
    return f"# Title\n\nProse.\n{marker}```{lang}\n{code}```\n\nMore prose.\n"


@pytest.mark.parametrize("case", list(BROKEN_PYTHON))
async def test_a_broken_block_fails(case: str) -> None:
    code, error = BROKEN_PYTHON[case]
    (block,) = parse_markdown(_markdown("python", code), "broken.md")
    assert block.line == 4 and block.kind == "python"
    with pytest.raises(error):
        await run_python_block(block, Target("memory"))


async def test_a_broken_block_reports_its_markdown_line() -> None:
    (block,) = parse_markdown(_markdown("python", "x = 1\nraise ValueError('here')\n"), "b.md")
    with pytest.raises(ValueError) as raised:
        await run_python_block(block, Target("memory"))
    frames = [(frame.filename, frame.lineno) for frame in traceback.extract_tb(raised.tb)]
    assert ("b.md", 6) in frames


async def test_a_working_block_passes_and_its_definitions_are_exercised() -> None:
    code = (
        "from memo import cached\n\n@cached(ttl=60)\n"
        "async def get_user(user_id: int) -> dict:\n    return await db.fetch_user(user_id)\n"
    )
    (block,) = parse_markdown(_markdown("python", code), "good.md")
    ns = await run_python_block(block, Target("memory"))
    assert ns["db"].calls == 1  # called twice by its exercise, computed once


async def test_a_block_caching_what_memo_cannot_store_fails_its_exercise() -> None:
    code = (
        "from memo import ai_cached\n\nclass Assistant:\n"
        "    @ai_cached('chat', request='request')\n"
        "    async def complete(self, request: dict) -> dict:\n"
        "        return await client.chat.completions.create(**request)\n"
    )
    (block,) = parse_markdown(_markdown("python", code), "unstorable.md")
    with pytest.raises(AssertionError, match="not stored"):
        await run_python_block(block, Target("memory"))


def test_a_broken_shell_block_fails() -> None:
    (block,) = parse_markdown(_markdown("bash", "memo no-such-command\n"), "broken.md")
    with pytest.raises(AssertionError, match="exited 2"):
        run_shell_block(block, Target("memory"))
    (block,) = parse_markdown(_markdown("bash", "rm -rf build\n"), "broken.md")
    with pytest.raises(DocsRuleError, match="no rule runs"):
        run_shell_block(block, Target("memory"))
    (block,) = parse_markdown(_markdown("bash", "memo keys 'a*' | head\n"), "broken.md")
    with pytest.raises(DocsRuleError, match="operator"):
        run_shell_block(block, Target("memory"))
    (block,) = parse_markdown(_markdown("bash", "CACHE_PRESET=no-such-preset\n"), "env.md")
    with pytest.raises(memo.ConfigError):
        run_shell_block(block, Target("memory"))
    (block,) = parse_markdown(_markdown("bash", "CACHE_TTL=60\n"), "env.md")
    with pytest.raises(AssertionError, match="reads no variable"):
        run_shell_block(block, Target("memory"))


def test_shell_lines_are_read_as_the_rule_says() -> None:
    code = (
        "# a comment\npython -m pip install -e . && python examples/quickstart.py\n"
        "CACHE_CUSTOM_CONFIG='{\"default_ttl\": 3600}'\n"
        "memo keys 'user:*' --limit 20    # SCAN\n"
    )
    assert shell_commands(code) == [
        ["python", "-m", "pip", "install", "-e", "."],
        ["python", "examples/quickstart.py"],
        ['CACHE_CUSTOM_CONFIG={"default_ttl": 3600}'],
        ["memo", "keys", "user:*", "--limit", "20"],
    ]


def test_untagged_python_and_unknown_tags_are_refused() -> None:
    (block,) = parse_markdown(_markdown("", "x = compute()\n"), "untagged.md")
    with pytest.raises(DocsRuleError, match="valid Python"):
        check_output_listing(block)
    (block,) = parse_markdown(_markdown("", "memo [--json] COMMAND [ARGS]\n"), "usage.md")
    check_output_listing(block)
    (block,) = parse_markdown(_markdown("ruby", "puts 1\n"), "ruby.md")
    with pytest.raises(DocsRuleError, match="no rule for blocks tagged 'ruby'"):
        _ = block.kind


def test_markers_are_read_and_checked() -> None:
    marked = _markdown("python", "pass\n", "<!-- memo-docs: redis -->\n")
    (block,) = parse_markdown(marked, "m.md")
    assert block.redis and block.skip_reason is None
    skipped = _markdown("python", "pass\n", "<!-- memo-docs: skip (needs a GPU) -->\n")
    (block,) = parse_markdown(skipped, "m.md")
    assert block.skip_reason == "needs a GPU"
    for bad, message in [
        ("<!-- memo-docs: skip () -->\n", "reason"),
        ("<!-- memo-docs: redsi -->\n", "unknown"),
        ("<!-- memo-docs: redis -->\n\n", "not right above"),
    ]:
        with pytest.raises(DocsRuleError, match=message):
            parse_markdown(_markdown("python", "pass\n", bad), "m.md")
    with pytest.raises(DocsRuleError, match="never closed"):
        parse_markdown("```python\npass\n", "open.md")


def test_redis_urls_are_pointed_at_the_target() -> None:
    memory, server = Target("memory"), Target("redis", "redis://127.0.0.1:7001/0")
    text = 'a("redis://localhost:6379") b("redis://cache:6379/3") c(redis://u:p@h:1/0)'
    assert server.rewrite(text) == (
        'a("redis://127.0.0.1:7001/0") b("redis://127.0.0.1:7001/3") c(redis://127.0.0.1:7001/0)'
    )
    assert f"127.0.0.1:{memory.dead_port}/3" in memory.rewrite(text)
    assert memory.environment() == {}
    assert server.environment() == {"CACHE_REDIS_URL": "redis://127.0.0.1:7001/0"}

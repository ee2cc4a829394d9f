"""Opening one of memo's own RESP3 connections (``_resp.py``) to the server of a set of
``RedisOptions``: TCP, TLS or a unix socket, then HELLO 3 with the credentials, a name,
the database, and whatever the caller adds, all under the connect deadline.

A connection that opens after its deadline (or after its opener was cancelled) is
closed then, and no reply of the handshake is left unread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from memo._redis_options import RedisOptions
from memo.backends._listener_task import within
from memo.backends._resp import Push, RespConnection, ServerError, open_resp_connection

__all__ = ["Refused", "open_session", "retrieve"]

Command = Sequence[str | bytes | int]


class Refused(Exception):
    """The server refused a command of the handshake for good (before Redis 6, an ACL
    without it): retrying will not help."""


async def open_session(
    options: RedisOptions,
    *,
    name: str,
    scrub: Callable[[str], str],
    then: Sequence[Command] = (),
    on_push: Callable[[Push], None] = lambda push: None,
    on_invalidate: Callable[[Any], None] | None = None,
    on_invalidate_one: Callable[[bytes], None] | None = None,
) -> RespConnection:
    """A connection, handshake done; ``then`` are sent after it (and answered OK).

    Raises:
        Refused: a refusal no retry changes (its text scrubbed of secrets).
        ConnectionError, OSError, TimeoutError: anything else.
    """
    url = options.connection_url
    opening = asyncio.ensure_future(
        open_resp_connection(
            on_push,
            on_invalidate,
            on_invalidate_one,
            host=url.host,
            port=url.port,
            socket_path=url.socket_path,
            tls=options.ssl_context(),
        )
    )
    try:
        connection = await within(opening, options.connect_timeout, "connecting")
    except BaseException:
        opening.add_done_callback(_close_if_opened)
        raise
    try:
        await _handshake(connection, options, name, scrub, then)
    except BaseException:
        connection.abort(ConnectionError("the handshake did not finish"))
        raise
    return connection


async def _handshake(
    connection: RespConnection,
    options: RedisOptions,
    name: str,
    scrub: Callable[[str], str],
    then: Sequence[Command],
) -> None:
    url = options.connection_url
    hello: list[str | bytes | int] = ["HELLO", 3]
    if url.password is not None:
        hello += ["AUTH", url.username or "default", url.password]
    hello += ["SETNAME", name]
    commands: list[Command] = [hello]
    if url.database:
        commands.append(["SELECT", url.database])
    commands.extend(then)
    replies = connection.request(*commands)
    for reply in replies:  # a timeout or the connection's end leaves none unread
        reply.add_done_callback(retrieve)
    await within(
        asyncio.wait(replies), options.connect_timeout + options.operation_timeout, "the handshake"
    )
    if not all(reply.done() for reply in replies):
        raise TimeoutError("the handshake was not answered")
    for command, reply in zip(commands, [r.result() for r in replies], strict=True):
        if isinstance(reply, ServerError):
            what = " ".join(str(part) for part in command[:3] if part != "AUTH")
            text = scrub(str(reply))
            if _is_refusal(text):
                raise Refused(f"{what}: {text}")
            raise ConnectionError(f"{what} refused: {text}")


def _is_refusal(text: str) -> bool:
    """A reply no retry changes: an unknown command (before Redis 6), NOPERM, or a
    server without RESP3."""
    lowered = text.lower()
    return (
        lowered.startswith(("noperm", "noproto"))
        or "unknown command" in lowered
        or "unknown subcommand" in lowered
    )


def _close_if_opened(opening: asyncio.Future[RespConnection]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().abort(ConnectionError("opened too late"))


def retrieve(future: asyncio.Future[Any]) -> None:
    """A done callback marking a future's exception as seen (its end is seen elsewhere)."""
    if not future.cancelled():
        future.exception()

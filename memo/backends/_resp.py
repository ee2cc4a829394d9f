"""A lean RESP3 connection: memo's own, for the one job redis-py's pub/sub reader does slowly.

A memory tier's tracked reads and the invalidations of what they read must arrive on one
connection, in the server's order (see ``_tracking.py``), and hearing an invalidation
must cost little more than the event loop's own wake-up. redis-py's readers cost several
times that per message, so this module speaks RESP3 itself: an ``asyncio.Protocol``
that parses replies as bytes arrive, answers requests in order, and hands push messages
(``>``) to a callback. It sends a handful of commands (HELLO, SELECT, CLIENT TRACKING,
GET, PTTL, PING) and nothing else of memo goes through it.

Specification: https://github.com/redis/redis-specifications/blob/master/protocol/RESP3.md
"""

from __future__ import annotations

import asyncio
import collections
import math
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "Push",
    "RespConnection",
    "ServerError",
    "encode_command",
    "open_resp_connection",
    "parse_reply",
]

_CRLF = b"\r\n"


_monotonic = time.monotonic


class ServerError(Exception):
    """An error reply (``-ERR ...`` or ``!``): the server answered, and refused."""


class Push(list):  # type: ignore[type-arg]
    """An out-of-band message (RESP3 ``>``), told apart from a reply by its type."""


class _Incomplete(Exception):
    """The buffer ends inside a reply: wait for more bytes, ``need`` of them in all
    (counted from the buffer's start) before it is worth parsing again."""

    def __init__(self, need: int) -> None:
        self.need = need


def encode_command(args: Sequence[str | bytes | int]) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def parse_reply(buf: bytes, pos: int) -> tuple[Any, int]:
    """The reply that starts at ``pos`` and where the next one starts.

    Raises ``_Incomplete`` when ``buf`` ends inside it. Types: ``+`` str, ``-``/``!``
    ``ServerError``, ``:``/``(`` int, ``$``/``=`` bytes, ``_`` None, ``,`` float, ``#``
    bool, ``*``/``~`` list, ``%`` dict, ``>`` ``Push``; an attribute (``|``) is skipped.
    """
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete(len(buf) + 1)
    kind = buf[pos]
    head = buf[pos + 1 : end]
    pos = end + 2
    if kind == 36:  # $ bulk string
        size = int(head)
        if size < 0:
            return None, pos
        stop = pos + size
        if stop + 2 > len(buf):
            raise _Incomplete(stop + 2)  # a large value: parse again once it is all in
        return buf[pos:stop], stop + 2
    if kind == 58:  # : integer
        return int(head), pos
    if kind in (42, 62, 126):  # * array, > push, ~ set
        count = int(head)
        if count < 0:
            return None, pos
        items = Push() if kind == 62 else []
        for _ in range(count):
            item, pos = parse_reply(buf, pos)
            items.append(item)
        return items, pos
    if kind == 43:  # + simple string
        return head.decode(errors="replace"), pos
    if kind == 95:  # _ null
        return None, pos
    if kind == 45:  # - error
        return ServerError(head.decode(errors="replace")), pos
    if kind == 37:  # % map
        mapping = {}
        for _ in range(int(head)):
            name, pos = parse_reply(buf, pos)
            value, pos = parse_reply(buf, pos)
            mapping[name if not isinstance(name, list) else tuple(name)] = value
        return mapping, pos
    if kind in (33, 61):  # ! blob error, = verbatim string
        stop = pos + int(head)
        if stop + 2 > len(buf):
            raise _Incomplete(stop + 2)
        data = buf[pos:stop]
        if kind == 33:
            return ServerError(data.decode(errors="replace")), stop + 2
        return data[4:], stop + 2  # "txt:" or "mkd:" first
    if kind == 35:  # # boolean
        return head == b"t", pos
    if kind == 44:  # , double
        return float(head), pos
    if kind == 40:  # ( big number
        return int(head), pos
    if kind == 124:  # | attribute: metadata about the next reply, which follows
        for _ in range(2 * int(head)):
            _, pos = parse_reply(buf, pos)
        return parse_reply(buf, pos)
    raise ValueError(f"not a RESP3 reply: type byte {kind!r}")


_INVALIDATE = b">2\r\n$10\r\ninvalidate\r\n"
_KEYS_AT = len(_INVALIDATE)
_ONE_KEY = b"*1\r\n$"
_INVALIDATE_ONE = _INVALIDATE + _ONE_KEY
_ONE_AT = len(_INVALIDATE_ONE)
#: Pushes a pause must have gathered for reading to pause again (benchmarks/push_spacing.py:
#: pushes 0.5 ms apart, two a pause, cost 1.37x what they cost read as they came; 0.2 ms
#: apart, five a pause, 0.83x).
_GATHERED_ENOUGH = 4
_ONE_MAX = 64 * 1024  # a longer read goes to the general parser (it is not copied)


def _parse_invalidation(buf: bytes, pos: int) -> tuple[Any, int]:
    """The rest of an ``invalidate`` push from ``pos``: a list of keys (bulk strings),
    or anything else through the general parser (null: a flush)."""
    if buf[pos : pos + 1] != b"*":
        return parse_reply(buf, pos)
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete(len(buf) + 1)
    count = int(buf[pos + 1 : end])
    pos = end + 2
    keys = []
    for _ in range(count):
        end = buf.find(_CRLF, pos)
        if end < 0 or buf[pos] != 36:  # not "$": let the general parser say what it is
            if end < 0:
                raise _Incomplete(len(buf) + 1)
            key, pos = parse_reply(buf, pos)
        else:
            stop = end + 2 + int(buf[pos + 1 : end])
            if stop + 2 > len(buf):
                raise _Incomplete(stop + 2)
            key, pos = buf[end + 2 : stop], stop + 2
        keys.append(key)
    return keys, pos


class RespConnection(asyncio.Protocol):
    """One RESP3 connection: ``request`` sends commands and returns futures of their
    replies, in order; pushes go to ``on_push`` as they are read.

    ``closed`` is done once the connection is gone; ``last_heard`` is the
    ``time.monotonic()`` of the last bytes read (a silent connection is how a paused server shows).
    ``batch_reads`` lets a stream of pushes gather between reads (off until called).
    """

    def __init__(
        self,
        on_push: Callable[[Push], None],
        on_invalidate: Callable[[Any], None] | None = None,
        on_invalidate_one: Callable[[bytes], None] | None = None,
    ) -> None:
        self._on_push = on_push
        # Told the keys of each "invalidate" push (None for a flush) without building
        # the push: what a tracking connection hears most, kept cheap.
        on_keys = on_invalidate or (lambda keys: on_push(Push([b"invalidate", keys])))
        self._on_invalidate = on_keys
        # And a push of one key alone in its read, the commonest of all, as that key.
        self._on_one = on_invalidate_one or (lambda key: on_keys([key]))
        self._loop = self.loop = asyncio.get_running_loop()
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._sent_at: collections.deque[float] = collections.deque()  # one per waiting
        # An unfinished reply: its bytes so far, and how many it needs before it is
        # worth parsing again (so a large value is parsed once, not once per chunk).
        self._rest: list[bytes] = []
        self._rest_size = 0
        self._need = 0
        self._transport: asyncio.Transport | None = None
        self._corked: list[bytes] = []  # requests of this turn of the loop, not yet written
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.last_heard = _monotonic()
        self._clock = _monotonic
        self._last_read = self.last_heard  # in the clock's time (the heartbeat's is monotonic)
        # Batched reads (see batch_reads): the pause; the mean gap between reads below
        # which one starts (0: never); that mean, moving; the longest gap it counts; the
        # timer that ends the pause under way, and when the last pause ended.
        self._batch = self._dense = self._spacing = self._longest = 0.0
        self._resume: asyncio.TimerHandle | None = None
        self._resumed = -math.inf
        self.pauses = 0  # how many times reading was held back to let pushes gather

    def batch_reads(self, seconds: float, clock: Callable[[], float] = _monotonic) -> None:
        """Under a dense stream of pushes, read at most once per ``seconds`` (0: each
        at once).

        While reads come less than a fifth of ``seconds`` apart (a moving mean of the
        gaps, so that one close pair does not count) and no reply is awaited, reading
        stops for ``seconds``: what arrives meanwhile waits in the socket and is then
        read and parsed in one go, one wake-up of the loop for many pushes instead of
        one each. Reading stops again while what gathered is at least
        ``_GATHERED_ENOUGH`` pushes. A pause costs a timer, a wake-up of its own and
        two changes of the selector: gathering fewer, it costs more than it saves
        (benchmarks/push_spacing.py). A request ends the pause at once, so a reply is
        never held back; a push is held back at most ``seconds`` (and the end of the
        connection up to twice that).
        """
        self._batch, self._dense, self._clock = seconds, seconds / 5, clock
        self._spacing = self._longest = 4 * seconds
        self._last_read = clock()

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        now = self._clock()
        gathered = now - self._resumed < self._dense  # read as a pause ended
        if gathered:
            self._spacing = self._batch  # a stream that goes on pauses again below
        elif self._dense and not self._waiting:  # replies awaited say nothing of pushes
            gap = min(now - self._last_read, self._longest)
            self._spacing = spacing = 0.75 * self._spacing + 0.25 * gap
            if spacing < self._dense:
                self._hold_reads()  # a dense stream: let what comes next gather
        self._last_read = now
        # The heartbeat's clock; the loop's time() is monotonic() itself.
        self.last_heard = now if self._clock is _monotonic else _monotonic()
        if self._rest:
            self._rest.append(data)
            self._rest_size += len(data)
            if self._rest_size < self._need:
                return
            data = b"".join(self._rest)
            self._rest = []
        elif data[:_ONE_AT] == _INVALIDATE_ONE and len(data) < _ONE_MAX:
            # One key changed, alone in this read: what is heard most, so parsed in
            # as few steps as it takes ("<size>\r\n<key>\r\n" after the prefix).
            digits, _, rest = data[_ONE_AT:].partition(_CRLF)
            if digits.isdigit() and len(rest) == int(digits) + 2:
                self._on_one(rest[:-2])
                return  # read as a pause ended, one push is too few to pause again
        pos, size = 0, len(data)
        waiting, sent_at, on_push, on_one = (
            self._waiting,
            self._sent_at,
            self._on_push,
            self._on_one,
        )
        try:
            while pos < size:
                if data.startswith(_INVALIDATE, pos):  # most of what a tracking tier hears
                    if not data.startswith(_ONE_KEY, pos + _KEYS_AT):  # several, or a flush
                        keys, pos = _parse_invalidation(data, pos + _KEYS_AT)
                        self._on_invalidate(keys)
                        continue
                    at = pos + _ONE_AT  # one key (in a read of several): no list built
                    end = data.find(_CRLF, at)
                    if end < 0:
                        raise _Incomplete(size + 1)
                    stop = end + 2 + int(data[at:end])
                    if stop + 2 > size:
                        raise _Incomplete(stop + 2)
                    on_one(data[end + 2 : stop])
                    pos = stop + 2
                    continue
                reply, pos = parse_reply(data, pos)
                if type(reply) is Push:
                    on_push(reply)
                elif waiting:
                    future = waiting.popleft()
                    sent_at.popleft()
                    if not future.done():  # a caller that gave up
                        future.set_result(reply)
                else:
                    raise ValueError("a reply nobody asked for")
        except _Incomplete as short:  # the rest waits for the bytes it needs
            self._rest, self._rest_size, self._need = [data[pos:]], size - pos, short.need - pos
        except ValueError as exc:  # the stream cannot be trusted past this point
            self._rest = []
            self.abort(ConnectionError(f"unreadable reply from Redis: {exc}"))
        # The stream goes on; a message read in part waits for no pause, nor a reply.
        if (
            gathered
            and not (self._waiting or self._rest)
            and data.count(_INVALIDATE) >= _GATHERED_ENOUGH
        ):
            self._hold_reads()

    def _hold_reads(self) -> None:
        transport = self._transport
        if self._resume is None and transport is not None and not transport.is_closing():
            transport.pause_reading()
            self.pauses += 1
            self._resume = self._loop.call_later(self._batch, self._read_again)

    def _read_again(self) -> None:
        self._resume = None
        self._resumed = self._clock()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        self._transport = None
        why = exc or "by the server"
        self._fail_waiting(ConnectionError(f"the connection to Redis closed ({why})"))
        if not self.closed.done():
            self.closed.set_result(None)

    # ---------------------------------------------------------------- use

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def request(self, *commands: Sequence[str | bytes | int]) -> list[asyncio.Future[Any]]:
        """Send ``commands`` in one write; a future per reply (a ``ServerError`` is a
        result, not raised: the caller decides what a refusal means)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionError("the connection to Redis is closed")
        wire = b"".join([encode_command(c) for c in commands])  # may raise: nothing queued
        if self._resume is not None:  # pushes were gathering: a reply must not wait
            self._resume.cancel()
            self._read_again()
        futures = [self._loop.create_future() for _ in commands]
        idle = not self._waiting
        self._waiting.extend(futures)
        self._sent_at.extend([self._loop.time()] * len(futures))
        if idle:  # alone: it leaves at once (and its caller goes on before a burst's)
            transport.write(wire)
            return futures
        # Requests made while others are on their way leave together at the end of the
        # loop's turn: a burst of a thousand callers is a few writes, not a thousand
        # (each a system call here, and a read for the server).
        if not self._corked:
            self._loop.call_soon(self._uncork)
        self._corked.append(wire)
        return futures

    def _uncork(self) -> None:
        corked, self._corked = self._corked, []
        if corked and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(corked))

    @property
    def oldest_sent_at(self) -> float | None:
        """Loop time the oldest request still waiting for its reply was sent."""
        return self._sent_at[0] if self._sent_at else None

    def abort(self, reason: Exception) -> None:
        """Drop the connection now; every request waiting fails with ``reason``."""
        self._fail_waiting(reason)
        if self._transport is not None:
            self._transport.abort()

    def _fail_waiting(self, reason: Exception) -> None:
        self._sent_at.clear()
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(reason)


async def open_resp_connection(
    on_push: Callable[[Push], None],
    on_invalidate: Callable[[Any], None] | None = None,
    on_invalidate_one: Callable[[bytes], None] | None = None,
    *,
    host: str | None,
    port: int | None,
    socket_path: str | None,
    tls: ssl.SSLContext | None,
) -> RespConnection:
    """Connect over TCP (TLS when ``tls``) or a unix socket; the caller bounds the time."""
    loop = asyncio.get_running_loop()
    if socket_path is not None:
        _, protocol = await loop.create_unix_connection(
            lambda: RespConnection(on_push, on_invalidate, on_invalidate_one), socket_path
        )
    else:
        assert host is not None and port is not None
        _, protocol = await loop.create_connection(
            lambda: RespConnection(on_push, on_invalidate, on_invalidate_one),
            host,
            port,
            ssl=tls,
            server_hostname=host if tls is not None else None,
        )
    return protocol

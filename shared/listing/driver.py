"""Runs a listing algorithm over metadata read streams: skip-ahead, early stop, stream closing.

`open_stream(options)` is a metadata read stream over one keyspace (in the dmd and the in-process
engine the engine's `scan` on the bucket's sublevel, a plain iterator read one entry at a time where
a reopen is a seek; in the gateway, against a dmd without the `listObject` call, the RPC
`createReadStream`; on PostgreSQL a keyset range scan): an (async) iterator of {"key", "value"}
in key order, honouring gt/gte/lt/lte. The driver reads only what the page needs: it stops at the
algorithm's FILTER_END (one look-ahead entry past the page) and, when the algorithm reports a run
of keys it would only skip (a folder already returned as a common prefix, the versions of a key),
it closes the stream and opens a new one past that run. Every stream it opens is closed (aclose() or close())
before it returns or raises.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Union

from shared.listing.common import FILTER_END, FILTER_SKIP, Entry, ListingAlgorithm, SkipHint
from shared.log import get_logger, log_event

logger = get_logger(__name__)

_LOWER_BOUNDS = ("gt", "gte")
_UPPER_BOUNDS = ("lt", "lte")

OpenStream = Callable[[dict[str, str]], Union[AsyncIterator[Entry], Awaitable[AsyncIterator[Entry]], Iterator[Entry]]]


@dataclass
class ListingStats:
    """What one listing cost at the source: entries received and streams opened."""
    entries_read: int = 0
    streams_opened: int = 0

    def add(self, other: "ListingStats") -> None:
        self.entries_read += other.entries_read
        self.streams_opened += other.streams_opened


def range_is_empty(params: dict[str, str]) -> bool:
    """True when no key can satisfy the bounds (byte order; `str` order is the same for valid text)."""
    for low_name in _LOWER_BOUNDS:
        low = params.get(low_name)
        if low is None:
            continue
        for high_name in _UPPER_BOUNDS:
            high = params.get(high_name)
            if high is None:
                continue
            # Only gte..lte admits the single key low == high.
            if low > high or (low == high and (low_name, high_name) != ("gte", "lte")):
                return True
    return False


def _params_after(params: dict[str, str], gte: str) -> dict[str, str]:
    """The same range restarted at `gte` (always past everything read so far)."""
    restarted = {name: value for name, value in params.items() if name in _UPPER_BOUNDS}
    restarted["gte"] = gte
    return restarted


async def _close(stream: Any) -> None:
    try:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
            return
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    except Exception as exc:  # closing is best effort; never hide the listing's own outcome
        log_event(logger, logging.WARNING, "listing stream close failed", error=repr(exc))


class _Pass:
    """One stream's worth of a listing: feeds entries to the algorithm and decides where to jump."""

    __slots__ = ("algorithm", "params", "max_skip_run", "hint", "skipped", "next_params")

    def __init__(self, algorithm: ListingAlgorithm, params: dict[str, str], max_skip_run: int | None) -> None:
        self.algorithm = algorithm
        self.params = params
        self.max_skip_run = max_skip_run
        self.hint: SkipHint | None = None
        self.skipped = 0
        self.next_params: dict[str, str] | None = None

    def stop_after(self, entry: Entry) -> bool:
        """Filters `entry`; True when this stream is done (page complete, or a jump: `next_params`)."""
        algorithm = self.algorithm
        code = algorithm.filter(entry)
        if code == FILTER_END:
            return True
        hint = algorithm.skip_hint()
        if hint is None:
            self.hint = None
            return False
        if hint is not self.hint and hint != self.hint:
            self.hint, self.skipped = hint, 0
        elif code == FILTER_SKIP:
            self.skipped += 1
        after = hint.after
        if self.max_skip_run is not None and self.max_skip_run < after:
            after = self.max_skip_run
        if self.skipped < after:
            return False
        if hint.gte is None:
            return True  # nothing sorts after the run being skipped
        if hint.gte <= entry["key"]:
            return False  # a hint must move forward; read on rather than loop
        restarted = _params_after(self.params, hint.gte)
        if not range_is_empty(restarted):
            self.next_params = restarted
        return True


async def list_entries(open_stream: OpenStream, algorithm: ListingAlgorithm,
                       stats: ListingStats | None = None, *, max_skip_run: int | None = None,
                       yield_every: int | None = None) -> dict[str, Any]:
    """Feeds `algorithm` from `open_stream` and returns `algorithm.result()`.

    A stream is an async iterator (a metadata read stream) or, in process, a plain iterator read
    synchronously (the engine's `scan`: no chunk read ahead, no await per entry).
    `max_skip_run`: where reopening a stream is cheap (a seek in process), jump a run of skipped
    entries after at most this many, whatever the algorithm's hint says (its `after` is sized for
    a network round trip). `yield_every`: give the event loop a turn every that many entries
    read, so that a long run of entries the page does not show (delete markers, versions, a
    synchronous engine's stream) never holds up other clients for long.

    Stream errors propagate (the gateway answers InternalError); the stream is closed either way.
    """
    stats = stats if stats is not None else ListingStats()
    params = algorithm.gen_params()
    if algorithm.max_keys <= 0 or params is None or range_is_empty(params):
        return algorithm.result()
    while params is not None:
        stream = open_stream(dict(params))
        if not (hasattr(stream, "__aiter__") or hasattr(stream, "__next__")):
            stream = await stream   # an open_stream that is a coroutine function
        stats.streams_opened += 1
        run = _Pass(algorithm, params, max_skip_run)
        stop_after = run.stop_after
        try:
            if hasattr(stream, "__aiter__"):
                async for entry in stream:
                    stats.entries_read += 1
                    if yield_every is not None and stats.entries_read % yield_every == 0:
                        await asyncio.sleep(0)
                    if stop_after(entry):
                        break
            else:
                read = 0
                try:
                    for entry in stream:
                        read += 1
                        if yield_every is not None and (stats.entries_read + read) % yield_every == 0:
                            await asyncio.sleep(0)
                        if stop_after(entry):
                            break
                finally:
                    stats.entries_read += read
        finally:
            await _close(stream)
        params = run.next_params
    log_event(logger, logging.DEBUG, "listing done", algorithm=type(algorithm).__name__,
              entries_read=stats.entries_read, streams_opened=stats.streams_opened)
    return algorithm.result()

"""Server-Sent Events watch: GET /v1/watch?env=E&prefix=P&since=REV.

Each event is written as ``id: <revision>`` / ``event: <type>`` / ``data: <json>``, so a
client that reconnects with ``Last-Event-ID`` resumes right after the last event it got
(a progress mark's id is a revision too: everything up to it has been delivered). All
request errors are answered as problem+json before the stream starts. A watcher that
doesn't take its events for ``SLOW_WATCHER_SECONDS`` is disconnected and resumes later.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from server.api.fanout import Encodings, StallGuard, tune_collector
from server.api.http import ctx_of, query_int, services_of
from server.service.changes import parse_wait
from server.service.watch import DEFAULT_PROGRESS_SECONDS, Subscription, WatchEvent
from shared.errors import InvalidInput
from shared.models import parse_environment

SLOW_WATCHER_SECONDS = 30.0
STALLS: web.AppKey[StallGuard] = web.AppKey("watch_stalls", StallGuard)


def frame(event: WatchEvent) -> bytes:
    """One SSE event; ``id`` only where resuming after it can't skip a sibling of its revision."""
    if not event.final:
        return b"event: %s\ndata: %s\n\n" % (event.kind.encode(), event.payload)
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.revision, event.kind.encode(), event.payload)


_frames = Encodings(frame)


def chunk(event: WatchEvent) -> bytes:
    data = frame(event)
    return b"%x\r\n%s\r\n" % (len(data), data)


# the same frame as one HTTP/1.1 chunk, for writes straight to the socket's transport
_chunks = Encodings(chunk)
PUSH_BUFFER_LIMIT = 64 * 1024  # past this many unsent bytes a stream stops taking pushes


def _push_to_socket(request: web.Request, response: web.StreamResponse, subscription: Subscription) -> None:
    """Let the watch service write events straight to the socket while this stream waits.

    A change then costs each idle watcher one buffered socket write, made by the view as it
    goes through its watchers, instead of waking the watcher's task to write it. Only for a
    chunked HTTP/1.1 response (the event goes out framed as one chunk, exactly what
    ``response.write`` would send); a peer that doesn't read fills the buffer, pushes stop and
    the task's own awaited writes (with the stall guard) take over.
    """
    transport = request.transport
    if transport is None or response.headers.get("Transfer-Encoding", "").lower() != "chunked":
        return

    def ready() -> bool:
        return not transport.is_closing() and transport.get_write_buffer_size() <= PUSH_BUFFER_LIMIT

    def send(event: WatchEvent) -> None:
        transport.write(_chunks.get(event))

    subscription.deliver_with(ready, send)


def _since(request: web.Request) -> int | None:
    last = request.headers.get("Last-Event-ID")
    if last is not None and last.strip():
        raw = last.strip()
        if not raw.isascii() or not raw.isdigit():
            raise InvalidInput(f"Last-Event-ID must be a revision number, got {raw[:40]!r}")
        return int(raw)
    return query_int(request, "since", minimum=0)


async def watch(request: web.Request) -> web.StreamResponse:
    env = request.query.get("env")
    if not env:
        raise InvalidInput("query parameter 'env' is required: the environment whose values to watch")
    raw_progress = request.query.get("progress")
    progress = DEFAULT_PROGRESS_SECONDS if raw_progress is None else parse_wait(raw_progress)
    subscription = await services_of(request).watch.open(
        ctx_of(request),
        prefixes=request.query.getall("prefix", []),
        environment=parse_environment(env),
        since=_since(request),
        key=request.query.get("key") or None,
        progress_interval=progress,
    )
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
            "X-Request-Id": ctx_of(request).request_id,
        }
    )
    await response.prepare(request)
    await response.write(b"retry: 1000\n\n")  # also sends the headers: pushes come after them
    _push_to_socket(request, response, subscription)
    stream = request.app[STALLS].open()
    try:
        async with subscription:
            async for event in subscription:
                stream.busy()
                await response.write(_frames.get(event))
                stream.idle()
    except asyncio.CancelledError:
        if not stream.claim():
            raise
        # too slow: let it reconnect and resume instead of holding others' memory
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        request.app[STALLS].close(stream)
    return response


async def _tune_collector(app: web.Application) -> None:
    tune_collector()  # the server is built: what it holds now stays for its life


def add_routes(app: web.Application) -> None:
    app[STALLS] = StallGuard(SLOW_WATCHER_SECONDS)
    app.on_startup.append(_tune_collector)
    app.router.add_get("/v1/watch", watch)

"""Minimal HTTP/1.1 over asyncio streams, for the agent: a client and a small server.

The agent speaks a few kinds of HTTP: JSON requests to the config server, one long
Server-Sent Events stream from it, a POST to ``--reload-url``, GETs of ``--health-url``,
and it answers probes and metrics scrapes on :8081. aiohttp would do all of that, but
importing it (with the TLS contexts it builds at import) costs an agent about 15 MB of
resident memory, more than a third of its budget, so the agent does it with asyncio streams
and ``h11`` (sans-IO HTTP/1.1: it parses and writes the messages, status line, headers,
Content-Length and chunked framing; its protocol errors become ``BadResponse`` or a 400):

- ``request``: one request on a new connection (``Connection: close``), the whole answer
  read (``Content-Length``, chunked, or until the connection closes), at most
  ``max_body`` bytes, within ``timeout`` seconds.
- ``stream``: GET whose body is handed over chunk by chunk as it arrives, each read
  bounded by ``read_timeout`` (the watch stream).
- ``serve``: an ``asyncio`` server calling ``handler(method, path, query)`` for each
  request (path percent-decoded, query as a dict) and writing its ``Reply``; one request
  per connection, no request bodies (the agent's endpoints are all GETs).

TLS (``https://``) uses ``ssl.create_default_context()``, so ``SSL_CERT_FILE`` /
``SSL_CERT_DIR`` name the CAs to trust, as for aiohttp. No proxies, no redirects, no
compression (``Accept-Encoding: identity``). Failures are ``OSError`` (connection),
``TimeoutError``, ``ssl.SSLCertVerificationError`` (an ``OSError`` too) or
``BadResponse`` (not HTTP/1.x, or a body cut short); callers map them to the project's
errors. Header values are never logged here (one of them carries the bearer token).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import h11

MAX_HEAD = 64 * 1024  # status line and headers
MAX_BODY = 256 * 1024 * 1024  # a whole answer read by ``request``
READ_SIZE = 64 * 1024
USER_AGENT = "llm-config-agent/0.1"
REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           413: "Payload Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip


class BadResponse(Exception):
    """The peer answered something that is not a complete HTTP/1.x response."""


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> tuple[Target, str]:
        """(where to connect, the request target: path and query) of an http(s) URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL with a host")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = parts.path or "/"
        return cls(parts.scheme, parts.hostname, port), path + (f"?{parts.query}" if parts.query else "")

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]  # names lower-cased
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return media_type(self.headers)


def media_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


_TLS: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """One default client context per process, made on the first https:// request."""
    global _TLS
    if _TLS is None:
        _TLS = ssl.create_default_context()
    return _TLS


async def _open(target: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if target.scheme == "https":
        return await asyncio.open_connection(
            target.host, target.port, ssl=tls_context(), server_hostname=target.host, limit=MAX_HEAD
        )
    return await asyncio.open_connection(target.host, target.port, limit=MAX_HEAD)


def _make_request(
    method: str, path: str, target: Target, headers: Mapping[str, str], body: bytes | None
) -> h11.Request:
    fields = [("Host", target.host_header), ("User-Agent", USER_AGENT), ("Accept-Encoding", "identity"),
              ("Connection", "close")]  # fmt: skip
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name[:40]!r} holds a line break")
        fields.append((name, value))
    if body is not None:
        fields.append(("Content-Length", str(len(body))))
    try:
        return h11.Request(method=method, target=path, headers=fields)
    except h11.LocalProtocolError as exc:  # h11's message may quote a header value: leave it out
        raise ValueError(f"not a valid HTTP/1.1 request ({_reason(exc)})") from None


def _reason(exc: h11.ProtocolError) -> str:
    """h11's account of a protocol error without the bytes it quotes (they may carry secrets)."""
    return str(exc).split(":", 1)[0][:80]


def _headers(fields: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in fields:
        key, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


class _Reader:
    """Bytes from ``reader`` fed to an h11 client connection, its events out; each read
    bounded by ``read_timeout`` (None: unbounded) and h11's protocol errors ``BadResponse``."""

    def __init__(self, conn: h11.Connection, reader: asyncio.StreamReader, read_timeout: float | None):
        self._conn, self._reader, self._read_timeout = conn, reader, read_timeout
        self._received = 0

    async def next_event(self) -> h11.Event:
        for _ in range(1 << 40):
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                if self._received == 0:
                    raise BadResponse("the connection closed before an answer") from None
                raise BadResponse(f"the answer is not valid HTTP/1.1: {_reason(exc)}") from None
            if event is h11.PAUSED:  # only after the answer's end, where nobody reads on
                raise BadResponse("data after the end of the answer")
            if event is not h11.NEED_DATA:
                assert isinstance(event, h11.Event)
                return event
            if self._read_timeout is None:
                data = await self._reader.read(READ_SIZE)
            else:
                async with asyncio.timeout(self._read_timeout):
                    data = await self._reader.read(READ_SIZE)
            self._received += len(data)
            self._conn.receive_data(data)  # b"": the peer closed
        raise BadResponse("an answer without end")

    async def head(self) -> tuple[int, dict[str, str]]:
        """The final answer's status and headers (informational 1xx answers skipped)."""
        for _ in range(100):
            event = await self.next_event()
            if isinstance(event, h11.Response):
                if self._received - len(self._conn.trailing_data[0]) > MAX_HEAD:
                    raise BadResponse(f"response head longer than {MAX_HEAD} bytes")
                return event.status_code, _headers(event.headers)
            if not isinstance(event, h11.InformationalResponse):
                raise BadResponse("the answer is not HTTP/1.x")
        raise BadResponse("too many informational answers")

    async def body(self) -> AsyncIterator[bytes]:
        """The body as it arrives: chunked, by Content-Length, or until the connection closes."""
        for _ in range(1 << 40):
            event = await self.next_event()
            if isinstance(event, h11.Data):
                if event.data:
                    yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return
            else:
                raise BadResponse("the answer is not HTTP/1.x")


async def _send(
    conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, body: bytes | None
) -> None:
    try:
        writer.write(conn.send(request) or b"")
        if body:
            writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
    except h11.LocalProtocolError as exc:
        raise ValueError(f"not a valid HTTP/1.1 request ({_reason(exc)})") from None
    await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


async def request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    time_limit: float = 30.0,
    max_body: int = MAX_BODY,
) -> Response:
    """One request, its whole answer; ``TimeoutError`` when all of it takes longer than ``time_limit``."""
    target, path = Target.parse(url)
    event = _make_request(method, path, target, headers or {}, body)
    async with asyncio.timeout(time_limit):
        reader, writer = await _open(target)
        try:
            conn = _client()
            await _send(conn, writer, event, body)
            answer = _Reader(conn, reader, None)
            status, head = await answer.head()
            data = bytearray()
            async for chunk in answer.body():  # h11 knows HEAD, 204 and 304 answers carry none
                data += chunk
                if len(data) > max_body:
                    raise BadResponse(f"the answer is larger than {max_body} bytes")
            return Response(status, head, bytes(data))
        finally:
            await _close(writer)


def _client() -> h11.Connection:
    return h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)


@dataclass(slots=True, eq=False)  # compared and hashed by identity (kept in sets)
class Stream:
    """An answer whose body is read as it arrives (``chunks()``)."""

    status: int
    headers: Mapping[str, str]
    _answer: _Reader
    _writer: asyncio.StreamWriter

    @property
    def content_type(self) -> str:
        return media_type(self.headers)

    def abort(self) -> None:
        """Cut the connection now: a reader waiting in ``chunks()`` gets ``BadResponse`` or the end."""
        self._writer.transport.abort()

    def chunks(self) -> AsyncIterator[bytes]:
        return self._answer.body()

    async def read_bounded(self, limit: int) -> bytes:
        data = bytearray()
        async for chunk in self.chunks():
            data += chunk
            if len(data) >= limit:
                break
        return bytes(data[:limit])


@contextlib.asynccontextmanager
async def stream(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    connect_timeout: float = 30.0,
    read_timeout: float | None = None,
) -> AsyncIterator[Stream]:
    """GET ``url``; the answer's head within ``connect_timeout``, its body read by the caller,
    each read within ``read_timeout`` (None: unbounded). The connection closes with the block."""
    target, path = Target.parse(url)
    event = _make_request("GET", path, target, headers or {}, None)
    async with asyncio.timeout(connect_timeout):
        reader, writer = await _open(target)
    try:
        conn = _client()
        answer = _Reader(conn, reader, read_timeout)
        async with asyncio.timeout(connect_timeout):
            await _send(conn, writer, event, None)
            status, head = await answer.head()
        yield Stream(status, head, answer, writer)
    finally:
        await _close(writer)


# ---- the server


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, doc: Any, status: int = 200, **kw: Any) -> Reply:
        return cls(status, json.dumps(doc, ensure_ascii=False).encode(), **kw)


Handler = Callable[[str, str, dict[str, str]], Awaitable[Reply]]


async def _read_request(reader: asyncio.StreamReader, conn: h11.Connection) -> h11.Request | None:
    """The request's head; None when the peer closed first (h11's errors pass on)."""
    received = 0
    for _ in range(1 << 20):
        event = conn.next_event()
        if isinstance(event, h11.Request):
            if received - len(conn.trailing_data[0]) > MAX_HEAD:  # h11 checks only what is incomplete
                raise h11.RemoteProtocolError("request head too long", error_status_hint=400)
            return event
        if event is h11.NEED_DATA:
            data = await reader.read(READ_SIZE)
            received += len(data)
            conn.receive_data(data)
        elif isinstance(event, h11.ConnectionClosed):
            return None
        else:
            raise h11.RemoteProtocolError("not a request", error_status_hint=400)
    return None


async def _reply_for(request: h11.Request | None, handler: Handler) -> Reply:
    if request is None:
        return Reply.json({"title": "bad request", "status": 400}, 400)
    headers = _headers(request.headers)
    if headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers:
        return Reply.json({"title": "request body not accepted", "status": 413}, 413)
    path, _, query = request.target.decode("latin-1").partition("?")
    try:
        return await handler(request.method.decode("latin-1"), unquote(path), dict(parse_qsl(query)))
    except Exception:  # a handler's bug is a 500, never a dropped connection
        return Reply.json({"title": "internal error", "status": 500}, 500)


def _response(reply: Reply) -> h11.Response:
    fields = [("Content-Type", reply.content_type), ("Content-Length", str(len(reply.body))),
              ("Connection", "close"), *reply.headers.items()]  # fmt: skip
    return h11.Response(status_code=reply.status, headers=fields, reason=REASONS.get(reply.status, "Status"))


async def _answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler, time_limit: float
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    try:
        async with asyncio.timeout(time_limit):
            try:
                request = await _read_request(reader, conn)
                if request is None:
                    return
            except h11.RemoteProtocolError:  # malformed, or a head over MAX_HEAD: 400, h11 allows it
                request = None
            reply = await _reply_for(request, handler)
            try:
                response = _response(reply)
            except h11.LocalProtocolError:  # a handler's header h11 refuses (say, a line break)
                reply = Reply.json({"title": "internal error", "status": 500}, 500)
                response = _response(reply)
            writer.write(conn.send(response) or b"")
            if request is None or request.method != b"HEAD":  # h11 sends no body after HEAD
                writer.write(conn.send(h11.Data(data=reply.body)) or b"")
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
    except (TimeoutError, OSError):
        pass
    finally:
        await _close(writer)


async def serve(handler: Handler, host: str, port: int, *, time_limit: float = 10.0) -> asyncio.Server:
    """A listening server answering each connection's one request with ``handler`` (each
    connection gets ``time_limit`` seconds for its request and answer)."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _answer(reader, writer, handler, time_limit)

    return await asyncio.start_server(on_connect, host, port, limit=MAX_HEAD)

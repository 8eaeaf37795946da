"""Minimal HTTP/1.1 over asyncio streams, for the agent: a client and a small server.

The agent speaks a few kinds of HTTP: JSON requests to the config server, one long
Server-Sent Events stream from it, a POST to ``--reload-url``, GETs of ``--health-url``,
and it answers probes and metrics scrapes on :8081. aiohttp would do all of that, but
importing it (with the TLS contexts it builds at import) costs an agent about 15 MB of
resident memory, more than a third of its budget, so the agent does it with the standard
library instead:

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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_HEAD = 64 * 1024  # status line and headers
MAX_BODY = 256 * 1024 * 1024  # a whole answer read by ``request``
MAX_CHUNK_LINE = 1024
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


def _head(method: str, path: str, target: Target, headers: Mapping[str, str], body: bytes | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {target.host_header}", f"User-Agent: {USER_AGENT}",
             "Accept-Encoding: identity", "Connection: close"]  # fmt: skip
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name[:40]!r} holds a line break")
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise BadResponse(f"response head longer than {MAX_HEAD} bytes") from None
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise BadResponse("the connection closed before an answer") from None
        raise BadResponse("the connection closed in the middle of the response head") from None
    status_line, _, rest = raw.decode("latin-1").partition("\r\n")
    version, _, tail = status_line.partition(" ")
    code = tail[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise BadResponse("the answer is not HTTP/1.x")
    return int(code), parse_headers(rest)


def parse_headers(text: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in text.split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadResponse("a header line without ':'")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return headers


async def _body_chunks(
    reader: asyncio.StreamReader, headers: Mapping[str, str], read_timeout: float | None
) -> AsyncIterator[bytes]:
    """The body as it arrives: chunked, by Content-Length, or until the connection closes."""

    async def bounded(read: Awaitable[bytes]) -> bytes:
        if read_timeout is None:
            return await read
        async with asyncio.timeout(read_timeout):
            return await read

    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            for _ in range(1 << 40):
                line = await bounded(reader.readuntil(b"\r\n"))
                size_text = line.split(b";", 1)[0].strip()
                if len(line) > MAX_CHUNK_LINE or not size_text:
                    raise BadResponse("malformed chunk size line")
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise BadResponse("malformed chunk size line") from None
                if size == 0:
                    for _ in range(1000):  # trailers, up to the blank line
                        if await bounded(reader.readuntil(b"\r\n")) == b"\r\n":
                            return
                    raise BadResponse("too many trailer lines")
                yield await bounded(reader.readexactly(size))
                if await bounded(reader.readexactly(2)) != b"\r\n":
                    raise BadResponse("a chunk not followed by CRLF")
            return
        length_text = headers.get("content-length")
        if length_text is not None:
            if not length_text.isdigit():
                raise BadResponse("malformed Content-Length")
            remaining = int(length_text)
            while remaining > 0:
                data = await bounded(reader.read(min(READ_SIZE, remaining)))
                if not data:
                    raise BadResponse("the body ended before its Content-Length")
                remaining -= len(data)
                yield data
            return
        while data := await bounded(reader.read(READ_SIZE)):
            yield data
    except asyncio.IncompleteReadError:
        raise BadResponse("the body was cut short") from None
    except asyncio.LimitOverrunError:
        raise BadResponse("malformed chunked body") from None


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
    head_bytes = _head(method, path, target, headers or {}, body)
    async with asyncio.timeout(time_limit):
        reader, writer = await _open(target)
        try:
            writer.write(head_bytes)
            if body:
                writer.write(body)
            await writer.drain()
            status, head = await _read_head(reader)
            data = bytearray()
            if method != "HEAD" and status not in (204, 304) and not 100 <= status < 200:
                async for chunk in _body_chunks(reader, head, None):
                    data += chunk
                    if len(data) > max_body:
                        raise BadResponse(f"the answer is larger than {max_body} bytes")
            return Response(status, head, bytes(data))
        finally:
            await _close(writer)


@dataclass(slots=True, eq=False)  # compared and hashed by identity (kept in sets)
class Stream:
    """An answer whose body is read as it arrives (``chunks()``)."""

    status: int
    headers: Mapping[str, str]
    _reader: asyncio.StreamReader
    _writer: asyncio.StreamWriter
    _read_timeout: float | None

    @property
    def content_type(self) -> str:
        return media_type(self.headers)

    def abort(self) -> None:
        """Cut the connection now: a reader waiting in ``chunks()`` gets ``BadResponse`` or the end."""
        self._writer.transport.abort()

    def chunks(self) -> AsyncIterator[bytes]:
        return _body_chunks(self._reader, self.headers, self._read_timeout)

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
    head_bytes = _head("GET", path, target, headers or {}, None)
    async with asyncio.timeout(connect_timeout):
        reader, writer = await _open(target)
    try:
        async with asyncio.timeout(connect_timeout):
            writer.write(head_bytes)
            await writer.drain()
            status, head = await _read_head(reader)
        yield Stream(status, head, reader, writer, read_timeout)
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


async def _answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler, time_limit: float
) -> None:
    try:
        async with asyncio.timeout(time_limit):
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError):
                return
            request_line, _, rest = raw.decode("latin-1").partition("\r\n")
            parts = request_line.split(" ")
            try:
                headers = parse_headers(rest)
            except BadResponse:
                headers = None
            if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or headers is None:
                reply = Reply.json({"title": "bad request", "status": 400}, 400)
                method = "GET"
            elif headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers:
                method = parts[0]
                reply = Reply.json({"title": "request body not accepted", "status": 413}, 413)
            else:
                method, target = parts[0], parts[1]
                path, _, query = target.partition("?")
                try:
                    reply = await handler(method, unquote(path), dict(parse_qsl(query)))
                except Exception:  # a handler's bug is a 500, never a dropped connection
                    reply = Reply.json({"title": "internal error", "status": 500}, 500)
            head = [f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Status')}",
                    f"Content-Type: {reply.content_type}", f"Content-Length: {len(reply.body)}",
                    "Connection: close", *(f"{k}: {v}" for k, v in reply.headers.items())]  # fmt: skip
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            if method != "HEAD":
                writer.write(reply.body)
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

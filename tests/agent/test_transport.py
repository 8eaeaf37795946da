"""The agent's own HTTP/1.1 client (``agent.http1``) and REST + SSE transport (``agent.transport``).

The client is checked against peers that answer in each way HTTP allows (Content-Length,
chunked, until close) and in ways it does not (cut short, not HTTP, too large, silent);
the transport against a real server: listings, resolved reads, the watch stream, errors
mapped onto ``shared.errors``, and HTTPS with the CA from SSL_CERT_FILE, as in a pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from agent import http1
from agent.transport import AgentClient, RestTransport
from shared.errors import InvalidInput, NotFound, ProtocolError, Unauthenticated, Unavailable
from shared.sdk import Change
from tests.agent.agent_support import Setup, run_init
from tests.server.auth.pki import CA
from tests.support import REPO, ServerProcess, free_port

RawPeer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_peer(answer: RawPeer) -> AsyncIterator[str]:
    """A TCP server on a free loopback port that reads the request head and runs ``answer``."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await answer(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


def sends(data: bytes, *, then_wait: float = 0.0) -> RawPeer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        if then_wait:
            await asyncio.sleep(then_wait)

    return answer


@contextlib.asynccontextmanager
async def aiohttp_peer(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class TestClient:
    async def test_content_length_body_and_headers(self) -> None:
        """A Content-Length body is read whole; the request carries method, headers and body."""
        seen: dict[str, object] = {}

        async def echo(request: web.Request) -> web.Response:
            seen.update(method=request.method, auth=request.headers.get("X-Test"), body=await request.read())
            return web.json_response({"ok": True}, status=201)

        app = web.Application()
        app.router.add_route("*", "/x", echo)
        async with aiohttp_peer(app) as url:
            reply = await http1.request("PUT", url + "/x?a=1", headers={"X-Test": "t"}, body=b"{}")
        assert reply.status == 201 and reply.content_type == "application/json"
        assert reply.body == b'{"ok": true}'
        assert seen == {"method": "PUT", "auth": "t", "body": b"{}"}

    async def test_chunked_body_streams_as_it_arrives(self) -> None:
        """A chunked body is handed over chunk by chunk, before the answer ends."""
        release = asyncio.Event()

        async def chunked(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(b"first;")
            await release.wait()
            await response.write(b"second")
            await response.write_eof()
            return response

        app = web.Application()
        app.router.add_get("/s", chunked)
        async with aiohttp_peer(app) as url, http1.stream(url + "/s", read_timeout=10) as answer:
            chunks = answer.chunks()
            assert await anext(chunks) == b"first;"  # arrives while the peer still holds the rest
            release.set()
            rest = b"".join([chunk async for chunk in chunks])
        assert rest == b"second"

    async def test_body_until_close(self) -> None:
        """Without Content-Length or chunking, the body lasts until the peer closes."""
        async with raw_peer(sends(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")) as url:
            reply = await http1.request("GET", url)
        assert (reply.status, reply.body) == (200, b"all of it")

    @pytest.mark.parametrize(
        "answer",
        [
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",  # cut short
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",  # chunk cut short
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # not a chunk size
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n",  # not HTTP
            b"",  # closed without a word
        ],
    )
    async def test_broken_answers_are_bad_responses(self, answer: bytes) -> None:
        async with raw_peer(sends(answer)) as url:
            with pytest.raises(http1.BadResponse):
                await http1.request("GET", url)

    async def test_body_limit(self) -> None:
        """An answer larger than max_body is refused, not read into memory."""
        big = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000
        async with raw_peer(sends(big)) as url:
            with pytest.raises(http1.BadResponse, match="larger than 1000 bytes"):
                await http1.request("GET", url, max_body=1000)

    async def test_time_limit_and_read_timeout(self) -> None:
        """A silent peer: request() gives up after its time limit, a stream after its read timeout."""
        async with raw_peer(sends(b"", then_wait=30)) as url:
            with pytest.raises(TimeoutError):
                await http1.request("GET", url, time_limit=0.3)
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        async with raw_peer(sends(head, then_wait=30)) as url, http1.stream(url, read_timeout=0.3) as answer:
            chunks = answer.chunks()
            assert await anext(chunks) == b"abc"
            with pytest.raises(TimeoutError):
                await anext(chunks)

    async def test_refused(self) -> None:
        with pytest.raises(ConnectionRefusedError):
            await http1.request("GET", f"http://127.0.0.1:{free_port()}/")

    async def test_header_injection_refused(self) -> None:
        with pytest.raises(ValueError, match="line break"):
            await http1.request("GET", f"http://127.0.0.1:{free_port()}/", headers={"X": "a\r\nEvil: 1"})


@pytest.fixture
def setup(server: ServerProcess, tenant: dict[str, str], tmp_path: Path) -> Setup:
    return Setup(server, tenant["token"], tenant["id"], tmp_path)


class TestRestTransport:
    async def test_list_get_whoami_against_the_server(self, setup: Setup) -> None:
        """Listings, resolved reads and whoami come back in the REST API's shapes."""
        await asyncio.to_thread(setup.put, "app/web", "site", {"greeting": "hi"})
        async with AgentClient(setup.url(), setup.tenant_id, setup.token, cache_enabled=False) as client:
            items = await client.list("app/web", "production", resolve=True)
            assert [(i["namespace"], i["key"], i["value"]) for i in items] == [
                ("app/web", "site", {"greeting": "hi"})
            ]
            entry = await client.get_entry("app/web", "site", "production")
            assert entry["value"] == {"greeting": "hi"} and isinstance(entry["revision"], int)
            transport = await client._ready()
            assert isinstance(transport, RestTransport)  # not the SDK's aiohttp one
            with pytest.raises(NotFound):
                await client.get_entry("app/web", "missing", "production")

    async def test_watch_delivers_changes(self, setup: Setup) -> None:
        """The SSE watch: a progress mark first, then the change made after it."""
        async with AgentClient(setup.url(), None, setup.token, cache_enabled=False) as client:
            stream = client.watch("app/watched", environment="production", progress=True, progress_interval=1)
            try:
                first = await asyncio.wait_for(anext(stream), 10)
                assert first.type == "progress"
                revision = await asyncio.to_thread(setup.put, "app/watched", "k", {"v": 1})
                for _ in range(20):
                    event = await asyncio.wait_for(anext(stream), 10)
                    if isinstance(event, Change):
                        break
                assert isinstance(event, Change)
                assert (event.key, event.value, event.revision) == ("k", {"v": 1}, revision)
            finally:
                await stream.aclose()

    async def test_close_ends_an_open_watch(self, setup: Setup) -> None:
        """Closing the client ends a watch waiting for events at once (not after its read timeout)."""
        client = AgentClient(setup.url(), None, setup.token, cache_enabled=False)
        stream = client.watch("app/closing", environment="production", progress=True, progress_interval=10)
        assert (await asyncio.wait_for(anext(stream), 10)).type == "progress"
        waiting = asyncio.create_task(anext(stream))
        await asyncio.sleep(0.2)
        await client.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 5)

    async def test_errors(self, setup: Setup) -> None:
        """A bad token is Unauthenticated, a dead port Unavailable naming the server, never the token."""
        async with AgentClient(setup.url(), None, "lcm_not_a_real_token_0000", cache_enabled=False) as client:
            with pytest.raises(Unauthenticated) as refused:
                await client.list("app", "production")
            assert "lcm_not_a_real_token_0000" not in str(refused.value.detail)
        dead = f"http://127.0.0.1:{free_port()}"
        async with AgentClient(dead, None, setup.token, cache_enabled=False) as client:
            with pytest.raises(Unavailable, match=f"cannot reach server {dead}: connection refused") as down:
                await client.list("app", "production")
            assert setup.token not in str(down.value.detail)

    def test_server_url_without_credentials(self) -> None:
        """A password in the server URL is refused before it could reach a message."""
        with pytest.raises(InvalidInput, match="must not carry credentials") as refused:
            RestTransport("http://user:hunter2@127.0.0.1:1", "lcm_x", timeout=1)
        assert "hunter2" not in refused.value.detail

    async def test_not_json_is_a_protocol_error(self) -> None:
        async def html(request: web.Request) -> web.Response:
            return web.Response(text="<html>proxy</html>")

        app = web.Application()
        app.router.add_get("/v1/configs", html)
        async with aiohttp_peer(app) as url:
            transport = RestTransport(url, "lcm_x", timeout=10)
            with pytest.raises(ProtocolError, match="not JSON"):
                await transport.list("app", "production", True)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, CA]]:
    directory = tmp_path_factory.mktemp("agent-tls")
    ca = CA(directory, "agent")
    leaf = ca.server_leaf()
    server = ServerProcess(directory / "data", tls=ca.client_context())
    with server.running("--tls-cert", str(leaf.cert), "--tls-key", str(leaf.key)):
        yield server, ca


class TestHttps:
    def test_init_over_https_with_the_ca_from_ssl_cert_file(
        self, tls_server: tuple[ServerProcess, CA], tmp_path: Path
    ) -> None:
        """As the seed's pod runs it: https:// and SSL_CERT_FILE naming the CA; the files are written."""
        server, ca = tls_server
        setup = Setup(server, server.token, server.tenant_id, tmp_path)
        setup.put("app/tls", "conf", {"v": 1})
        env = setup.env("app/tls", SSL_CERT_FILE=str(ca.cert_path))
        env["CONFIG_SERVER"] = f"https://127.0.0.1:{server.port}"
        done = run_init(env)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "config" / "app" / "tls" / "conf.json").read_text() == '{"v":1}\n'

    def test_untrusted_certificate_fails_at_once_with_one_line(
        self, tls_server: tuple[ServerProcess, CA], tmp_path: Path
    ) -> None:
        """Without the CA, init does not retry for a minute: one line says what to do."""
        server, _ = tls_server
        setup = Setup(server, server.token, server.tenant_id, tmp_path)
        env = setup.env("app/tls", LLMCM_AGENT_INIT_TIMEOUT="60s")
        env.pop("SSL_CERT_FILE", None)
        env["CONFIG_SERVER"] = f"https://127.0.0.1:{server.port}"
        done = run_init(env, timeout=40)
        assert done.returncode == 1
        last = done.stderr.strip().splitlines()[-1]
        assert "TLS certificate this client does not trust" in last and "SSL_CERT_FILE" in last
        assert server.token not in done.stderr

    async def test_plain_http_client_to_tls_port(self, tls_server: tuple[ServerProcess, CA]) -> None:
        """http:// to the TLS port is Unavailable (no HTTP answer), not a hang."""
        server, _ = tls_server
        transport = RestTransport(f"http://127.0.0.1:{server.port}", "lcm_x", timeout=5)
        with pytest.raises(Unavailable):
            await transport.whoami()


def test_agent_never_imports_aiohttp_or_prometheus() -> None:
    """The modes' modules load without aiohttp, prometheus_client, jinja2, yaml, cryptography, grpc."""
    code = (
        "import sys, agent.main, agent.core, agent.health, agent.readapi, agent.transport\n"
        "heavy = ('aiohttp', 'prometheus_client', 'jinja2', 'yaml', 'cryptography', 'grpc', 'psutil')\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    argv = [sys.executable, "-c", code]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True, cwd=REPO)
    assert done.stdout.strip() == ""


def test_tls_context_is_the_default_one() -> None:
    """https:// trusts what ssl's default context trusts (SSL_CERT_FILE / SSL_CERT_DIR included)."""
    context = http1.tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname

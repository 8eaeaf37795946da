"""SYNC_INTERVAL as the fallback when streaming is unavailable: behind a proxy that refuses the
watch stream, the sidecar still gets every change by polling."""

from __future__ import annotations

import http.client
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.agent_support import Setup, read_json, running, sample_app, wait_until
from tests.support import ServerProcess


class NoStreamProxy:
    """Forwards every request to the server except ``GET /v1/watch``, which gets a 404."""

    def __init__(self, upstream: int) -> None:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                if self.path.startswith("/v1/watch"):
                    proxy.refused += 1
                    body = json.dumps({"title": "Not Found", "status": 404, "detail": "no streaming here"})
                    self._answer(404, "application/problem+json", body.encode())
                    return
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=30)
                try:
                    hop = ("host", "connection")
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
                    conn.request(self.command, self.path, body=data, headers=headers)
                    reply = conn.getresponse()
                    self._answer(reply.status, reply.getheader("Content-Type", ""), reply.read())
                finally:
                    conn.close()

            def _answer(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = _forward

            def log_message(self, *a: object) -> None:
                pass

        self.refused = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> NoStreamProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def setup(server: ServerProcess, tenant: dict[str, str], tmp_path: Path) -> Setup:
    return Setup(server, tenant["token"], tenant["id"], tmp_path)


@pytest.fixture
def proxy(server: ServerProcess) -> Iterator[NoStreamProxy]:
    with NoStreamProxy(server.port) as running_proxy:
        yield running_proxy


def test_polls_when_the_watch_stream_is_refused(setup: Setup, proxy: NoStreamProxy) -> None:
    setup.put("app", "settings", {"v": 1})
    env = setup.env("app", CONFIG_SERVER=f"http://127.0.0.1:{proxy.port}", SYNC_INTERVAL="1s")
    path = setup.tmp / "config" / "app" / "settings.json"
    with (
        sample_app(setup.tmp) as app,
        running(env, "watch", "--pid-file", str(app.pid_file), log_path=setup.tmp / "agent.log") as agent,
    ):
        agent.wait_for("watch_failed")
        wait_until(lambda: read_json(path) == {"v": 1}, timeout=15, what="first poll")

        def first_reload_done() -> bool:
            # the first set is written before the app is signalled: count only once that signal
            # (if any) has been sent and recorded, or a slow machine sees it land after the count
            sent = len(agent.events("app_signalled"))
            return (sent >= 1 or bool(agent.events("app_not_reloaded"))) and len(app.signals()) == sent

        wait_until(first_reload_done, what="the first set's reload")
        signals = len(app.signals())
        setup.put("app", "settings", {"v": 2})
        wait_until(lambda: read_json(path) == {"v": 2}, timeout=15, what="change picked up by a poll")
        wait_until(lambda: len(app.signals()) == signals + 1, what="one SIGHUP")
        assert proxy.refused >= 1
        assert agent.events("polled")

"""Read throughput of a resolved config: the project's server against a bare aiohttp handler.

Why this exists: the hot path of the config server is an agent or an application
reading one resolved config by key (``GET /v1/configs/{namespace}/{key}?env=production
&resolve=true``). That read goes through authentication, authorization, the
per-tenant cache and JSON encoding. This script measures how much all of that
costs compared with the floor: a bare aiohttp handler that returns the very same
bytes on the same path. Both are measured the same way, in the same run, on the
same machine, alternately, so the ratio is meaningful even where the absolute
figures are not. The target is a ratio of at least 0.60.

How to run it, from the repository root:

    .venv/bin/python bench/read_throughput.py
    .venv/bin/python bench/read_throughput.py --duration 5 --rounds 1 --connections 32

What it does:

1. ``llm-config-server init`` into a temporary data directory, then ``serve`` on a
   free loopback port, and waits (bounded) for ``GET /health/ready``.
2. Writes a ~1 KB model-endpoint config for ``llm-gateway/routing`` / ``primary-model``:
   a global layer and a production override.
3. Reads the resolved production value once; those bytes are what the bare handler serves.
4. Starts the bare aiohttp handler in another process (this file, ``_bare`` mode).
5. Loads both with ``wrk`` when it is on PATH (``-t1 -c N --latency``, with a 2 s warm-up
   of each first), else with a Python load generator in another process (this file,
   ``_loadgen`` mode), alternating server, bare, server, bare ... for ``--rounds`` rounds.
6. Prints each round, the median req/s and p99 of each target, and the ratio.

It exits 0 once the report is printed, whether or not the ratio reaches the target
(it is a report, not a test), and 1 when something needed to run it failed. Both
servers are stopped and the temporary directory is removed in every case.
Everything listens and connects on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
NAMESPACE = "llm-gateway/routing"
KEY = "primary-model"
READ_PATH = f"/v1/configs/{NAMESPACE}/{KEY}"
READ_QUERY = "env=production&resolve=true"
TARGET_RATIO = 0.60
READY_TIMEOUT_S = 30.0
INIT_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
WARMUP_S = 2
LOG_TAIL_CHARS = 3000
PY_LOADGEN_MAX_REQUESTS = 50_000_000  # per run: a bound on the loop, far above what one process can do
PY_LOADGEN_REQUEST_TIMEOUT_S = 10.0

# A realistic model-endpoint config (it follows the built-in "model-endpoint" schema, plus the
# kind of extra routing fields gateways keep next to it). The resolved value is about 1 KB.
GLOBAL_LAYER: dict[str, Any] = {
    "provider": "openai",
    "model": "gpt-4o-mini",
    "endpoint": "https://llm-gateway.internal.example.com/v1",
    "api_version": "2024-06-01",
    "region": "us-east-1",
    "max_tokens": 1024,
    "temperature": 0.2,
    "top_p": 0.95,
    "timeout_seconds": 30,
    "max_retries": 3,
    "rate_limit": {"requests_per_minute": 600, "tokens_per_minute": 200000},
    "fallback": [
        {"provider": "azure-openai", "model": "gpt-4o-mini", "endpoint": "https://aoai-eastus.example.com"},
        {"provider": "anthropic", "model": "claude-3-5-haiku-latest"},
    ],
    "secrets": [{"field_path": "api_key", "secret_ref": "openai/api-key"}],
    "routing": {
        "strategy": "weighted",
        "sticky_sessions": False,
        "health_check_interval_seconds": 15,
        "retry_on_status": [408, 429, 500, 502, 503, 504],
        "retry_backoff_ms": [250, 500, 1000],
    },
    "observability": {"log_prompts": False, "sample_rate": 0.05, "trace_header": "x-request-id"},
    "headers": {"x-gateway-client": "llm-config-manager", "x-team": "platform-ml"},
    "tags": ["chat", "default", "tier-1"],
}
PRODUCTION_LAYER: dict[str, Any] = {
    "model": "gpt-4o",
    "endpoint": "https://llm-gateway.prod.example.com/v1",
    "region": "us-east-2",
    "max_tokens": 2048,
    "temperature": 0.1,
    "rate_limit": {"requests_per_minute": 6000, "tokens_per_minute": 2000000},
    "routing": {"sticky_sessions": True},
    "observability": {"sample_rate": 0.01},
    "tags": ["chat", "default", "tier-1", "production"],
}


class BenchError(Exception):
    """Something the benchmark needs failed to run; the message says what."""


@dataclass(frozen=True, slots=True)
class Measurement:
    rps: float
    p99_ms: float
    requests: int
    non_2xx: int
    errors: int


@dataclass(slots=True)
class Child:
    """A process this script started, with the file its output goes to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-LOG_TAIL_CHARS:]


# -- processes ---------------------------------------------------------------------------------


def run_bounded(name: str, argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a load tool to completion; kill and reap it on timeout or on any interruption."""
    popen = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{name} did not finish within {timeout:.0f} s") from exc
    finally:
        if popen.poll() is None:
            popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=STOP_TIMEOUT_S)
    return subprocess.CompletedProcess(list(argv), popen.returncode, stdout, stderr)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def start_child(name: str, argv: Sequence[str], log_path: Path, *, stdin: int = subprocess.DEVNULL) -> Child:
    # A session of its own, so stopping it can reach any worker it forks (its process group id is
    # its pid), and a Ctrl-C in the terminal reaches only this script, which then stops it.
    # ``stdin=subprocess.PIPE``: a child that exits when its stdin closes gets a pipe this run holds.
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            list(argv),
            cwd=REPO_ROOT,
            stdin=stdin,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Child(name, popen, log_path)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop_child(child: Child) -> None:
    """SIGTERM the child's process group, then SIGKILL it if it has not exited in time."""
    pid = child.popen.pid
    if child.popen.poll() is None:
        _signal_group(pid, signal.SIGTERM)
        try:
            child.popen.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"  {child.name} (pid {pid}) ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s; sending SIGKILL")
    # Anything left in its group (the leader included, if it hung) goes now.
    _signal_group(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.popen.wait(timeout=STOP_TIMEOUT_S)


# -- HTTP setup requests (stdlib, no proxies) ---------------------------------------------------


def http_request(
    port: int,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: dict[str, Any] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes, str]:
    """One request to 127.0.0.1:port; returns (status, body, content-type)."""
    headers: dict[str, str] = {}
    data: bytes | None = None
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("Content-Type", "")
    finally:
        conn.close()


def wait_ready(child: Child, port: int, path: str, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    for _ in range(int(timeout / 0.1) + 1):
        if child.popen.poll() is not None:
            raise BenchError(
                f"{child.name} exited with code {child.popen.returncode} before it was ready; "
                f"its output:\n{child.log_tail()}"
            )
        try:
            status, body, _ = http_request(port, "GET", path, timeout=2.0)
            if status == 200:
                return
            last = f"HTTP {status}: {body[:200]!r}"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    raise BenchError(
        f"{child.name} was not ready on {HOST}:{port}{path} within {timeout:.0f} s (last: {last}); "
        f"its output:\n{child.log_tail()}"
    )


# -- the project's server ------------------------------------------------------------------------


def server_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "server.main", *args]


def parse_init_output(stdout: str) -> tuple[str, str]:
    candidates = [stdout, *reversed(stdout.splitlines())]
    for text in candidates:
        try:
            doc = json.loads(text)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("token"), str):
            return str(doc.get("tenant_id", "")), doc["token"]
    raise BenchError(
        f"init --json printed no JSON object with a token; stdout was:\n{stdout[-LOG_TAIL_CHARS:]}"
    )


def init_server(data_dir: Path) -> tuple[str, str]:
    argv = server_argv("init", "--data", str(data_dir), "--json")
    try:
        done = subprocess.run(
            argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=INIT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"init did not finish within {INIT_TIMEOUT_S:.0f} s: {' '.join(argv)}") from exc
    if done.returncode != 0:
        raise BenchError(
            f"init exited with code {done.returncode}: {' '.join(argv)}\n"
            f"stdout:\n{done.stdout[-LOG_TAIL_CHARS:]}\nstderr:\n{done.stderr[-LOG_TAIL_CHARS:]}"
        )
    return parse_init_output(done.stdout)


def put_config(port: int, token: str, env: str, value: dict[str, Any], message: str) -> None:
    path = f"{READ_PATH}?env={env}"
    status, body, _ = http_request(port, "PUT", path, token=token, body={"value": value, "message": message})
    if not 200 <= status < 300:
        raise BenchError(f"PUT {path} answered HTTP {status}: {body[:500]!r}")


def seed_and_read(port: int, token: str) -> bytes:
    """Write the global layer and the production override; return the resolved read's bytes."""
    put_config(port, token, "global", GLOBAL_LAYER, "bench: model endpoint defaults")
    put_config(port, token, "production", PRODUCTION_LAYER, "bench: production override")
    path = f"{READ_PATH}?{READ_QUERY}"
    status, body, content_type = http_request(port, "GET", path, token=token)
    if status != 200:
        raise BenchError(f"GET {path} answered HTTP {status}: {body[:500]!r}")
    if "json" not in content_type:
        raise BenchError(f"GET {path} answered content-type {content_type!r}, expected JSON")
    doc = json.loads(body)
    if not isinstance(doc, dict) or doc.get("value", {}).get("model") != PRODUCTION_LAYER["model"]:
        raise BenchError(f"GET {path} did not return the production-resolved value: {body[:500]!r}")
    return body


# -- the bare aiohttp handler (runs in its own process: `_bare` mode) ----------------------------


def run_bare_server(port: int, path: str, body_file: Path) -> None:
    body = body_file.read_bytes()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get(path, handler)
    web.run_app(app, host=HOST, port=port, access_log=None, print=None)


# -- load: wrk --------------------------------------------------------------------------------------

_UNIT_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_RPS_RE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_P99_RE = re.compile(r"^\s+99(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_TOTAL_RE = re.compile(r"^\s+(\d+) requests in ", re.MULTILINE)
_NON2XX_RE = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_RE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse_wrk(output: str) -> Measurement:
    rps = _RPS_RE.search(output)
    p99 = _P99_RE.search(output)
    total = _TOTAL_RE.search(output)
    if rps is None or p99 is None or total is None:
        raise BenchError(f"could not parse wrk's output:\n{output[-LOG_TAIL_CHARS:]}")
    non_2xx = _NON2XX_RE.search(output)
    sockets = _SOCKET_RE.search(output)
    return Measurement(
        rps=float(rps.group(1)),
        p99_ms=float(p99.group(1)) * _UNIT_TO_MS[p99.group(2)],
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
    )


def run_wrk(wrk: str, url: str, token: str, connections: int, duration: int) -> Measurement:
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-H",
        f"Authorization: Bearer {token}",
        url,
    ]
    done = run_bounded("wrk", argv, timeout=duration + 60)
    if done.returncode != 0:
        raise BenchError(f"wrk exited with code {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return parse_wrk(done.stdout)


def wrk_version(wrk: str) -> str:
    try:
        done = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "wrk"
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0].strip() if first else "wrk"


# -- load: the Python fallback (runs in its own process: `_loadgen` mode) ---------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return math.nan
    index = max(0, math.ceil(fraction * len(sorted_values)) - 1)
    return sorted_values[index]


async def _loadgen(url: str, token: str, connections: int, duration: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    counts = {"non_2xx": 0, "errors": 0}
    timeout = ClientTimeout(total=PY_LOADGEN_REQUEST_TIMEOUT_S)
    per_worker_cap = PY_LOADGEN_MAX_REQUESTS // max(1, connections)
    connector = TCPConnector(limit=connections)
    async with ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        deadline = start + duration

        async def worker() -> None:
            for _ in range(per_worker_cap):
                t0 = time.perf_counter()
                if t0 >= deadline:
                    return
                try:
                    async with session.get(url, headers=headers) as resp:
                        await resp.read()
                        if not 200 <= resp.status < 400:
                            counts["non_2xx"] += 1
                except (ClientError, TimeoutError):
                    counts["errors"] += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p99_ms": percentile(latencies, 0.99) * 1000.0,
        "non_2xx": counts["non_2xx"],
        "errors": counts["errors"],
    }


def run_python_loadgen(url: str, token: str, connections: int, duration: int) -> Measurement:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_loadgen",
        "--url",
        url,
        "--token",
        token,
        "--connections",
        str(connections),
        "--duration",
        str(duration),
    ]
    done = run_bounded("the Python load generator", argv, timeout=duration + 60)
    if done.returncode != 0:
        raise BenchError(f"the Python load generator exited with code {done.returncode}:\n{done.stderr}")
    try:
        doc = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise BenchError(
            f"the Python load generator printed no result:\n{done.stdout}\n{done.stderr}"
        ) from exc
    return Measurement(
        rps=float(doc["rps"]),
        p99_ms=float(doc["p99_ms"]),
        requests=int(doc["requests"]),
        non_2xx=int(doc["non_2xx"]),
        errors=int(doc["errors"]),
    )


# -- the benchmark ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadTool:
    label: str
    wrk: str | None  # path to wrk, or None for the Python load generator

    def measure(self, url: str, token: str, connections: int, duration: int) -> Measurement:
        if self.wrk is not None:
            return run_wrk(self.wrk, url, token, connections, duration)
        return run_python_loadgen(url, token, connections, duration)


def choose_load_tool(requested: str) -> LoadTool:
    wrk = shutil.which("wrk")
    if requested == "wrk" and wrk is None:
        raise BenchError("--load-tool wrk was asked for, but wrk is not on PATH (Debian: apt install wrk)")
    if requested in ("auto", "wrk") and wrk is not None:
        return LoadTool(f"{wrk_version(wrk)} ({wrk}, 1 thread)", wrk)
    return LoadTool("Python load generator (aiohttp client, separate process)", None)


def check_clean(name: str, m: Measurement) -> None:
    if m.non_2xx:
        raise BenchError(
            f"{name} answered {m.non_2xx} of {m.requests} requests with a non-2xx/3xx status under load; "
            "the figures would not measure the read path"
        )
    if m.requests == 0:
        raise BenchError(f"{name} completed no requests under load")


def fmt_row(label: str, m: Measurement) -> str:
    extra = f"  ({m.requests} requests" + (f", {m.errors} socket errors" if m.errors else "") + ")"
    return f"{label:<20} {m.rps:>11.1f} {m.p99_ms:>10.2f}{extra}"


def run_benchmark(args: argparse.Namespace, work: Path, children: list[Child]) -> None:
    tool = choose_load_tool(args.load_tool)
    data_dir = work / "data"
    data_dir.mkdir()
    _, token = init_server(data_dir)

    server_port = free_port()
    server = start_child(
        "llm-config-server",
        server_argv(
            "serve", "--data", str(data_dir), "--host", HOST, "--port", str(server_port), "--grpc-port", "0"
        ),
        work / "server.log",
    )
    children.append(server)
    wait_ready(server, server_port, "/health/ready")

    body = seed_and_read(server_port, token)
    body_file = work / "resolved.json"
    body_file.write_bytes(body)

    bare_port = free_port()
    bare_argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_bare",
        "--port",
        str(bare_port),
        "--path",
        READ_PATH,
        "--body-file",
        str(body_file),
    ]
    bare = start_child("bare aiohttp handler", bare_argv, work / "bare.log")
    children.append(bare)
    wait_ready(bare, bare_port, READ_PATH)
    status, bare_body, _ = http_request(bare_port, "GET", f"{READ_PATH}?{READ_QUERY}", token=token)
    if status != 200 or bare_body != body:
        raise BenchError(f"the bare handler did not return the server's bytes (HTTP {status})")

    targets = {
        "server": f"http://{HOST}:{server_port}{READ_PATH}?{READ_QUERY}",
        "bare": f"http://{HOST}:{bare_port}{READ_PATH}?{READ_QUERY}",
    }
    print(f"read_throughput: GET {READ_PATH}?{READ_QUERY}")
    print(f"cores (os.cpu_count()): {os.cpu_count()}")
    print(f"load tool: {tool.label}")
    print(f"connections: {args.connections}   duration: {args.duration} s   rounds: {args.rounds}")
    value_bytes = len(json.dumps(json.loads(body)["value"], separators=(",", ":")).encode())
    print(f"response body: {len(body)} bytes (resolved value: {value_bytes} bytes)")
    print(f"python: {sys.version.split()[0]}   server pid {server.popen.pid}   bare pid {bare.popen.pid}")
    print()

    for name, url in targets.items():
        print(f"warm-up {name}: {WARMUP_S} s")
        tool.measure(url, token, args.connections, WARMUP_S)

    results: dict[str, list[Measurement]] = {name: [] for name in targets}
    print()
    print(f"{'round':<20} {'req/s':>11} {'p99 ms':>10}")
    for round_no in range(1, args.rounds + 1):
        for name, url in targets.items():
            m = tool.measure(url, token, args.connections, args.duration)
            check_clean(name, m)
            results[name].append(m)
            print(fmt_row(f"{round_no}  {name}", m), flush=True)

    summary = {name: summarize(ms) for name, ms in results.items()}
    ratio = summary["server"].rps / summary["bare"].rps if summary["bare"].rps > 0 else 0.0
    how = "median" if args.rounds > 1 else "single run"
    print()
    print(f"{'target (' + how + ')':<20} {'req/s':>11} {'p99 ms':>10}")
    print(fmt_row("server", summary["server"]))
    print(fmt_row("bare aiohttp", summary["bare"]))
    print()
    verdict = "PASS" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(f"ratio (server / bare): {ratio:.2f}  (target >= {TARGET_RATIO:.2f})  {verdict}")
    if tool.wrk is None:
        print(
            "note: one Python load-generator process is likely the bottleneck here; "
            "install wrk for figures that are the servers' own"
        )


def summarize(ms: Sequence[Measurement]) -> Measurement:
    return Measurement(
        rps=statistics.median(m.rps for m in ms),
        p99_ms=statistics.median(m.p99_ms for m in ms),
        requests=sum(m.requests for m in ms),
        non_2xx=sum(m.non_2xx for m in ms),
        errors=sum(m.errors for m in ms),
    )


# -- command line -----------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def bench_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        description="Resolved-config read throughput: the config server against a bare aiohttp handler."
    )
    parser.add_argument("--duration", type=positive_int, default=10, help="seconds per measured run (10)")
    parser.add_argument("--connections", type=positive_int, default=32, help="concurrent connections (32)")
    parser.add_argument("--rounds", type=positive_int, default=2, help="server/bare rounds, alternating (2)")
    parser.add_argument(
        "--load-tool",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="auto: wrk when on PATH, else the Python load generator (auto)",
    )
    args = parser.parse_args(argv)

    # SIGTERM takes the same way out as Ctrl-C, so the servers are stopped and the directory removed.
    signal.signal(signal.SIGTERM, _interrupt)
    children: list[Child] = []
    work = Path(tempfile.mkdtemp(prefix="llmcm-bench-"))
    try:
        run_benchmark(args, work, children)
    except BenchError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        for child in reversed(children):
            stop_child(child)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def bare_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="read_throughput.py _bare")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    args = parser.parse_args(argv)
    run_bare_server(args.port, args.path, args.body_file)
    return 0


def loadgen_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="read_throughput.py _loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--connections", type=positive_int, required=True)
    parser.add_argument("--duration", type=positive_int, required=True)
    args = parser.parse_args(argv)
    result = asyncio.run(_loadgen(args.url, args.token, args.connections, args.duration))
    print(json.dumps(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_bare"]:
        return bare_main(args[1:])
    if args[:1] == ["_loadgen"]:
        return loadgen_main(args[1:])
    return bench_main(args)


if __name__ == "__main__":
    sys.exit(main())

"""Change propagation: write-to-watcher latency for a fleet of watchers, this server against etcd.

Why this exists: the point of running an agent in every pod is that a change written on the
server reaches every pod that watches it, quickly. This script opens N watchers (one
connection each, spread over several client processes, as a fleet of pods has), writes M
changes through the REST API, and measures for every (write, watcher) pair the time from the
write's acknowledgement (the PUT's response received by the writer) to that watcher's
receipt of the change's revision; and, per write, the time until every watcher has it. The
same is measured against etcd (Debian's ``etcd-server``) in the same run, on the same
machine, with the same client code shape, as the peer: etcd's watch over its gRPC API
(``etcdserverpb.Watch/Watch``, writes through ``etcdserverpb.KV/Put``), with stubs compiled
at run time from ``bench/etcd_proto/etcd_watch_subset.proto``. Every gRPC watcher, ours and
etcd's, opens its channel with the options the project's SDK uses (``shared.sdk.grpc``: no
HTTP/2 bandwidth-delay probing, which costs a server a PING round trip per burst of events).

The ``grpc-floor`` row ("grpc.aio floor") is a reference, not a product: a bare ``grpc.aio``
server (this file's ``_floor`` mode) that does nothing but write pre-built bytes, watched by the
same gRPC watcher clients. It imports the project's ``server`` package before ``grpc`` (so it
runs with the gRPC engine settings our server sets there) and uses our server's options; its
``Watch`` writes one progress event on open and then every event it is given; its ``Put``
builds one ``WatchEvent`` per write, serializes it once, hands the same bytes to every stream
(each writes them in its own handler task, as our server does) and answers at once. That is
the lowest per-event cost any ``grpc.aio`` server can have on this machine: the difference
between it and the gRPC row is our own code (storage, policy, the watch service, encoding);
the difference between it and etcd is ``grpc.aio``'s (Python and its asyncio glue over the C
core, against Go's gRPC). It has ratios against etcd but no target.

How to run it, from the repository root:

    .venv/bin/python bench/propagation.py                       # N = 100, 1,000 and 5,000
    .venv/bin/python bench/propagation.py --quick               # N = 100 only: a smoke check
    .venv/bin/python bench/propagation.py --watchers 1000 --transports sse,etcd --writes 10
    .venv/bin/python bench/propagation.py --watchers 1000 --transports grpc,grpc-floor

What it does, for each N and each transport (etcd, SSE, gRPC, the grpc.aio floor), one cell at
a time:

1. Starts the target fresh on free loopback ports: ``llm-config-server serve --grpc-port G``
   on a data directory made once by ``init --json`` (SSE: ``GET /v1/watch``; gRPC:
   ``llmconfig.v1.ConfigService/Watch``), ``etcd`` with a new temporary data directory, or
   the floor (``propagation.py _floor --port G``; writes through its raw-bytes ``Put``).
2. Opens one probe watcher (its own process) and makes two warm-up writes, so structures that
   exist once per watched environment are built, then reads the target's RSS.
3. Starts the client processes, which open N watchers between them (at most
   ``CONNECT_CONCURRENCY`` connecting at once per process, retried with jittered backoff).
   A watcher counts as connected when the stream tells it so: the first progress event (SSE,
   gRPC), or etcd's ``created`` response. When all are connected and idle it reads the RSS
   again: (after - before) / N is the server memory per watcher.
4. Two more warm-up writes, then M measured writes, one at a time: each waits until every
   client process reports that all its watchers have the revision (bounded), then a short gap.
5. Stops the clients, which hand over every receipt time (``time.monotonic()``; on Linux
   that is CLOCK_MONOTONIC, one clock for every process of the machine).

It prints one row per cell (p50 and p99 over every (write, watcher) pair; the all-received
time as the median and the p99 over the writes; server KB per watcher; watchers connected;
the target's CPU per write, and per write per watcher; receipts missing), the ratios against
etcd at N = 1,000 (the floor's without a verdict) and the targets. It exits 0 once the report
is printed, whether or not the targets are met (it is a report, not a test), and 1 when
something needed to run it failed. Every process it started is stopped (by its process group)
and the temporary directory removed, on success, failure or Ctrl-C. Everything listens and
connects on 127.0.0.1 only. When ``etcd`` is not on PATH its rows are skipped and said so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import importlib.util
import json
import math
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

_BENCH_DIR = Path(__file__).resolve().parent


def _load_read_throughput() -> ModuleType:
    name = "read_throughput"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _BENCH_DIR / "read_throughput.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {_BENCH_DIR / 'read_throughput.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


rt = _load_read_throughput()
if str(rt.REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(rt.REPO_ROOT))  # shared.proto, should the project not be installed

HOST = rt.HOST
BenchError = rt.BenchError

NAMESPACE = "bench/propagation"
KEY = "model-routing"
ENV = "production"
CONFIG_PATH = f"/v1/configs/{NAMESPACE}/{KEY}"
WATCH_QUERY = f"env={ENV}&prefix={NAMESPACE}&progress=0s"
ETCD_PREFIX = b"/bench/propagation/"
ETCD_KEY = ETCD_PREFIX + KEY.encode()
GRPC_SERVICE = "llmconfig.v1.ConfigService"
GRPC_WATCH_METHOD = "/llmconfig.v1.ConfigService/Watch"
FLOOR_PUT_METHOD = f"/{GRPC_SERVICE}/Put"  # the floor's: raw bytes in (the value), revision out
ETCD_WATCH_METHOD = "/etcdserverpb.Watch/Watch"
ETCD_PUT_METHOD = "/etcdserverpb.KV/Put"
ETCD_PROTO = _BENCH_DIR / "etcd_proto" / "etcd_watch_subset.proto"
ETCD_PB2 = "etcd_watch_subset_pb2"

TRANSPORTS = ("etcd", "sse", "grpc", "grpc-floor")
GRPC_TRANSPORTS = ("grpc", "grpc-floor")  # watched with the gRPC watcher client
DEFAULT_WATCHERS = (100, 1000, 5000)
DEFAULT_WRITES = 20
WARMUP_WRITES = 2
WRITE_GAP_S = 0.2  # after every watcher has a write, before the next one
WRITE_WAIT_S = 15.0  # at most this long for every watcher to have one write
SETTLE_S = 2.0  # idle time before an RSS reading
CONNECT_CONCURRENCY = 64  # watchers connecting at once, per client process
CONNECT_ATTEMPTS = 6
CONNECT_TIMEOUT_S = 30.0  # per attempt, until the stream says it is connected
CLIENT_LIFETIME_S = 3600.0  # a client or floor process exits by itself after this long, whatever happens
FLOOR_STREAM_STEPS = 10_000_000  # a floor stream's loop bound: far above any run's writes
STOP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 30.0
NOFILE_WANTED = 65536
GRPC_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    # one TCP connection per channel, as separate pods have: without this, channels of one
    # process to the same target share a subchannel and all watchers ride one connection
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.enable_retries", 0),
)

# Targets of the issue (same machine, same run).
TARGET_RATIO_N = 1000
TARGET_RATIO = 1.0
TARGET_P99_N = 5000
TARGET_P99_MS = 500.0
TARGET_SSE_KB = 32.0


def write_value(seq: int) -> dict[str, Any]:
    """A ~1 KB model-endpoint config (read_throughput.py's, without its secret reference)."""
    value: dict[str, Any] = {**rt.GLOBAL_LAYER, **rt.PRODUCTION_LAYER}
    value.pop("secrets", None)
    value["seq"] = seq
    return value


def raise_nofile_limit() -> int:
    """Raise this process's open-file limit as far as allowed; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want_hard in (max(hard, NOFILE_WANTED), hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want_hard, want_hard))
            return want_hard
    return soft


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


# == client processes (this file, `_client` mode) =================================================


@dataclass(slots=True)
class ClientState:
    """What one client process knows: its watchers' receipt times per revision."""

    count: int
    recv: dict[int, list[float]] = field(default_factory=dict)
    ready: int = 0
    failed: int = 0
    lost: int = 0
    pending: int = 0
    done_sent: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    all_settled: asyncio.Event = field(default_factory=asyncio.Event)

    def emit(self, message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    def note_error(self, text: str) -> None:
        if len(self.errors) < 5:
            self.errors.append(text[:300])

    def record(self, revision: int, at: float) -> None:
        times = self.recv.get(revision)
        if times is None:
            times = self.recv[revision] = []
        times.append(at)
        alive = self.ready - self.lost
        if len(times) >= alive and revision not in self.done_sent:
            self.done_sent.add(revision)
            self.emit({"event": "done", "revision": revision})

    def settle_one(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            self.all_settled.set()


OnReady = Callable[[], None]
OnEvent = Callable[[int, float], None]
WatchOnce = Callable[[OnReady, OnEvent], Awaitable[None]]


def sse_blocks(buffer: bytearray) -> list[bytes]:
    """Cut the complete SSE events (blank-line terminated) off the front of ``buffer``."""
    blocks: list[bytes] = []
    for _ in range(100_000):
        end = buffer.find(b"\n\n")
        if end < 0:
            break
        blocks.append(bytes(buffer[:end]))
        del buffer[: end + 2]
    return blocks


def sse_fields(block: bytes) -> tuple[bytes, bytes]:
    """(event type, id) of one SSE event block; b"" for a missing field."""
    kind = b"message"
    event_id = b""
    for line in block.split(b"\n"):
        if line.startswith(b"event:"):
            kind = line[6:].strip()
        elif line.startswith(b"id:"):
            event_id = line[3:].strip()
    return kind, event_id


def make_sse_watcher(session: Any, url: str, token: str) -> WatchOnce:
    from aiohttp import ClientTimeout

    timeout = ClientTimeout(total=None, connect=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=None)
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}

    async def watch_once(on_ready: OnReady, on_event: OnEvent) -> None:
        async with session.get(url, headers=headers, timeout=timeout) as resp:
            if resp.status != 200:
                body = await resp.text()
                raise BenchError(f"GET /v1/watch answered HTTP {resp.status}: {body[:300]}")
            buffer = bytearray()
            ready = False
            async for chunk in resp.content.iter_any():
                at = time.monotonic()
                buffer += chunk
                for block in sse_blocks(buffer):
                    kind, event_id = sse_fields(block)
                    if kind in (b"put", b"delete") and event_id:
                        on_event(int(event_id), at)
                    elif kind == b"progress" and not ready:
                        ready = True
                        on_ready()
            raise BenchError("the SSE stream ended")

    return watch_once


def load_llmconfig_pb2() -> ModuleType:
    """The project's generated messages for llmconfig.v1 (only the API boundary imports them)."""
    errors: list[str] = []
    for name in ("shared.proto.llmconfig.v1.config_pb2", "llmconfig.v1.config_pb2"):
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise BenchError("cannot import the llmconfig.v1 generated messages: " + "; ".join(errors))


def watch_channel_options() -> tuple[tuple[str, Any], ...]:
    """Channel options of every gRPC watcher, ours and etcd's alike: one connection each, and
    the settings the project's SDK (and so its agent) opens channels with (no BDP probing)."""
    from shared.sdk.grpc import CHANNEL_OPTIONS

    return GRPC_CHANNEL_OPTIONS + CHANNEL_OPTIONS


def make_grpc_watcher(target: str, token: str, channels: list[Any]) -> WatchOnce:
    import grpc

    options = watch_channel_options()
    pb2 = load_llmconfig_pb2()
    request = pb2.WatchRequest(prefixes=[NAMESPACE], environment=ENV, progress_interval_seconds=0.0)
    metadata = (("authorization", f"Bearer {token}"),)

    async def watch_once(on_ready: OnReady, on_event: OnEvent) -> None:
        channel = grpc.aio.insecure_channel(target, options=options)
        channels.append(channel)
        try:
            method = channel.unary_stream(
                GRPC_WATCH_METHOD,
                request_serializer=pb2.WatchRequest.SerializeToString,
                response_deserializer=pb2.WatchEvent.FromString,
            )
            call = method(request, metadata=metadata)
            ready = False
            for _ in range(100_000_000):
                event = await call.read()
                if event is grpc.aio.EOF:
                    break
                at = time.monotonic()
                if event.type in ("put", "delete"):
                    on_event(event.revision, at)
                elif event.type == "progress" and not ready:
                    ready = True
                    on_ready()
            raise BenchError("the gRPC watch stream ended")
        except grpc.aio.AioRpcError as exc:
            raise BenchError(f"gRPC Watch failed: {exc.code().name}: {exc.details()}") from None
        finally:
            channels.remove(channel)
            with contextlib.suppress(Exception):
                await channel.close(grace=None)

    return watch_once


def load_etcd_pb2(proto_dir: Path) -> ModuleType:
    if str(proto_dir) not in sys.path:
        sys.path.insert(0, str(proto_dir))
    return importlib.import_module(ETCD_PB2)


def etcd_range_end(prefix: bytes) -> bytes:
    """etcd's range end for 'every key with this prefix': the prefix with its last byte + 1."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


def make_etcd_watcher(target: str, proto_dir: Path, channels: list[Any]) -> WatchOnce:
    import grpc

    pb2 = load_etcd_pb2(proto_dir)
    create = pb2.WatchRequest(
        create_request=pb2.WatchCreateRequest(key=ETCD_PREFIX, range_end=etcd_range_end(ETCD_PREFIX))
    )

    options = watch_channel_options()

    async def watch_once(on_ready: OnReady, on_event: OnEvent) -> None:
        channel = grpc.aio.insecure_channel(target, options=options)
        channels.append(channel)
        try:
            method = channel.stream_stream(
                ETCD_WATCH_METHOD,
                request_serializer=pb2.WatchRequest.SerializeToString,
                response_deserializer=pb2.WatchResponse.FromString,
            )
            call = method()
            await call.write(create)  # the send side stays open: etcd ends the watch when it closes
            ready = False
            for _ in range(100_000_000):
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    break
                at = time.monotonic()
                if resp.canceled:
                    raise BenchError(f"etcd canceled the watch: {resp.cancel_reason or 'no reason given'}")
                if resp.created and not ready:
                    ready = True
                    on_ready()
                for event in resp.events:
                    on_event(event.kv.mod_revision, at)
            raise BenchError("the etcd watch stream ended")
        except grpc.aio.AioRpcError as exc:
            raise BenchError(f"etcd Watch failed: {exc.code().name}: {exc.details()}") from None
        finally:
            channels.remove(channel)
            with contextlib.suppress(Exception):
                await channel.close(grace=None)

    return watch_once


async def keep_watcher(watch_once: WatchOnce, state: ClientState, gate: asyncio.Semaphore) -> None:
    """Connect one watcher (bounded retries with jittered backoff), then follow its stream."""
    for attempt in range(CONNECT_ATTEMPTS):
        connected = False
        await gate.acquire()
        holding = True
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S) as deadline:

                def on_ready() -> None:
                    nonlocal connected, holding
                    connected = True
                    deadline.reschedule(None)  # connected: the stream may now stay open
                    gate.release()
                    holding = False
                    state.ready += 1
                    state.settle_one()

                await watch_once(on_ready, state.record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if connected:
                state.lost += 1
                state.note_error(f"lost after connecting: {text}")
                state.emit({"event": "lost", "error": text[:300]})
                return
            state.note_error(f"attempt {attempt + 1}: {text}")
        finally:
            if holding:
                gate.release()
        await asyncio.sleep(min(5.0, 0.2 * 2**attempt) * random.uniform(0.5, 1.5))
    state.failed += 1
    state.settle_one()


def watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Any line on stdin, or its end (the parent went away), stops this client."""
    with contextlib.suppress(Exception):
        sys.stdin.readline()
    loop.call_soon_threadsafe(stop.set)


async def client_run(args: argparse.Namespace) -> None:
    state = ClientState(count=args.count, pending=args.count)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    threading.Thread(target=watch_stdin, args=(loop, stop), daemon=True).start()
    channels: list[Any] = []
    session: Any = None
    if args.transport == "sse":
        from aiohttp import ClientSession, TCPConnector

        # limit=0: no pool cap, so every open stream holds a connection of its own
        session = ClientSession(connector=TCPConnector(limit=0, force_close=True))
        watch_once = make_sse_watcher(
            session, f"http://{HOST}:{args.port}/v1/watch?{WATCH_QUERY}", args.token
        )
    elif args.transport in GRPC_TRANSPORTS:  # the floor ignores the token
        watch_once = make_grpc_watcher(f"{HOST}:{args.port}", args.token, channels)
    else:
        watch_once = make_etcd_watcher(f"{HOST}:{args.port}", Path(args.proto_dir), channels)

    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    tasks = [asyncio.create_task(keep_watcher(watch_once, state, gate)) for _ in range(args.count)]
    try:
        async with asyncio.timeout(CLIENT_LIFETIME_S):
            settled = asyncio.create_task(state.all_settled.wait())
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({settled, stopped}, return_when=asyncio.FIRST_COMPLETED)
            settled.cancel()
            if not stop.is_set():
                state.emit(
                    {"event": "ready", "ready": state.ready, "failed": state.failed, "errors": state.errors}
                )
            await stopped
    except TimeoutError:
        state.note_error(f"client lifetime of {CLIENT_LIFETIME_S:.0f} s reached")
    results = {
        "ready": state.ready,
        "failed": state.failed,
        "lost": state.lost,
        "errors": state.errors,
        "recv": {str(rev): times for rev, times in state.recv.items()},
    }
    Path(args.results).write_text(json.dumps(results))
    state.emit({"event": "results", "path": args.results})
    for task in tasks:
        task.cancel()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await asyncio.gather(*tasks, return_exceptions=True)
            if session is not None:
                await session.close()


def client_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="propagation.py _client")
    parser.add_argument("--transport", choices=TRANSPORTS, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--proto-dir", default="")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    asyncio.run(client_run(args))
    # the streams are cut by the exit; a tidy close of thousands of channels is not worth waiting for
    sys.stdout.flush()
    os._exit(0)


# == the grpc.aio floor (this file, `_floor` mode) =================================================


class FloorEvents:
    """The floor's events in order, each serialized once; every stream writes the same bytes.

    A write appends its bytes and wakes the streams waiting for one (each waits on the
    ``asyncio.Event``'s own future, so a stream that goes away cancels nothing of the others).
    The list only grows: a floor lives for one cell, tens of ~1 KB writes.
    """

    def __init__(self, pb2: ModuleType) -> None:
        self.pb2 = pb2
        self.revision = 0
        self.events: list[bytes] = []
        self.progress = pb2.WatchEvent(type="progress", revision=0).SerializeToString()
        self.appended = asyncio.Event()

    def put(self, value_json: bytes) -> int:
        self.revision += 1
        event = self.pb2.WatchEvent(
            type="put",
            revision=self.revision,
            namespace=NAMESPACE,
            key=KEY,
            environment=ENV,
            value_json=value_json.decode(),
            sha256=hashlib.sha256(value_json).hexdigest(),
            final=True,
        )
        self.events.append(event.SerializeToString())
        self.progress = self.pb2.WatchEvent(type="progress", revision=self.revision).SerializeToString()
        self.appended.set()  # resolves the waiters' futures; each stream's task runs later
        self.appended.clear()
        return self.revision

    async def stream(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        """One watch stream: progress at the current revision, then every later event."""
        index = len(self.events)
        await write(self.progress)
        for _ in range(FLOOR_STREAM_STEPS):
            if index < len(self.events):
                index += 1
                await write(self.events[index - 1])
            else:
                await self.appended.wait()


async def floor_run(args: argparse.Namespace) -> None:
    import grpc

    from server.api.fanout import tune_collector
    from server.api.grpc_server import server_options

    events = FloorEvents(load_llmconfig_pb2())

    async def watch(request: bytes, context: Any) -> None:
        await events.stream(context.write)

    async def put(request: bytes, context: Any) -> bytes:
        return events.put(request).to_bytes(8, "big")

    handlers = {
        "Watch": grpc.unary_stream_rpc_method_handler(
            watch, request_deserializer=None, response_serializer=None
        ),
        "Put": grpc.unary_unary_rpc_method_handler(put, request_deserializer=None, response_serializer=None),
    }
    server = grpc.aio.server(options=server_options(1 << 20), maximum_concurrent_rpcs=None)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(GRPC_SERVICE, handlers),))
    server.add_registered_method_handlers(GRPC_SERVICE, handlers)
    if not server.add_insecure_port(f"{HOST}:{args.port}"):
        raise BenchError(f"the floor cannot listen on {HOST}:{args.port}")
    await server.start()
    tune_collector()  # as our server does once it is built
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    threading.Thread(target=watch_stdin, args=(loop, stop), daemon=True).start()
    print(
        f"grpc.aio floor on {HOST}:{args.port}: grpcio {grpc.__version__}, "
        f"GRPC_EXPERIMENTS={os.environ.get('GRPC_EXPERIMENTS', '')!r}",
        flush=True,
    )
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CLIENT_LIFETIME_S):
            await stop.wait()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await server.stop(None)


def floor_main(argv: Sequence[str]) -> int:
    # the project's server package first: it sets the GRPC_EXPERIMENTS default our server runs
    # with, which the gRPC core reads once, when grpc is first imported
    if "grpc" in sys.modules:
        raise BenchError("grpc was imported before the server package: its engine settings would not apply")
    import server  # noqa: F401

    parser = argparse.ArgumentParser(prog="propagation.py _floor")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    raise_nofile_limit()
    asyncio.run(floor_run(args))
    sys.stdout.flush()
    os._exit(0)


# == the orchestrator ==============================================================================


@dataclass(slots=True)
class ClientProc:
    index: int
    count: int
    proc: asyncio.subprocess.Process
    log_path: Path
    results_path: Path
    ready: dict[str, Any] | None = None
    results: dict[str, Any] | None = None
    exited: bool = False
    lost: int = 0

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-rt.LOG_TAIL_CHARS :]
        except OSError:
            return ""


@dataclass(slots=True)
class Write:
    revision: int
    ack: float
    sent: float


@dataclass(slots=True)
class CellResult:
    transport: str
    n: int
    connected: int = 0
    failed: int = 0
    lost: int = 0
    kb_per_watcher: float = math.nan
    rss_before_mb: float = math.nan
    rss_after_mb: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    all_median_ms: float = math.nan
    all_p99_ms: float = math.nan
    writes: int = 0
    incomplete_writes: int = 0
    missing: int = 0
    before_ack: int = 0
    put_ms: float = math.nan  # the writer's round trip, median
    cpu_ms_per_write: float = math.nan  # the target's CPU time (user + system) over the measured writes
    # the same latencies measured from the moment the writer sent the write, not from its ack
    sent_p50_ms: float = math.nan
    sent_p99_ms: float = math.nan
    sent_all_median_ms: float = math.nan
    error: str = ""


class Pids:
    """Every process group this run started, so the end of the run can stop each by its id."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    def add(self, pid: int) -> None:
        self.pids.append(pid)

    def discard(self, pid: int) -> None:
        with contextlib.suppress(ValueError):
            self.pids.remove(pid)

    def stop_all(self) -> None:
        for pid in reversed(self.pids):
            stop_group(pid)
        self.pids.clear()


def stop_group(pid: int) -> None:
    """SIGTERM a process group this script started, then SIGKILL what is left of it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for _ in range(int(STOP_TIMEOUT_S / 0.05) + 1):
        try:
            done_pid, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            break
        if done_pid == pid or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its descendants so far."""
    import psutil

    procs = [psutil.Process(pid)]
    procs.extend(procs[0].children(recursive=True))
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its descendants (VmRSS from /proc)."""
    import psutil

    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return int(total)


class Fleet:
    """Client processes of one cell and the messages they send."""

    def __init__(self, run: Run, transport: str, port: int, name: str) -> None:
        self.run = run
        self.transport = transport
        self.port = port
        self.name = name
        self.clients: list[ClientProc] = []
        self.done: dict[int, set[int]] = {}
        self.changed = asyncio.Event()
        self.readers: list[asyncio.Task[None]] = []

    async def start(self, counts: Sequence[int]) -> None:
        for count in counts:
            index = len(self.clients)
            log_path = self.run.work / f"{self.name}-{index}.log"
            results_path = self.run.work / f"{self.name}-{index}.json"
            argv = [
                sys.executable,
                str(Path(__file__).resolve()),
                "_client",
                "--transport",
                self.transport,
                "--port",
                str(self.port),
                "--token",
                self.run.token,
                "--count",
                str(count),
                "--results",
                str(results_path),
                "--proto-dir",
                str(self.run.proto_dir),
            ]
            with log_path.open("wb") as log:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=rt.REPO_ROOT,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log,
                    start_new_session=True,
                    limit=1 << 20,
                )
            self.run.pids.add(proc.pid)
            client = ClientProc(index, count, proc, log_path, results_path)
            self.clients.append(client)
            self.readers.append(asyncio.create_task(self._read(client)))

    async def _read(self, client: ClientProc) -> None:
        stream = client.proc.stdout
        if stream is None:
            return
        for _ in range(10_000_000):
            line = await stream.readline()
            if not line:
                break
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            kind = msg.get("event")
            if kind == "done":
                self.done.setdefault(int(msg["revision"]), set()).add(client.index)
            elif kind == "ready":
                client.ready = msg
            elif kind == "lost":
                client.lost += 1
            elif kind == "results":
                client.results = json.loads(Path(msg["path"]).read_text())
            self.changed.set()
        client.exited = True
        self.changed.set()

    async def _wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for _ in range(1_000_000):
            if predicate():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 1.0)):
                    await self.changed.wait()
        return predicate()

    async def wait_connected(self, timeout: float) -> None:
        ok = await self._wait_for(lambda: all(c.ready is not None or c.exited for c in self.clients), timeout)
        dead = [c for c in self.clients if c.ready is None]
        if not ok or dead:
            tails = "\n".join(f"--- client {c.index}:\n{c.log_tail()}" for c in dead[:2])
            raise BenchError(
                f"{self.name}: {len(dead)} client process(es) did not finish connecting within "
                f"{timeout:.0f} s\n{tails}"
            )

    @property
    def connected(self) -> int:
        return sum(int(c.ready["ready"]) for c in self.clients if c.ready)

    @property
    def failed(self) -> int:
        return sum(int(c.ready["failed"]) for c in self.clients if c.ready)

    def first_errors(self) -> list[str]:
        errors: list[str] = []
        for c in self.clients:
            if c.ready:
                errors.extend(c.ready.get("errors", []))
        return errors[:3]

    async def wait_delivered(self, revision: int, timeout: float) -> bool:
        def complete() -> bool:
            live = {c.index for c in self.clients if not c.exited}
            return live <= self.done.get(revision, set())

        return await self._wait_for(complete, timeout)

    async def collect(self) -> list[dict[str, Any]]:
        for c in self.clients:
            if c.proc.stdin is not None and not c.exited:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    c.proc.stdin.write(b"stop\n")
                    await c.proc.stdin.drain()
        await self._wait_for(lambda: all(c.results is not None or c.exited for c in self.clients), 60.0)
        return [c.results for c in self.clients if c.results is not None]

    async def stop(self) -> None:
        for c in self.clients:
            if c.proc.stdin is not None:
                with contextlib.suppress(Exception):
                    c.proc.stdin.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await c.proc.wait()
            if c.proc.returncode is None:
                stop_group(c.proc.pid)
            else:  # reap anything left in its group
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(c.proc.pid, signal.SIGKILL)
            self.run.pids.discard(c.proc.pid)
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)


@dataclass(slots=True)
class Target:
    """A started server (ours or etcd): its process and how to reach and write to it."""

    transport: str
    child: Any  # rt.Child
    watch_port: int
    write: Callable[[int], Awaitable[Write]]
    close: Callable[[], Awaitable[None]]


class Run:
    def __init__(self, args: argparse.Namespace, work: Path, pids: Pids) -> None:
        self.args = args
        self.work = work
        self.pids = pids
        self.token = ""
        self.data_dir = work / "data"
        self.proto_dir = work / "etcd_pb"
        self.etcd = shutil.which("etcd")
        self.seq = 0

    # -- targets -----------------------------------------------------------------------------

    def _start(
        self, name: str, argv: Sequence[str], log_name: str, *, stdin: int = subprocess.DEVNULL
    ) -> Any:
        child = rt.start_child(name, argv, self.work / log_name, stdin=stdin)
        self.pids.add(child.popen.pid)
        return child

    def _stop(self, child: Any) -> None:
        if child.popen.stdin is not None:
            with contextlib.suppress(OSError):
                child.popen.stdin.close()
        rt.stop_child(child)
        self.pids.discard(child.popen.pid)

    async def start_server(self, cell: str, need_grpc: bool) -> tuple[Any, int, int]:
        port, grpc_port = rt.free_port(), rt.free_port()
        argv = rt.server_argv(
            "serve",
            "--data",
            str(self.data_dir),
            "--host",
            HOST,
            "--port",
            str(port),
            "--grpc-port",
            str(grpc_port),
            "--log-level",
            "warning",
        )
        child = self._start("llm-config-server", argv, f"server-{cell}.log")
        await asyncio.to_thread(rt.wait_ready, child, port, "/health/ready")
        if need_grpc:
            await asyncio.to_thread(wait_tcp, child, grpc_port)
        return child, port, grpc_port

    async def start_etcd(self, cell: str) -> tuple[Any, int]:
        assert self.etcd is not None
        client_port, peer_port = rt.free_port(), rt.free_port()
        data = self.work / f"etcd-{cell}"
        client_url = f"http://{HOST}:{client_port}"
        peer_url = f"http://{HOST}:{peer_port}"
        argv = [
            self.etcd,
            "--name",
            "bench",
            "--data-dir",
            str(data),
            "--listen-client-urls",
            client_url,
            "--advertise-client-urls",
            client_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            f"bench={peer_url}",
            "--initial-cluster-state",
            "new",
            "--log-level",
            "warn",
            "--logger",
            "zap",
        ]
        child = self._start("etcd", argv, f"etcd-{cell}.log")
        await asyncio.to_thread(rt.wait_ready, child, client_port, "/health")
        return child, client_port

    async def target(self, transport: str, cell: str) -> Target:
        if transport == "etcd":
            return await self._etcd_target(cell)
        if transport == "grpc-floor":
            return await self._floor_target(cell)
        return await self._server_target(transport, cell)

    async def _server_target(self, transport: str, cell: str) -> Target:
        from aiohttp import ClientSession, ClientTimeout, TCPConnector

        child, port, grpc_port = await self.start_server(cell, need_grpc=transport == "grpc")
        session = ClientSession(connector=TCPConnector(limit=1), timeout=ClientTimeout(total=30))
        url = f"http://{HOST}:{port}{CONFIG_PATH}?env={ENV}"
        headers = {"Authorization": f"Bearer {self.token}"}

        async def write(seq: int) -> Write:
            body = {"value": write_value(seq), "message": f"bench: propagation write {seq}"}
            sent = time.monotonic()
            async with session.put(url, json=body, headers=headers) as resp:
                data = await resp.read()
                ack = time.monotonic()
            if resp.status // 100 != 2:
                raise BenchError(f"PUT {CONFIG_PATH} answered HTTP {resp.status}: {data[:300]!r}")
            return Write(int(json.loads(data)["revision"]), ack, sent)

        async def close() -> None:
            await session.close()
            self._stop(child)

        return Target(transport, child, grpc_port if transport == "grpc" else port, write, close)

    async def _etcd_target(self, cell: str) -> Target:
        import grpc

        pb2 = load_etcd_pb2(self.proto_dir)
        child, port = await self.start_etcd(cell)
        channel = grpc.aio.insecure_channel(f"{HOST}:{port}")
        put = channel.unary_unary(
            ETCD_PUT_METHOD,
            request_serializer=pb2.PutRequest.SerializeToString,
            response_deserializer=pb2.PutResponse.FromString,
        )

        async def write(seq: int) -> Write:
            value = json.dumps(write_value(seq), separators=(",", ":")).encode()
            sent = time.monotonic()
            try:
                resp = await put(pb2.PutRequest(key=ETCD_KEY, value=value), timeout=30)
            except grpc.aio.AioRpcError as exc:
                raise BenchError(f"etcd Put failed: {exc.code().name}: {exc.details()}") from None
            ack = time.monotonic()
            return Write(int(resp.header.revision), ack, sent)

        async def close() -> None:
            await channel.close(grace=None)
            self._stop(child)

        return Target("etcd", child, port, write, close)

    async def _floor_target(self, cell: str) -> Target:
        import grpc

        port = rt.free_port()
        argv = [sys.executable, str(Path(__file__).resolve()), "_floor", "--port", str(port)]
        # stdin a pipe this run holds: the floor exits when it closes
        child = self._start("grpc.aio floor", argv, f"floor-{cell}.log", stdin=subprocess.PIPE)
        await asyncio.to_thread(wait_tcp, child, port)
        channel = grpc.aio.insecure_channel(f"{HOST}:{port}")
        put = channel.unary_unary(FLOOR_PUT_METHOD)

        async def write(seq: int) -> Write:
            value = json.dumps(write_value(seq), separators=(",", ":")).encode()
            sent = time.monotonic()
            try:
                data = await put(value, timeout=30)
            except grpc.aio.AioRpcError as exc:
                raise BenchError(f"floor Put failed: {exc.code().name}: {exc.details()}") from None
            ack = time.monotonic()
            return Write(int.from_bytes(data, "big"), ack, sent)

        async def close() -> None:
            await channel.close(grace=None)
            self._stop(child)

        return Target("grpc-floor", child, port, write, close)

    # -- one cell ----------------------------------------------------------------------------

    async def write_and_wait(self, target: Target, fleet: Fleet) -> tuple[Write, bool]:
        self.seq += 1
        write = await target.write(self.seq)
        delivered = await fleet.wait_delivered(write.revision, WRITE_WAIT_S)
        await asyncio.sleep(WRITE_GAP_S)
        return write, delivered

    async def cell(self, transport: str, n: int) -> CellResult:
        result = CellResult(transport, n)
        name = f"{transport}-{n}"
        target = await self.target(transport, name)
        probe = Fleet(self, transport, target.watch_port, f"{name}-probe")
        fleet = Fleet(self, transport, target.watch_port, name)
        try:
            await probe.start([1])
            await probe.wait_connected(60.0)
            if probe.connected != 1:
                raise BenchError(f"{name}: the probe watcher could not connect: {probe.first_errors()}")
            for _ in range(WARMUP_WRITES):
                await self.write_and_wait(target, probe)
            await asyncio.sleep(SETTLE_S)
            before = rss_bytes(target.child.popen.pid)

            await fleet.start(split(n, self.clients_for(n)))
            await fleet.wait_connected(60.0 + n / 10.0)
            result.connected, result.failed = fleet.connected, fleet.failed
            if result.connected == 0:
                raise BenchError(f"{name}: no watcher connected: {fleet.first_errors()}")
            await asyncio.sleep(SETTLE_S)
            after = rss_bytes(target.child.popen.pid)
            result.rss_before_mb, result.rss_after_mb = before / 2**20, after / 2**20
            result.kb_per_watcher = (after - before) / 1024 / result.connected

            for _ in range(WARMUP_WRITES):
                await self.write_and_wait(target, fleet)
            writes: list[Write] = []
            cpu_before = cpu_seconds(target.child.popen.pid)
            for _ in range(self.args.writes):
                write, _delivered = await self.write_and_wait(target, fleet)
                writes.append(write)
            cpu_after = cpu_seconds(target.child.popen.pid)
            result.cpu_ms_per_write = (cpu_after - cpu_before) * 1000.0 / max(1, len(writes))
            reports = await fleet.collect()
            summarize_cell(result, writes, reports)
            if result.failed:
                result.error = f"{result.failed} watchers failed to connect, e.g. {fleet.first_errors()[:1]}"
        finally:
            await fleet.stop()
            await probe.stop()
            await target.close()
        return result

    def clients_for(self, n: int) -> int:
        if self.args.clients:
            return int(min(self.args.clients, n))
        return 2 if n <= 100 else 4

    # -- the whole run -----------------------------------------------------------------------

    async def main(self) -> list[CellResult]:
        args = self.args
        transports = list(args.transports)
        if "etcd" in transports and self.etcd is None:
            print("etcd: not installed (no 'etcd' on PATH; Debian: apt-get install etcd-server); skipping it")
            transports.remove("etcd")
        if "etcd" in transports:
            compile_etcd_proto(self.proto_dir)
        if "sse" in transports or "grpc" in transports:
            self.data_dir.mkdir()
            _, self.token = await asyncio.to_thread(rt.init_server, self.data_dir)
        if any(t in GRPC_TRANSPORTS for t in transports):
            load_llmconfig_pb2()  # fail early and plainly when the generated messages are missing

        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        print("propagation: write acknowledged -> watcher has the revision")
        print(
            f"cores (os.cpu_count()): {os.cpu_count()}   python {sys.version.split()[0]}   "
            f"open files {nofile}"
        )
        print(f"watchers: {', '.join(map(str, args.watchers))}   transports: {', '.join(transports)}")
        print(f"writes: {args.writes} measured (+{WARMUP_WRITES} warm-up), one at a time, ~1 KB JSON value")
        print(f"our server: SSE GET /v1/watch?{WATCH_QUERY}; gRPC {GRPC_WATCH_METHOD} (one channel each)")
        if "etcd" in transports:
            print(
                f"etcd: {etcd_version(self.etcd)}; watched through its gRPC API ({ETCD_WATCH_METHOD}, writes "
                f"{ETCD_PUT_METHOD}), stubs compiled at run time from bench/etcd_proto/, one channel each"
            )
        if "grpc-floor" in transports:
            print(
                "grpc.aio floor: a bare grpc.aio server writing pre-built bytes (this file's _floor mode), "
                "our server's gRPC engine settings and options; a reference, not a target"
            )
        print(f"clock: time.monotonic() (CLOCK_MONOTONIC, shared by all processes)   somaxconn {somaxconn()}")
        print()

        results: list[CellResult] = []
        for round_no in range(1, args.rounds + 1):
            for n in args.watchers:
                for transport in transports:
                    tag = f" (round {round_no}/{args.rounds})" if args.rounds > 1 else ""
                    print(f"running {transport} N={n}{tag} ...", flush=True)
                    try:
                        cell = await self.cell(transport, n)
                    except BenchError as exc:
                        cell = CellResult(transport, n, error=short_error(exc))
                        print(f"  failed: {exc}", flush=True)
                    results.append(cell)
                    print("  " + format_row(cell), flush=True)
                    if cell.error:
                        print(f"  note: {cell.error}", flush=True)
        return results


def short_error(exc: BaseException) -> str:
    """The first line of an error, and its last (a child's traceback ends with the cause)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return text[:400]


def wait_tcp(child: Any, port: int, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.1) + 1):
        if child.popen.poll() is not None:
            raise BenchError(f"{child.name} exited before its gRPC port opened:\n{child.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1.0):
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    raise BenchError(f"{child.name} did not listen on gRPC port {port} within {timeout:.0f} s")


def split(n: int, parts: int) -> list[int]:
    parts = max(1, min(parts, n))
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def compile_etcd_proto(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{ETCD_PROTO.parent}",
        f"--python_out={out_dir}",
        str(ETCD_PROTO),
    ]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError("grpc_tools.protoc did not finish within 60 s") from exc
    if done.returncode != 0:
        raise BenchError(
            f"compiling {ETCD_PROTO.name} failed (needs grpcio-tools): {done.stderr.strip()[-1000:]}"
        )


def etcd_version(etcd: str | None) -> str:
    if etcd is None:
        return "not installed"
    try:
        done = subprocess.run([etcd, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return etcd
    first = done.stdout.strip().splitlines()
    return first[0] if first else etcd


def somaxconn() -> str:
    try:
        return Path("/proc/sys/net/core/somaxconn").read_text().strip()
    except OSError:
        return "?"


def summarize_cell(result: CellResult, writes: Sequence[Write], reports: Sequence[dict[str, Any]]) -> None:
    result.lost = sum(int(r.get("lost", 0)) for r in reports)
    latencies: list[float] = []
    all_received: list[float] = []
    sent_latencies: list[float] = []
    sent_all_received: list[float] = []
    for write in writes:
        times = [t for r in reports for t in r["recv"].get(str(write.revision), [])]
        deltas = [t - write.ack for t in times]
        result.before_ack += sum(1 for d in deltas if d < 0)
        deltas = [max(0.0, d) * 1000.0 for d in deltas]
        sent_deltas = [(t - write.sent) * 1000.0 for t in times]
        latencies.extend(deltas)
        sent_latencies.extend(sent_deltas)
        result.missing += max(0, result.connected - len(deltas))
        if len(deltas) >= result.connected and deltas:
            all_received.append(max(deltas))
            sent_all_received.append(max(sent_deltas))
        else:
            result.incomplete_writes += 1
    result.sent_p50_ms = percentile(sent_latencies, 50)
    result.sent_p99_ms = percentile(sent_latencies, 99)
    result.sent_all_median_ms = statistics.median(sent_all_received) if sent_all_received else math.nan
    result.writes = len(writes)
    result.put_ms = statistics.median((w.ack - w.sent) * 1000.0 for w in writes) if writes else math.nan
    result.p50_ms = percentile(latencies, 50)
    result.p99_ms = percentile(latencies, 99)
    result.all_median_ms = statistics.median(all_received) if all_received else math.nan
    result.all_p99_ms = percentile(all_received, 99)


# -- report ------------------------------------------------------------------------------------------

LABELS = {"sse": "SSE", "grpc": "gRPC", "etcd": "etcd", "grpc-floor": "grpc.aio floor"}
REFERENCES = ("grpc-floor",)  # rows shown with their ratios, but with no target
LW = max(len(label) for label in LABELS.values())
HEADER = (
    f"{'transport':<{LW}} | {'N':>5} | {'p50 ms':>7} | {'p99 ms':>7} | {'all-received ms':>15} | "
    f"{'(p99 of writes)':>15} | {'server KB/watcher':>17} | {'connected':>9} | {'PUT ms':>6} | "
    f"{'CPU ms/write':>12} | {'CPU us/watcher':>14} | missing"
)
SENT_HEADER = f"{'transport':<{LW}} | {'N':>5} | {'p50 ms':>7} | {'p99 ms':>7} | {'all-received ms':>15}"


def fmt(value: float, width: int, digits: int = 1) -> str:
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:>{width}.{digits}f}"


def cpu_us_per_watcher(c: CellResult) -> float:
    """The target's CPU per write per connected watcher (one stream's share of a fan-out), in µs."""
    return c.cpu_ms_per_write * 1000.0 / c.connected if c.connected else math.nan


def format_row(c: CellResult) -> str:
    missing = f"{c.missing}" + (f" ({c.incomplete_writes} writes incomplete)" if c.incomplete_writes else "")
    return (
        f"{LABELS[c.transport]:<{LW}} | {c.n:>5} | {fmt(c.p50_ms, 7)} | {fmt(c.p99_ms, 7)} | "
        f"{fmt(c.all_median_ms, 15)} | {fmt(c.all_p99_ms, 15)} | {fmt(c.kb_per_watcher, 17)} | "
        f"{c.connected:>9} | {fmt(c.put_ms, 6)} | {fmt(c.cpu_ms_per_write, 12)} | "
        f"{fmt(cpu_us_per_watcher(c), 14)} | {missing}"
    )


def format_sent_row(c: CellResult) -> str:
    return (
        f"{LABELS[c.transport]:<{LW}} | {c.n:>5} | {fmt(c.sent_p50_ms, 7)} | {fmt(c.sent_p99_ms, 7)} | "
        f"{fmt(c.sent_all_median_ms, 15)}"
    )


def median_of(values: Sequence[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    return statistics.median(present) if present else math.nan


def combine(cells: Sequence[CellResult]) -> CellResult:
    """One row for the rounds of a (transport, N): the median of each figure, the sums of losses."""
    if len(cells) == 1:
        return cells[0]
    first = cells[0]
    ok = [c for c in cells if not math.isnan(c.p99_ms)] or list(cells)
    out = CellResult(first.transport, first.n)
    out.connected = min(c.connected for c in ok)
    for name in ("failed", "lost", "writes", "incomplete_writes", "missing", "before_ack"):
        setattr(out, name, sum(getattr(c, name) for c in ok))
    for name in (
        "kb_per_watcher",
        "rss_before_mb",
        "rss_after_mb",
        "p50_ms",
        "p99_ms",
        "all_median_ms",
        "all_p99_ms",
        "put_ms",
        "cpu_ms_per_write",
        "sent_p50_ms",
        "sent_p99_ms",
        "sent_all_median_ms",
    ):
        setattr(out, name, median_of([getattr(c, name) for c in ok]))
    out.error = "; ".join(c.error for c in cells if c.error)
    return out


def combined(results: Sequence[CellResult]) -> list[CellResult]:
    keys: list[tuple[str, int]] = []
    for c in results:
        if (c.transport, c.n) not in keys:
            keys.append((c.transport, c.n))
    keys.sort(key=lambda k: (k[1], TRANSPORTS.index(k[0])))
    return [combine([c for c in results if (c.transport, c.n) == k]) for k in keys]


def find(results: Sequence[CellResult], transport: str, n: int) -> CellResult | None:
    for c in results:
        if c.transport == transport and c.n == n and not math.isnan(c.p99_ms):
            return c
    return None


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def ratio(ours: float, peer: float) -> float:
    return ours / peer if peer > 0 else math.inf


def print_ratios(rows: Sequence[CellResult], sent: bool) -> None:
    etcd = find(rows, "etcd", TARGET_RATIO_N)
    for transport in ("sse", "grpc", "grpc-floor"):
        ours = find(rows, transport, TARGET_RATIO_N)
        label = LABELS[transport]
        if ours is None and transport in REFERENCES:
            continue  # a reference row not measured: nothing to say
        if ours is None:
            print(f"  {label}: not measured")
            continue
        if etcd is None:
            print(f"  {label}: n/a (etcd not measured at N = {TARGET_RATIO_N})")
            continue
        if sent:
            p50 = ratio(ours.sent_p50_ms, etcd.sent_p50_ms)
            p99 = ratio(ours.sent_p99_ms, etcd.sent_p99_ms)
            allr = ratio(ours.sent_all_median_ms, etcd.sent_all_median_ms)
            print(f"  {label}: p50 {p50:.2f}x   p99 {p99:.2f}x   all-received {allr:.2f}x")
            continue
        p50 = ratio(ours.p50_ms, etcd.p50_ms)
        p99 = ratio(ours.p99_ms, etcd.p99_ms)
        allr = ratio(ours.all_median_ms, etcd.all_median_ms)
        if transport in REFERENCES:
            print(f"  {label}: p50 {p50:.2f}x   p99 {p99:.2f}x   all-received {allr:.2f}x   (reference)")
            continue
        ok = p99 <= TARGET_RATIO and allr <= TARGET_RATIO and ours.incomplete_writes == 0
        print(f"  {label}: p50 {p50:.2f}x   p99 {p99:.2f}x   all-received {allr:.2f}x   {verdict(ok)}")


def print_report(results: Sequence[CellResult], writes: int, rounds: int) -> None:
    rows = combined(results)
    print()
    how = f"; each figure the median of {rounds} rounds" if rounds > 1 else ""
    print(
        f"from the write's ack (PUT response received) to each watcher's receipt: p50/p99 over every "
        f"(write, watcher) pair;\nall-received: median over {writes} writes (and their p99); server "
        f"KB/watcher: (RSS idle with N watchers - RSS before) / N;\nPUT ms: the writer's round trip, median; "
        f"CPU ms/write: the target's CPU time over the measured writes / writes; CPU us/watcher: "
        f"that / watchers connected{how}"
    )
    print(HEADER)
    print("-" * len(HEADER))
    for c in rows:
        print(format_row(c))
    for c in rows:
        if c.before_ack:
            print(
                f"note: {c.transport} N={c.n}: {c.before_ack} receipts came before the writer had its ack "
                "(counted as 0 ms)"
            )
        if c.lost:
            print(f"note: {c.transport} N={c.n}: {c.lost} watchers lost their stream after connecting")
        if c.error:
            print(f"note: {c.transport} N={c.n}: {c.error}")
    print()
    print("the same, from the moment the writer sent the write (so a late ack cannot hide fan-out time):")
    print(SENT_HEADER)
    print("-" * len(SENT_HEADER))
    for c in rows:
        print(format_sent_row(c))
    print()

    print(f"ratios vs etcd at N = {TARGET_RATIO_N} (target <= {TARGET_RATIO:.1f}x for p99 and all-received):")
    print_ratios(rows, sent=False)
    print("  from the write's start (for reference):")
    print_ratios(rows, sent=True)
    print("targets:")
    for transport in ("sse", "grpc"):
        ours = find(rows, transport, TARGET_P99_N)
        label = LABELS[transport]
        if ours is None:
            print(f"  {label} N = {TARGET_P99_N} p99 <= {TARGET_P99_MS:.0f} ms: not measured")
        else:
            ok = ours.p99_ms <= TARGET_P99_MS and ours.incomplete_writes == 0
            print(
                f"  {label} N = {TARGET_P99_N} p99 <= {TARGET_P99_MS:.0f} ms: "
                f"{ours.p99_ms:.1f} ms  {verdict(ok)}"
            )
    sse = [c for c in rows if c.transport == "sse" and not math.isnan(c.kb_per_watcher)]
    if sse:
        largest = max(sse, key=lambda c: c.n)
        ok = largest.kb_per_watcher <= TARGET_SSE_KB
        print(
            f"  SSE server memory per idle watcher <= {TARGET_SSE_KB:.0f} KB (N = {largest.n}): "
            f"{largest.kb_per_watcher:.1f} KB  {verdict(ok)}"
        )
    else:
        print(f"  SSE server memory per idle watcher <= {TARGET_SSE_KB:.0f} KB: not measured")


# -- command line ------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def int_list(text: str) -> list[int]:
    try:
        values = [positive_int(part.replace("_", "").replace(",", "")) for part in text.split(",") if part]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from exc
    if not values:
        raise argparse.ArgumentTypeError("no number given")
    return values


def transport_list(text: str) -> list[str]:
    values = [part.strip().lower() for part in text.split(",") if part.strip()]
    bad = [v for v in values if v not in TRANSPORTS]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"transports are {', '.join(TRANSPORTS)}; got {text!r}")
    return [t for t in TRANSPORTS if t in values]


def bench_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Write-to-watcher propagation for N watchers: SSE and gRPC of this server, etcd, "
            "and a bare grpc.aio server (the floor)."
        )
    )
    parser.add_argument(
        "--watchers",
        type=int_list,
        default=list(DEFAULT_WATCHERS),
        help="N values, comma separated (100,1000,5000)",
    )
    parser.add_argument("--quick", action="store_true", help="N = 100 only: a smoke check")
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=1,
        help="repeat every cell; figures are medians over rounds (1)",
    )
    parser.add_argument(
        "--writes", type=positive_int, default=DEFAULT_WRITES, help=f"measured writes ({DEFAULT_WRITES})"
    )
    parser.add_argument(
        "--transports",
        type=transport_list,
        default=list(TRANSPORTS),
        help="comma list of etcd,sse,grpc,grpc-floor (all)",
    )
    parser.add_argument(
        "--clients", type=positive_int, default=0, help="client processes (2 for N <= 100, else 4)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.watchers = [100]

    raise_nofile_limit()  # the server, etcd and the clients inherit it
    signal.signal(signal.SIGTERM, rt._interrupt)
    pids = Pids()
    work = Path(tempfile.mkdtemp(prefix="llmcm-bench-prop-"))
    try:
        run = Run(args, work, pids)
        results = asyncio.run(run.main())
        print_report(results, args.writes, args.rounds)
    except BenchError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        pids.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_client"]:
        return client_main(args[1:])
    if args[:1] == ["_floor"]:
        return floor_main(args[1:])
    return bench_main(args)


if __name__ == "__main__":
    sys.exit(main())

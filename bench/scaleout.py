"""Scale-out: propagation and write throughput with one replica and with two, on PostgreSQL + Redis.

Why this exists: replicas exist to carry more watchers and more writes than one server. This
script measures, in one run on one machine, side by side:

1. Propagation with N watchers (default 1,000, over SSE; ``--transport grpc`` for gRPC's
   ``ConfigService.Watch``): all on one replica, then spread evenly over
   two replicas, writes made through the first. For every (write, watcher) pair the time from
   the write's acknowledgement to the watcher's receipt (p50, p99), and per write the time until
   every watcher has it; with two replicas also split by where the watcher is connected (the
   writer's replica, or the other one, reached through Redis pub/sub).
2. Write throughput: C concurrent writers (default 32 connections) making PUTs of ~1 KB values
   to distinct keys for D seconds, through one replica, then split over two; writes/s and
   latency p50/p99 of the acknowledgements.

It reuses ``bench/propagation.py``'s watcher client processes (their ``_client`` mode) and
its statistics, so the figures read the same as that script's SSE (or gRPC) rows.

    .venv/bin/python bench/scaleout.py                      # 1,000 watchers, 20 writes, 10 s of writes
    .venv/bin/python bench/scaleout.py --watchers 200 --writes 10 --duration 5   # quicker
    .venv/bin/python bench/scaleout.py --transport grpc     # the watchers over gRPC

Needs the machine's PostgreSQL (``LLMCM_BENCH_POSTGRES``, default
postgresql://postgres@127.0.0.1:5432/postgres: a database of its own is made and dropped) and
Redis (``LLMCM_BENCH_REDIS``, default redis://127.0.0.1:6379/0: keys under a prefix of its own,
deleted at the end). Everything listens and connects on 127.0.0.1; every process it started is
stopped by its process group, on success, failure or Ctrl-C. It exits 0 once the report is
printed (a report, not a test) and 1 when something it needs failed. Both replicas and every
client process share the machine's cores: read the two-replica figures as "what one machine
does with two processes", not as two machines' worth.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_BENCH_DIR = Path(__file__).resolve().parent
# run as a script, this directory comes first on sys.path, and its secrets.py would shadow the
# standard library's (which redis-py imports)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]


def _load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _BENCH_DIR / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {_BENCH_DIR / name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


prop = _load("propagation")
rt = prop.rt
HOST = rt.HOST
BenchError = rt.BenchError

POSTGRES_ADMIN = os.environ.get("LLMCM_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("LLMCM_BENCH_REDIS", "redis://127.0.0.1:6379/0")
DEFAULT_WATCHERS = 1000
DEFAULT_WRITES = 20
DEFAULT_CONNECTIONS = 32
DEFAULT_DURATION_S = 10.0
CLIENTS_PER_REPLICA = 2
MAX_WRITES_PER_RUN = 5_000_000  # a bound on the throughput loop, far above what it can do


# -- PostgreSQL and Redis of the run ------------------------------------------------------------------


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def bench_database() -> Any:
    name = f"llmcm_bench_{os.getpid()}_{os.urandom(3).hex()}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        where = urlsplit(POSTGRES_ADMIN).netloc.rsplit("@", 1)[-1]
        raise BenchError(f"PostgreSQL at {where} is not usable ({type(exc).__name__}: {exc})") from None
    try:
        yield urlunsplit(urlsplit(POSTGRES_ADMIN)._replace(path=f"/{name}"))
    finally:
        with contextlib.suppress(Exception):
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def bench_prefix() -> Any:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BenchError(f"Redis at {REDIS_URL} is not usable ({type(exc).__name__})") from None
    prefix = f"llmcm-bench-{os.urandom(4).hex()}:"
    try:
        yield prefix
    finally:
        with contextlib.suppress(redis.RedisError):
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        client.close()


# -- replicas ---------------------------------------------------------------------------------------


class Cluster:
    """Replicas of one store: the first data dir from ``init``, the others a copy of its master key."""

    def __init__(self, work: Path, pids: Any, storage: str, prefix: str) -> None:
        self.work = work
        self.pids = pids
        self.storage = storage
        self.prefix = prefix
        self.token = ""
        self.proto_dir = work / "unused-etcd-pb"  # propagation's Fleet passes it to its clients
        self.data = work / "data-0"

    def init(self) -> None:
        self.data.mkdir()
        argv = rt.server_argv("init", "--data", str(self.data), "--storage", self.storage, "--json")
        done = subprocess.run(argv, cwd=rt.REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise BenchError(f"init failed: {done.stderr.strip()[-1000:]}")
        _, self.token = rt.parse_init_output(done.stdout)

    def start(self, index: int, cell: str) -> tuple[Any, int, int]:
        """Start replica ``index``: (its process, its REST port, its gRPC port)."""
        data = self.work / f"data-{index}"
        if not data.exists():
            data.mkdir(mode=0o700)
            shutil.copy2(self.data / "master.key", data / "master.key")
        port, grpc_port = rt.free_port(), rt.free_port()
        argv = rt.server_argv(
            *("serve", "--data", str(data), "--storage", self.storage, "--redis", REDIS_URL),
            *("--redis-prefix", self.prefix, "--host", HOST, "--port", str(port)),
            *("--grpc-port", str(grpc_port), "--log-level", "warning"),
        )
        child = rt.start_child("llm-config-server", argv, self.work / f"server-{cell}-{index}.log")
        self.pids.add(child.popen.pid)
        rt.wait_ready(child, port, "/health/ready")
        prop.wait_tcp(child, grpc_port)
        return child, port, grpc_port

    def stop(self, child: Any) -> None:
        rt.stop_child(child)
        self.pids.discard(child.popen.pid)


# -- propagation ------------------------------------------------------------------------------------


@dataclass(slots=True)
class PropagationRow:
    label: str
    result: Any  # propagation.CellResult
    by_place: dict[str, tuple[float, float]] = field(default_factory=dict)  # place -> (p50, p99)


def _ack_latencies(writes: Sequence[Any], reports: Sequence[dict[str, Any]]) -> list[float]:
    out: list[float] = []
    for write in writes:
        for report in reports:
            out += [(t - write.ack) * 1000.0 for t in report.get("recv", {}).get(str(write.revision), [])]
    return out


async def propagation_cell(
    cluster: Cluster, replicas: int, n: int, writes: int, transport: str = "sse"
) -> PropagationRow:
    from aiohttp import ClientSession, ClientTimeout, TCPConnector

    cell = f"prop-{replicas}"
    started = [await asyncio.to_thread(cluster.start, i, cell) for i in range(replicas)]
    ports = [port for _, port, _ in started]
    watch_ports = ports if transport == "sse" else [grpc_port for _, _, grpc_port in started]
    fleets = [prop.Fleet(cluster, transport, port, f"{cell}-r{i}") for i, port in enumerate(watch_ports)]
    result = prop.CellResult(transport, n)
    session = ClientSession(connector=TCPConnector(limit=1), timeout=ClientTimeout(total=30))
    url = f"http://{HOST}:{ports[0]}{prop.CONFIG_PATH}?env={prop.ENV}"
    headers = {"Authorization": f"Bearer {cluster.token}"}
    seq = 0

    async def write() -> Any:
        nonlocal seq
        seq += 1
        body = {"value": prop.write_value(seq), "message": f"bench: scaleout write {seq}"}
        sent = time.monotonic()
        async with session.put(url, json=body, headers=headers) as resp:
            data = await resp.read()
            ack = time.monotonic()
        if resp.status // 100 != 2:
            raise BenchError(f"PUT answered HTTP {resp.status}: {data[:300]!r}")
        return prop.Write(int(json.loads(data)["revision"]), ack, sent)

    async def write_and_wait() -> Any:
        done = await write()
        for fleet in fleets:
            await fleet.wait_delivered(done.revision, prop.WRITE_WAIT_S)
        await asyncio.sleep(prop.WRITE_GAP_S)
        return done

    try:
        for fleet, count in zip(fleets, prop.split(n, replicas), strict=True):
            await fleet.start(prop.split(count, CLIENTS_PER_REPLICA))
        for fleet in fleets:
            await fleet.wait_connected(60.0 + n / 10.0)
        result.connected = sum(f.connected for f in fleets)
        result.failed = sum(f.failed for f in fleets)
        if result.connected == 0:
            raise BenchError(f"{cell}: no watcher connected: {fleets[0].first_errors()}")
        for _ in range(prop.WARMUP_WRITES):
            await write_and_wait()
        measured = [await write_and_wait() for _ in range(writes)]
        reports_by_fleet = [await fleet.collect() for fleet in fleets]
        prop.summarize_cell(result, measured, [r for reports in reports_by_fleet for r in reports])
        row = PropagationRow(f"{replicas} replica{'s' if replicas > 1 else ''}", result)
        if replicas > 1:
            for place, reports in zip(("writer's replica", "other replica"), reports_by_fleet, strict=False):
                lat = _ack_latencies(measured, reports)
                row.by_place[place] = (prop.percentile(lat, 50), prop.percentile(lat, 99))
        return row
    finally:
        await session.close()
        for fleet in fleets:
            await fleet.stop()
        for child, _, _ in started:
            cluster.stop(child)


# -- write throughput -------------------------------------------------------------------------------


@dataclass(slots=True)
class ThroughputRow:
    label: str
    writes: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.writes / self.seconds if self.seconds else float("nan")


async def throughput_cell(
    cluster: Cluster, replicas: int, connections: int, duration: float
) -> ThroughputRow:
    from aiohttp import ClientSession, ClientTimeout, TCPConnector

    cell = f"write-{replicas}"
    started = [await asyncio.to_thread(cluster.start, i, cell) for i in range(replicas)]
    row = ThroughputRow(f"{replicas} replica{'s' if replicas > 1 else ''}")
    headers = {"Authorization": f"Bearer {cluster.token}"}
    session = ClientSession(connector=TCPConnector(limit=0), timeout=ClientTimeout(total=30))
    value = prop.write_value(0)

    async def writer(w: int, until: float) -> None:
        port = started[w % replicas][1]
        for i in range(MAX_WRITES_PER_RUN):
            if time.monotonic() >= until:
                return
            url = f"http://{HOST}:{port}/v1/configs/bench/scaleout/w{w}-{replicas}/k{i % 8}?env=global"
            sent = time.monotonic()
            async with session.put(url, json={"value": {**value, "i": i}}, headers=headers) as resp:
                await resp.read()
            if resp.status // 100 == 2:
                row.writes += 1
                row.latencies_ms.append((time.monotonic() - sent) * 1000.0)
            else:
                row.errors += 1

    try:
        warm = time.monotonic() + 1.0
        await asyncio.gather(*(writer(w, warm) for w in range(connections)))
        row.writes, row.errors, row.latencies_ms = 0, 0, []
        begin = time.monotonic()
        await asyncio.gather(*(writer(w, begin + duration) for w in range(connections)))
        row.seconds = time.monotonic() - begin
        return row
    finally:
        await session.close()
        for child, _, _ in started:
            cluster.stop(child)


# -- report -----------------------------------------------------------------------------------------


def fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def print_report(props: Sequence[PropagationRow], writes: Sequence[ThroughputRow], args: Any) -> None:
    print()
    label = {"sse": "SSE", "grpc": "gRPC"}[args.transport]
    print(f"propagation: {args.watchers} {label} watchers, {args.writes} writes through the first replica")
    head = f"{'':<12} | {'connected':>9} | {'p50 ms':>7} | {'p99 ms':>7} | {'all-received ms':>15}"
    print(f"{head} | {'missing':>7}")
    for row in props:
        r = row.result
        print(
            f"{row.label:<12} | {r.connected:>9} | {fmt(r.p50_ms):>7} | {fmt(r.p99_ms):>7} | "
            f"{fmt(r.all_median_ms):>15} | {r.missing:>7}"
        )
        for place, (p50, p99) in row.by_place.items():
            print(f"{'  ' + place:<28}   p50 {fmt(p50)} ms, p99 {fmt(p99)} ms")
    print()
    print(f"write throughput: {args.connections} concurrent writers, {args.duration:.0f} s, ~1 KB values")
    print(f"{'':<12} | {'writes/s':>9} | {'p50 ms':>7} | {'p99 ms':>7} | {'errors':>6}")
    for t in writes:
        lat = sorted(t.latencies_ms)
        p50 = statistics.median(lat) if lat else float("nan")
        print(
            f"{t.label:<12} | {fmt(t.per_second, 0):>9} | {fmt(p50):>7} | "
            f"{fmt(prop.percentile(lat, 99)):>7} | {t.errors:>6}"
        )
    if len(props) == 2:
        one, two = props[0].result, props[1].result
        if one.p99_ms == one.p99_ms and two.p99_ms == two.p99_ms and one.p99_ms:
            print(f"\np99 with two replicas / one: {two.p99_ms / one.p99_ms:.2f}x")
    if len(writes) == 2 and writes[0].per_second:
        print(f"writes/s with two replicas / one: {writes[1].per_second / writes[0].per_second:.2f}x")


async def run(args: Any, work: Path, pids: Any, storage: str, prefix: str) -> None:
    cluster = Cluster(work, pids, storage, prefix)
    await asyncio.to_thread(cluster.init)
    print(f"scale-out on PostgreSQL + Redis; cores {os.cpu_count()}; python {sys.version.split()[0]}")
    props = []
    for replicas in (1, 2):
        print(f"propagation, {replicas} replica(s), {args.watchers} watchers ...", flush=True)
        props.append(await propagation_cell(cluster, replicas, args.watchers, args.writes, args.transport))
    writes = []
    for replicas in (1, 2):
        print(f"write throughput, {replicas} replica(s) ...", flush=True)
        writes.append(await throughput_cell(cluster, replicas, args.connections, args.duration))
    print_report(props, writes, args)


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["_client"]:  # not ours: propagation.py's clients are started by path
        return int(prop.client_main(args_in[1:]))
    parser = argparse.ArgumentParser(description="Propagation and write throughput: one replica vs two.")
    parser.add_argument("--watchers", type=prop.positive_int, default=DEFAULT_WATCHERS)
    parser.add_argument("--writes", type=prop.positive_int, default=DEFAULT_WRITES)
    parser.add_argument("--connections", type=prop.positive_int, default=DEFAULT_CONNECTIONS)
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S)
    parser.add_argument(
        "--transport", choices=("sse", "grpc"), default="sse", help="how the watchers watch (sse)"
    )
    args = parser.parse_args(args_in)
    prop.raise_nofile_limit()
    signal.signal(signal.SIGTERM, rt._interrupt)
    pids = prop.Pids()
    work = Path(tempfile.mkdtemp(prefix="llmcm-bench-scaleout-"))
    try:
        with bench_database() as storage, bench_prefix() as prefix:
            try:
                asyncio.run(run(args, work, pids, storage, prefix))
            finally:
                pids.stop_all()  # before the database is dropped
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


if __name__ == "__main__":
    sys.exit(main())

"""The agent's own costs: memory while watching, start-up time, change-to-reload latency.

Why this exists: an agent runs beside every application pod, so what it costs is paid once
per pod. This script runs the real ``llm-config-agent`` against a real server and measures:

1. **Start-up**: process start to the first file written, for 100 configs. ``init`` (the
   init container) runs ``--starts`` times on an empty output directory; the time is from
   just before the process is started to the moment the set is visible (its ``..data``
   symlink exists, polled every millisecond), and to the process's exit. The same is read
   for the ``watch`` process (a sidecar without an init container) that steps 2 and 3 use.
2. **Memory**: the ``watch`` agent's resident set size (VmRSS) once it has synced and sat
   idle for a few seconds, again after the changes of step 3, and its peak (VmHWM);
   proportional (PSS) and unique (USS) figures beside it, as shared libraries count fully
   in RSS.
3. **Latency**: ``--changes`` changes (default 200), one at a time, each a PUT of one of the
   100 configs. A small app (this file, ``_app`` mode; found by the agent through its pid
   file) reads the changed file on every SIGHUP and reports the time. The figure is from
   the PUT's response received to the app holding the signal with the new content in the
   file (so: file replaced and signal received), p50 / p99 / max; and, from the ``..data``
   symlink's mtime, to the file set being replaced (file system timestamps are coarse,
   a few milliseconds). Changes that arrive at the app together, or not at all within
   ``CHANGE_WAIT_S``, are counted.

How to run it, from the repository root:

    .venv/bin/python bench/agent.py
    .venv/bin/python bench/agent.py --transport grpc --cache --changes 50

The agent runs as the seed's sidecar example does: REST + SSE (``http://``), no cache
unless ``--cache`` (then an encrypted cache at CACHE_PATH), SIGHUP to the app found by pid
file, log level info to a file. The server is started fresh (temporary data directory, free
loopback ports, gRPC on a free port only with ``--transport grpc``, else ``--grpc-port 0``).

It exits 0 once the report is printed, whether or not the targets are met (it is a report,
not a test), and 1 when something needed to run it failed. Every process it started is
stopped by its pid (process group) and the temporary directory removed, on success,
failure or Ctrl-C. Everything listens and connects on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import math
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
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


NAMESPACE = "bench/agent"
ENV = "production"
CONFIGS = 100
CHANGED_KEY = "cfg-000"

# Targets of the issue.
TARGET_RSS_MB = 40.0
TARGET_START_S = 0.5

DEFAULT_CHANGES = 200
DEFAULT_STARTS = 5
SETTLE_S = 3.0  # idle time before a memory reading
CHANGE_GAP_S = 0.02  # after the app has one change, before the next PUT
CHANGE_WAIT_S = 10.0  # at most this long for the app to see one change
START_TIMEOUT_S = 30.0  # at most this long for a set to appear
POLL_S = 0.001
APP_LIFETIME_S = 3600.0  # the app exits by itself after this long, whatever happens


def config_value(seq: int, index: int) -> dict[str, Any]:
    """A ~1 KB model-endpoint config (read_throughput.py's, without its secret reference)."""
    rt = _load_read_throughput()
    value: dict[str, Any] = {**rt.GLOBAL_LAYER, **rt.PRODUCTION_LAYER}
    value.pop("secrets", None)
    value["index"] = index
    value["seq"] = seq
    return value


def key_name(index: int) -> str:
    return f"cfg-{index:03d}"


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


# == the app (this file, `_app` mode) ==============================================================


def app_main(argv: Sequence[str]) -> int:
    """Writes its pid file; on each SIGHUP reads the changed file and prints what it saw."""
    parser = argparse.ArgumentParser(prog="agent.py _app")
    parser.add_argument("--pid-file", required=True)
    parser.add_argument("--config-dir", required=True)
    args = parser.parse_args(argv)
    config_dir = Path(args.config_dir)
    watched = config_dir / NAMESPACE / f"{CHANGED_KEY}.json"
    data_link = config_dir / "..data"

    def on_hup(signum: int, frame: object) -> None:
        at = time.monotonic()
        report: dict[str, Any] = {"at": at, "seq": None}
        try:
            report["seq"] = json.loads(watched.read_bytes()).get("seq")
            report["data_mtime_ns"] = data_link.lstat().st_mtime_ns
        except (OSError, ValueError) as exc:
            report["error"] = f"{type(exc).__name__}: {exc}"
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()

    signal.signal(signal.SIGHUP, on_hup)
    Path(args.pid_file).write_text(f"{os.getpid()}\n")
    sys.stdout.write(json.dumps({"ready": os.getpid()}) + "\n")
    sys.stdout.flush()
    deadline = time.monotonic() + APP_LIFETIME_S
    while time.monotonic() < deadline:
        time.sleep(0.5)  # a signal interrupts the sleep; its handler runs at once
    return 0


# == the orchestrator ==============================================================================


@dataclass(slots=True)
class Memory:
    rss_mb: float
    hwm_mb: float
    pss_mb: float
    uss_mb: float


@dataclass(slots=True)
class Results:
    init_visible_s: list[float] = field(default_factory=list)
    init_exit_s: list[float] = field(default_factory=list)
    watch_visible_s: float = math.nan
    idle: Memory | None = None
    after: Memory | None = None
    latency_s: list[float] = field(default_factory=list)
    replaced_s: list[float] = field(default_factory=list)
    merged: int = 0
    missed: int = 0


def read_memory(pid: int) -> Memory:
    status: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                status[name] = int(rest.split()[0]) / 1024
    pss = uss = 0.0
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            kb = int(rest.split()[0]) if rest.split() and rest.split()[0].isdigit() else 0
            if name == "Pss":
                pss = kb / 1024
            elif name in ("Private_Clean", "Private_Dirty"):
                uss += kb / 1024
    return Memory(status.get("VmRSS", math.nan), status.get("VmHWM", math.nan), pss, uss)


class Writer:
    """PUTs over one keep-alive connection (a new one if the server closed it)."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.conn: http.client.HTTPConnection | None = None

    def put(self, key: str, value: dict[str, Any]) -> tuple[int, float]:
        """(revision, time.monotonic() when the response was read)."""
        rt = _load_read_throughput()
        body = json.dumps({"value": value, "message": "bench: agent"}).encode()
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(rt.HOST, self.port, timeout=30)
            try:
                self.conn.request("PUT", f"/v1/configs/{NAMESPACE}/{key}?env={ENV}", body, self.headers)
                reply = self.conn.getresponse()
                data = reply.read()
                at = time.monotonic()
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
                continue
            if not 200 <= reply.status < 300:
                raise rt.BenchError(f"PUT {NAMESPACE}/{key} answered HTTP {reply.status}: {data[:300]!r}")
            return int(json.loads(data)["revision"]), at
        raise rt.BenchError("not reached")

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.rt = _load_read_throughput()
        self.children: list[Any] = []
        self.port = 0
        self.grpc_port = 0
        self.token = ""
        self.tenant_id = ""

    # ---- processes

    def start(self, name: str, argv: Sequence[str]) -> Any:
        child = self.rt.start_child(name, argv, self.tmp / f"{name}.log")
        self.children.append(child)
        return child

    def stop(self, child: Any) -> None:
        self.rt.stop_child(child)
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.children)):
            self.stop(child)

    def start_server(self) -> None:
        rt = self.rt
        data = self.tmp / "server-data"
        self.tenant_id, self.token = rt.init_server(data)
        self.port = rt.free_port()
        self.grpc_port = rt.free_port() if self.args.transport == "grpc" else 0
        argv = rt.server_argv(
            "serve", "--data", str(data), "--host", rt.HOST, "--port", str(self.port),
            "--grpc-port", str(self.grpc_port), "--log-level", "warning",
        )  # fmt: skip
        server = self.start("server", argv)
        rt.wait_ready(server, self.port, "/health/ready")

    def agent_env(self, config_dir: Path) -> dict[str, str]:
        scheme = f"grpc://{self.rt.HOST}:{self.grpc_port}" if self.args.transport == "grpc" else ""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CONFIG_", "CACHE_", "LLMCM_"))
            and k not in ("NAMESPACES", "ENVIRONMENT", "TENANT_ID", "SYNC_INTERVAL", "RELOAD_SIGNAL")
        }
        env.update(
            CONFIG_SERVER=scheme or f"http://{self.rt.HOST}:{self.port}",
            CONFIG_TOKEN=self.token,
            TENANT_ID=self.tenant_id,
            NAMESPACES=NAMESPACE,
            ENVIRONMENT=ENV,
            CONFIG_DIR=str(config_dir),
            SYNC_INTERVAL="30s",
            RELOAD_SIGNAL="SIGHUP",
            LLMCM_AGENT_AGENT_ID=f"bench-{config_dir.name}",
        )
        if self.args.cache:
            env["CACHE_PATH"] = str(self.tmp / f"cache-{config_dir.name}" / "agent.db")
        return env

    def spawn_agent(self, name: str, mode_args: Sequence[str], config_dir: Path) -> tuple[Any, float]:
        """Start an agent; (its child record, time.monotonic() just before the start)."""
        argv = [sys.executable, "-m", "agent.main", *mode_args]
        log_path = self.tmp / f"{name}.log"
        with log_path.open("wb") as log:
            t0 = time.monotonic()
            popen = subprocess.Popen(
                argv,
                cwd=self.rt.REPO_ROOT,
                env=self.agent_env(config_dir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = self.rt.Child(name, popen, log_path)
        self.children.append(child)
        return child, t0

    def wait_visible(self, child: Any, config_dir: Path, t0: float) -> float:
        """Seconds from ``t0`` until the set is visible (``..data`` exists)."""
        link = config_dir / "..data"
        deadline = t0 + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if os.path.lexists(link):
                return time.monotonic() - t0
            if child.popen.poll() is not None and not os.path.lexists(link):
                raise self.rt.BenchError(
                    f"{child.name} exited {child.popen.returncode} without writing a set:\n{child.log_tail()}"
                )
            time.sleep(POLL_S)
        raise self.rt.BenchError(f"{child.name} wrote no set within {START_TIMEOUT_S:.0f} s")

    # ---- the measurements

    def seed(self, writer: Writer) -> None:
        for index in range(CONFIGS):
            writer.put(key_name(index), config_value(0, index))

    def measure_init(self, results: Results) -> None:
        for run in range(self.args.starts):
            config_dir = self.tmp / f"init-{run}"
            child, t0 = self.spawn_agent(f"agent-init-{run}", ["init"], config_dir)
            results.init_visible_s.append(self.wait_visible(child, config_dir, t0))
            try:
                code = child.popen.wait(timeout=START_TIMEOUT_S)
            except Exception as exc:
                raise self.rt.BenchError(f"init did not exit within {START_TIMEOUT_S:.0f} s") from exc
            results.init_exit_s.append(time.monotonic() - t0)
            if code != 0:
                raise self.rt.BenchError(f"init exited {code}:\n{child.log_tail()}")
            self.stop(child)
            files = list((config_dir / NAMESPACE).glob("*.json"))
            if len(files) != CONFIGS:
                raise self.rt.BenchError(f"init wrote {len(files)} files, expected {CONFIGS}")

    def start_app(self, config_dir: Path) -> tuple[Any, queue.Queue[dict[str, Any]]]:
        pid_file = self.tmp / "app.pid"
        popen = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "_app", "--pid-file", str(pid_file),
             "--config-dir", str(config_dir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True, text=True,
        )  # fmt: skip
        child = self.rt.Child("app", popen, self.tmp / "app.log")
        self.children.append(child)
        reports: queue.Queue[dict[str, Any]] = queue.Queue()

        def pump() -> None:
            assert popen.stdout is not None
            for line in popen.stdout:
                with contextlib.suppress(ValueError):
                    reports.put(json.loads(line))

        threading.Thread(target=pump, daemon=True).start()
        try:
            first = reports.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            raise self.rt.BenchError("the app did not start") from None
        if "ready" not in first:
            raise self.rt.BenchError(f"the app said {first!r} before it was ready")
        return child, reports

    def measure_watch(self, results: Results, writer: Writer) -> None:
        config_dir = self.tmp / "watch"
        config_dir.mkdir()
        _app, reports = self.start_app(config_dir)
        pid_file = self.tmp / "app.pid"
        agent, t0 = self.spawn_agent(
            "agent-watch",
            ["watch", "--pid-file", str(pid_file), "--listen-port", str(self.rt.free_port())],
            config_dir,
        )
        results.watch_visible_s = self.wait_visible(agent, config_dir, t0)
        time.sleep(SETTLE_S)
        with contextlib.suppress(queue.Empty):  # the first set may or may not signal the app
            while True:
                reports.get_nowait()
        results.idle = read_memory(agent.popen.pid)

        for seq in range(1, self.args.changes + 1):
            if agent.popen.poll() is not None:
                raise self.rt.BenchError(f"the agent exited {agent.popen.returncode}:\n{agent.log_tail()}")
            _revision, acked = writer.put(CHANGED_KEY, config_value(seq, 0))
            acked_wall = time.time_ns() - int((time.monotonic() - acked) * 1e9)
            deadline = acked + CHANGE_WAIT_S
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    results.missed += 1
                    break
                try:
                    report = reports.get(timeout=remaining)
                except queue.Empty:
                    continue
                seen = report.get("seq")
                if isinstance(seen, int) and seen >= seq:
                    if seen > seq:
                        results.merged += 1
                    results.latency_s.append(report["at"] - acked)
                    if isinstance(report.get("data_mtime_ns"), int):
                        results.replaced_s.append(max(0.0, (report["data_mtime_ns"] - acked_wall) / 1e9))
                    break
            time.sleep(CHANGE_GAP_S)
        time.sleep(SETTLE_S)
        results.after = read_memory(agent.popen.pid)

    def run(self) -> Results:
        results = Results()
        self.start_server()
        writer = Writer(self.port, self.token)
        try:
            self.seed(writer)
            self.measure_init(results)
            self.measure_watch(results, writer)
        finally:
            writer.close()
        return results


# == the report ====================================================================================


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def report(args: argparse.Namespace, results: Results) -> None:
    ms = 1000.0
    cache = "on" if args.cache else "off"
    print(f"agent bench: {CONFIGS} configs (~1 KB each) in {NAMESPACE!r}, transport {args.transport}, "
          f"cache {cache}, SIGHUP to an app found by pid file")  # fmt: skip
    print()
    print("start-up (process start to the set visible; init also to its exit):")
    visible = results.init_visible_s
    if visible:
        median = statistics.median(visible)
        ok = verdict(median <= TARGET_START_S)
        print(f"  init   first files  median {median:6.3f} s  max {max(visible):6.3f} s "
              f"over {len(visible)} runs   target <= {TARGET_START_S} s: {ok}")  # fmt: skip
        print(f"  init   exit         median {statistics.median(results.init_exit_s):6.3f} s")
    print(f"  watch  first files         {results.watch_visible_s:6.3f} s")
    print()
    print("memory of the watch agent:")
    after = f"after {args.changes} changes"
    readings = [("idle, after the first sync", results.idle), (after, results.after)]
    for label, mem in readings:
        if mem is not None:
            print(f"  {label:28s} RSS {mem.rss_mb:5.1f} MB  "
                  f"(PSS {mem.pss_mb:5.1f} MB, USS {mem.uss_mb:5.1f} MB)")  # fmt: skip
    if results.idle is not None and results.after is not None:
        worst = max(results.idle.rss_mb, results.after.rss_mb)
        print(f"  peak RSS (VmHWM) {results.after.hwm_mb:5.1f} MB; "
              f"RSS while watching {worst:5.1f} MB   target <= {TARGET_RSS_MB:.0f} MB: "
              f"{verdict(worst <= TARGET_RSS_MB)}")  # fmt: skip
    print()
    lat = results.latency_s
    print(f"change on the server -> file replaced and SIGHUP received by the app "
          f"({len(lat)} of {args.changes}):")  # fmt: skip
    if lat:
        print(f"  p50 {percentile(lat, 50) * ms:7.1f} ms  p99 {percentile(lat, 99) * ms:7.1f} ms  "
              f"max {max(lat) * ms:7.1f} ms")  # fmt: skip
    rep = results.replaced_s
    if rep:
        print(f"  file set replaced (..data mtime, coarse clock): p50 {percentile(rep, 50) * ms:7.1f} ms  "
              f"p99 {percentile(rep, 99) * ms:7.1f} ms")  # fmt: skip
    print(f"  changes seen together with a later one: {results.merged}; not seen within "
          f"{CHANGE_WAIT_S:.0f} s: {results.missed}")  # fmt: skip


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["_app"]:
        return app_main(argv[1:])
    parser = argparse.ArgumentParser(description="The agent's memory, start-up time and reload latency.")
    parser.add_argument("--transport", choices=("rest", "grpc"), default="rest")
    parser.add_argument("--cache", action="store_true", help="give the agents an encrypted cache")
    parser.add_argument("--changes", type=int, default=DEFAULT_CHANGES)
    parser.add_argument("--starts", type=int, default=DEFAULT_STARTS)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args(argv)
    if args.changes < 1 or args.starts < 1:
        parser.error("--changes and --starts must be at least 1")
    rt = _load_read_throughput()
    tmp = Path(tempfile.mkdtemp(prefix="llmcm-bench-agent-"))
    bench = Bench(args, tmp)
    try:
        results = bench.run()
    except rt.BenchError as exc:
        print(f"bench/agent.py: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/agent.py: interrupted", file=sys.stderr)
        return 1
    finally:
        bench.stop_all()
        if args.keep:
            print(f"(kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

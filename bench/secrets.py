"""Secret reads against config reads on one server, and the envelope primitives' own speed.

Why this exists: a plaintext secret read (``GET /v1/secrets/{namespace}/{key}``) does
everything a config read does (authentication, authorization, JSON encoding) and
more: it loads the secret's versions, unwraps the version's data key through the
key provider, opens the AES-256-GCM ciphertext, and writes an audit event that is
committed (fsync) before the value is returned. The server keeps an opened value, and
the answer encoded from it, in memory for a few seconds (server/service/secrets.py,
PLAINTEXT_TTL_SECONDS; any write to the tenant's secrets drops both), so under this
load the unwrap, open and encoding happen once per few seconds and each read pays for
authorization and the durable audit record, shared with the concurrent reads in one
group commit (server/storage/sqlite.py: one INSERT, one fsync); the envelope figures
below show what an open costs when it happens. With every connection waiting for the
same commit, the server alternates between answering and committing, so the time of a
commit counts against each batch of reads. This script measures that next to a config
read of a value of the same size (``GET /v1/configs/{namespace}/{key}``), on the same
server process, in the same run, alternately, so the ratio is meaningful even where the
absolute figures are not. The target is a ratio (secret / config) of at least 0.70. It also times the
envelope primitives in this process: sealing and opening a 1 KB value, each with
its own fresh data key, as the server does.

How to run it, from the repository root:

    .venv/bin/python bench/secrets.py
    .venv/bin/python bench/secrets.py --duration 5 --rounds 1 --connections 32

What it does:

1. ``llm-config-server init --json`` into a temporary data directory, then ``serve`` on a
   free loopback port, and waits (bounded) for ``GET /health/ready``.
2. Writes a ~1 KB JSON config ``llm-gateway/routing`` / ``primary-model`` in production,
   and a 1 KB secret ``api-keys`` / ``anthropic``, with the admin token from init; reads
   both back once and checks the values.
3. Loads both reads with ``wrk`` (``-t1 -c N --latency``, a 2 s warm-up of each first;
   the Python load generator of read_throughput.py when wrk is not on PATH), alternating
   config, secret, config, secret ... for ``--rounds`` rounds. Any non-2xx answer fails it.
4. Prints each round, the median req/s and p99 of each, and the ratio.
5. Times ``shared.crypto`` seal and open of a 1 KB value (new DEK and AAD per seal, a
   pool of distinct DEKs for opens) for 2 s each, and prints ops/s.

It exits 0 once the report is printed, whether or not the ratio reaches the target
(it is a report, not a test), and 1 when something needed to run it failed. The server
is stopped and the temporary directory removed in every case. Everything listens and
connects on 127.0.0.1 only.

The helpers (processes, HTTP, wrk) come from bench/read_throughput.py, loaded by path:
this file is named like the standard library's ``secrets`` module, so its directory is
taken off ``sys.path`` first, lest a later ``import secrets`` anywhere load this script.
"""

from __future__ import annotations

import sys
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]

import argparse  # noqa: E402
import base64  # noqa: E402
import hashlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402


def _load_read_throughput() -> ModuleType:
    name = "read_throughput"
    spec = importlib.util.spec_from_file_location(name, _BENCH_DIR / "read_throughput.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {_BENCH_DIR / 'read_throughput.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


rt = _load_read_throughput()
if str(rt.REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(rt.REPO_ROOT))  # shared.crypto, should the project not be installed

from shared.crypto import aad_for, new_key, open_sealed, seal  # noqa: E402

HOST = rt.HOST
CONFIG_NAMESPACE = "llm-gateway/routing"
CONFIG_KEY = "primary-model"
SECRET_NAMESPACE = "api-keys"
SECRET_KEY = "anthropic"
ENV = "production"
CONFIG_PATH = f"/v1/configs/{CONFIG_NAMESPACE}/{CONFIG_KEY}"
SECRET_PATH = f"/v1/secrets/{SECRET_NAMESPACE}/{SECRET_KEY}"
QUERY = f"env={ENV}"
TARGET_RATIO = 0.70
VALUE_BYTES = 1024
CRYPTO_SECONDS = 2.0
CRYPTO_MAX_OPS = 20_000_000  # per loop: a bound far above what one core does in CRYPTO_SECONDS
CRYPTO_DEK_POOL = 1024  # distinct (DEK, ciphertext) pairs the open loop cycles through
BenchError = rt.BenchError


def config_value() -> dict[str, Any]:
    """The production model-endpoint config of read_throughput.py, padded to 1 KB of compact JSON."""
    value: dict[str, Any] = {**rt.GLOBAL_LAYER, **rt.PRODUCTION_LAYER, "notes": ""}
    size = len(json.dumps(value, separators=(",", ":")).encode())
    value["notes"] = "n" * max(0, VALUE_BYTES - size)
    return value


def secret_value() -> str:
    """A 1 KB API-key-like string (ASCII, so 1 KB of UTF-8)."""
    body = base64.urlsafe_b64encode(hashlib.sha512(b"llmcm-bench").digest() * 16).decode()
    return ("sk-ant-api03-" + body)[:VALUE_BYTES]


# -- seeding ------------------------------------------------------------------------------------


def request_ok(port: int, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> bytes:
    status, data, _ = rt.http_request(port, method, path, token=token, body=body)
    if not 200 <= status < 300:
        raise BenchError(f"{method} {path} answered HTTP {status}: {data[:500]!r}")
    return data


def seed(port: int, token: str) -> tuple[bytes, bytes]:
    """Write the config and the secret; read each back once; return both response bodies."""
    config = config_value()
    secret = secret_value()
    request_ok(
        port, "PUT", f"{CONFIG_PATH}?{QUERY}", token, {"value": config, "message": "bench: 1 KB config"}
    )
    request_ok(port, "PUT", SECRET_PATH, token, {"value": secret, "message": "bench: 1 KB secret"})
    config_body = request_ok(port, "GET", f"{CONFIG_PATH}?{QUERY}", token)
    if json.loads(config_body).get("value") != config:
        raise BenchError(f"GET {CONFIG_PATH}?{QUERY} did not return the value written: {config_body[:500]!r}")
    secret_body = request_ok(port, "GET", f"{SECRET_PATH}?{QUERY}", token)
    if json.loads(secret_body).get("value") != secret:
        raise BenchError(f"GET {SECRET_PATH}?{QUERY} did not return the secret written")
    return config_body, secret_body


# -- envelope primitives, in process --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CryptoRate:
    ops: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    @property
    def us_per_op(self) -> float:
        return self.seconds / self.ops * 1e6 if self.ops else float("nan")


def _aad(version: int) -> bytes:
    # The server's AAD for a secret's ciphertext (server/service/secrets.py: _aad("secret", ...)).
    return aad_for(
        purpose="secret", tenant="bench-tenant", namespace=SECRET_NAMESPACE, key=SECRET_KEY, version=version
    )


def bench_seal(plaintext: bytes, seconds: float) -> CryptoRate:
    """new DEK + AAD + seal, per op, as SecretService.put does (the KEK wrap is left out)."""
    ops = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    for i in range(CRYPTO_MAX_OPS):
        seal(new_key(), plaintext, _aad(i + 1))
        ops += 1
        now = time.perf_counter()
        if now >= deadline:
            break
    return CryptoRate(ops, now - start)


def bench_open(plaintext: bytes, seconds: float) -> CryptoRate:
    """AAD + open, per op, over a pool of values each sealed with its own DEK (the unwrap is left out)."""
    pool = []
    for i in range(CRYPTO_DEK_POOL):
        dek = new_key()
        pool.append((dek, seal(dek, plaintext, _aad(i + 1)), i + 1))
    for dek, sealed, version in pool[:3]:
        if open_sealed(dek, sealed, _aad(version), "bench") != plaintext:
            raise BenchError("open_sealed did not return the sealed plaintext")
    ops = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    for i in range(CRYPTO_MAX_OPS):
        dek, sealed, version = pool[i % CRYPTO_DEK_POOL]
        open_sealed(dek, sealed, _aad(version), "bench")
        ops += 1
        now = time.perf_counter()
        if now >= deadline:
            break
    return CryptoRate(ops, now - start)


# -- the benchmark ----------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace, work: Path, children: list[Any]) -> None:
    tool = rt.choose_load_tool("auto")
    data_dir = work / "data"
    data_dir.mkdir()
    _, token = rt.init_server(data_dir)

    port = rt.free_port()
    # REST only: with gRPC on, the server would also want its default gRPC port, maybe taken
    os.environ["LLMCM_GRPC_PORT"] = "0"
    server = rt.start_child(
        "llm-config-server",
        rt.server_argv("serve", "--data", str(data_dir), "--host", HOST, "--port", str(port)),
        work / "server.log",
    )
    children.append(server)
    rt.wait_ready(server, port, "/health/ready")
    config_body, secret_body = seed(port, token)

    targets = {
        "config": f"http://{HOST}:{port}{CONFIG_PATH}?{QUERY}",
        "secret": f"http://{HOST}:{port}{SECRET_PATH}?{QUERY}",
    }
    print(f"secrets: GET {SECRET_PATH}?{QUERY} (decrypt + audit) vs GET {CONFIG_PATH}?{QUERY}")
    print(f"cores (os.cpu_count()): {os.cpu_count()}")
    print(f"load tool: {tool.label}")
    print(f"connections: {args.connections}   duration: {args.duration} s   rounds: {args.rounds}")
    config_bytes = len(json.dumps(config_value(), separators=(",", ":")).encode())
    print(
        f"config: value {config_bytes} bytes, response {len(config_body)} bytes   "
        f"secret: value {len(secret_value().encode())} bytes, response {len(secret_body)} bytes"
    )
    print(f"python: {sys.version.split()[0]}   server pid {server.popen.pid}")
    print()

    for name, url in targets.items():
        print(f"warm-up {name}: {rt.WARMUP_S} s")
        rt.check_clean(f"{name} (warm-up)", tool.measure(url, token, args.connections, rt.WARMUP_S))

    results: dict[str, list[Any]] = {name: [] for name in targets}
    print()
    print(f"{'round':<20} {'req/s':>11} {'p99 ms':>10}")
    for round_no in range(1, args.rounds + 1):
        for name, url in targets.items():
            m = tool.measure(url, token, args.connections, args.duration)
            rt.check_clean(name, m)
            results[name].append(m)
            print(rt.fmt_row(f"{round_no}  {name}", m), flush=True)

    summary = {name: rt.summarize(ms) for name, ms in results.items()}
    ratio = summary["secret"].rps / summary["config"].rps if summary["config"].rps > 0 else 0.0
    how = "median" if args.rounds > 1 else "single run"
    print()
    print(f"{'target (' + how + ')':<20} {'req/s':>11} {'p99 ms':>10}")
    print(rt.fmt_row("config get", summary["config"]))
    print(rt.fmt_row("secret get", summary["secret"]))
    print()
    verdict = "PASS" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(f"ratio (secret / config): {ratio:.2f}  (target >= {TARGET_RATIO:.2f})  {verdict}")
    if tool.wrk is None:
        print(
            "note: one Python load-generator process is likely the bottleneck here; "
            "install wrk for figures that are the server's own"
        )

    plaintext = secret_value().encode()
    print()
    print(
        f"envelope primitives, in this process (shared.crypto, AES-256-GCM, {len(plaintext)}-byte value, "
        f"{CRYPTO_SECONDS:.0f} s each, server idle)"
    )
    print(f"{'operation':<44} {'ops/s':>11} {'us/op':>8}")
    rates = {
        "encrypt (new_key + aad_for + seal)": bench_seal(plaintext, CRYPTO_SECONDS),
        f"decrypt (aad_for + open_sealed, {CRYPTO_DEK_POOL} DEKs)": bench_open(plaintext, CRYPTO_SECONDS),
    }
    for label, rate in rates.items():
        print(f"{label:<44} {rate.per_second:>11.0f} {rate.us_per_op:>8.2f}  ({rate.ops} ops)")


# -- command line -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Secret get (decrypt path) against config get on one server; envelope seal/open speed."
    )
    parser.add_argument("--duration", type=rt.positive_int, default=10, help="seconds per measured run (10)")
    parser.add_argument("--connections", type=rt.positive_int, default=32, help="concurrent connections (32)")
    parser.add_argument(
        "--rounds", type=rt.positive_int, default=2, help="config/secret rounds, alternating (2)"
    )
    args = parser.parse_args(argv)

    # SIGTERM takes the same way out as Ctrl-C, so the server is stopped and the directory removed.
    signal.signal(signal.SIGTERM, rt._interrupt)
    children: list[Any] = []
    work = Path(tempfile.mkdtemp(prefix="llmcm-bench-secrets-"))
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
            rt.stop_child(child)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

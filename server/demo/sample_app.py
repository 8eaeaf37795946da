"""The demo's sample LLM app: reads its config files, reloads them on SIGHUP, prints its active model.

It stands for any app that takes its configuration from files an agent keeps current:

    python sample_app.py --config-dir ./demo-config --state STATE.json --pid-file app.pid

On start and on every SIGHUP it reads one consistent set through ``..data`` (the agent
swaps whole sets by renaming that link, so resolving it once means never mixing two sets):
``llm-gateway/primary-model.json`` (the endpoint, its fallback chain and the injected API
key), ``llm-gateway/support-prompt.json`` and ``llm-gateway/routing.json``. It prints one
line naming the model it now uses and rewrites --state (JSON, atomically) with the reload
count, the time the reload finished, the set's revision and what it loaded; the demo reads
that file to measure the time from a write to the reload. The API key is only ever shown
masked. A set it cannot read leaves the app on its last good config. SIGTERM or SIGINT
stops it; with --exit-with-parent it also stops when the process that started it is gone.

Only the standard library is used, so the file can be copied and run anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

FILES = ("primary-model", "support-prompt", "routing")
NAMESPACE = "llm-gateway"


def mask(secret: str) -> str:
    """``sk-ant-...1a2b``: enough to tell two keys apart, never the key."""
    if len(secret) < 16:
        return "****"
    return f"{secret[:7]}...{secret[-4:]}"


def read_set(config_dir: Path) -> dict[str, Any]:
    """The three configs and the revision of the set ``..data`` points at now."""
    root = Path(os.path.realpath(config_dir / "..data"))
    loaded: dict[str, Any] = {}
    for name in FILES:
        value = json.loads((root / NAMESPACE / f"{name}.json").read_text(encoding="utf-8"))
        if not isinstance(value, dict):
            raise ValueError(f"{name}.json does not hold an object")
        loaded[name] = value
    try:
        meta = json.loads((root / "..meta.json").read_text(encoding="utf-8"))
        loaded["revision"] = int(meta.get("revision") or 0)
    except (OSError, ValueError, AttributeError):
        loaded["revision"] = 0
    return loaded


def describe(loaded: dict[str, Any]) -> dict[str, Any]:
    """What the app runs with, in a form safe to print and to store (the key masked)."""
    endpoint, prompt, routing = (loaded[name] for name in FILES)
    fallback = [f"{f.get('provider')}/{f.get('model')}" for f in endpoint.get("fallback", [])]
    key = endpoint.get("api_key")
    return {
        "model": f"{endpoint.get('provider')}/{endpoint.get('model')}",
        "fallback": fallback,
        "key": mask(key) if isinstance(key, str) else "(none)",
        "prompt_variables": list(prompt.get("variables", [])),
        "strategy": routing.get("strategy"),
        "requests_per_minute": (routing.get("rate_limit") or {}).get("requests_per_minute"),
        "revision": loaded["revision"],
    }


def write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config-dir", required=True, type=Path)
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--pid-file", required=True, type=Path)
    parser.add_argument("--exit-with-parent", action="store_true")
    args = parser.parse_args(argv)

    waited = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)  # taken with sigtimedwait below, never lost
    parent = os.getppid()
    state: dict[str, Any] = {"pid": os.getpid(), "reloads": -1}
    running: dict[str, Any] | None = None

    def load(reason: str) -> None:
        nonlocal running
        try:
            now = describe(read_set(args.config_dir))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"[app] {reason}: cannot read the config ({exc}); keeping the last good one", flush=True)
            return
        running = now
        state.update(now, reloads=state["reloads"] + 1, loaded_at=time.time(), reason=reason)
        write_state(args.state, state)
        chain = " -> ".join(now["fallback"]) or "none"
        print(
            f"[app] {reason} (revision {now['revision']}): active model {now['model']}, "
            f"fallback {chain}, key {now['key']}, {now['requests_per_minute']} requests/min",
            flush=True,
        )

    load("started")
    if running is None:
        return 1
    args.pid_file.write_text(f"{os.getpid()}\n", encoding="ascii")
    while True:
        info = signal.sigtimedwait(waited, 0.5)
        if info is None:
            if args.exit_with_parent and os.getppid() != parent:
                return 0
            continue
        if info.si_signo == signal.SIGHUP:
            load("reloaded on SIGHUP")
            continue
        print("[app] stopping", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())

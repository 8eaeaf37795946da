"""A sample app that reads a JSON config, reloads it on SIGHUP, and exits on a bad config.

A config is bad when it is not JSON or holds ``"valid": false``. The app serves
``GET /healthz`` (200) and ``GET /config`` (the config it runs with) on --port, writes
its pid to --pid-file, and appends "loaded <json>" / "bad" lines to --record. It prints
"ready <pid>" once serving, and exits by itself after --lifetime seconds.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any


def load(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and value.get("valid", True) is not False else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid-file", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args()
    config_path, record = Path(args.config), Path(args.record)

    def note(line: str) -> None:
        with record.open("a") as fh:
            fh.write(line + "\n")

    current = load(config_path)
    if current is None:
        note("bad")
        os._exit(3)
    note(f"loaded {json.dumps(current, sort_keys=True)}")
    hup = threading.Event()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        hup.set()

    signal.signal(signal.SIGHUP, on_hup)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                body = b"ok"
            elif self.path == "/config":
                body = json.dumps(current).encode()
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Path(args.pid_file).write_text(f"{os.getpid()}\n")
    print("ready", os.getpid(), flush=True)
    deadline = time.monotonic() + args.lifetime
    while time.monotonic() < deadline:
        if hup.wait(0.05):
            hup.clear()
            new = load(config_path)
            if new is None:
                note("bad")
                os._exit(3)
            current = new
            note(f"loaded {json.dumps(current, sort_keys=True)}")
    server.shutdown()


if __name__ == "__main__":
    main()

"""A tiny app for the agent's reload tests, run as a real process.

It records every SIGHUP / SIGUSR1 it receives as a line "<SIGNAME> <pid>" in --record,
can set its process name (prctl), fork one worker that does the same, write a pid
file, serve GET /healthz on --health-port, and exit on SIGHUP (--exit-on-hup).
It prints "ready <pid> [<worker pid>]" once set up and exits by itself after --lifetime.
"""

from __future__ import annotations

import argparse
import ctypes
import http.server
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

PR_SET_NAME = 15


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", required=True)
    parser.add_argument("--name", default="")
    parser.add_argument("--marker", default="")
    parser.add_argument("--pid-file", default="")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--exit-on-hup", action="store_true")
    parser.add_argument("--health-port", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args()
    record = Path(args.record)

    if args.name:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, args.name.encode(), 0, 0, 0)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        with record.open("a") as fh:
            fh.write(f"{signal.Signals(signum).name} {os.getpid()}\n")
        if args.exit_on_hup and signum == signal.SIGHUP:
            os._exit(3)

    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGUSR1, on_signal)

    worker = 0
    if args.worker:
        worker = os.fork()
        if worker == 0:
            deadline = time.monotonic() + args.lifetime
            while time.monotonic() < deadline and os.getppid() != 1:
                time.sleep(0.05)
            os._exit(0)

    if args.pid_file:
        Path(args.pid_file).write_text(f"{os.getpid()}\n")

    if args.health_port:

        class Health(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/healthz" else 404)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a: object) -> None:
                pass

        server = http.server.HTTPServer(("127.0.0.1", args.health_port), Health)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    print("ready", os.getpid(), worker or "", flush=True)
    deadline = time.monotonic() + args.lifetime
    while time.monotonic() < deadline:
        time.sleep(0.05)
    sys.exit(0)


if __name__ == "__main__":
    main()

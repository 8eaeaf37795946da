"""A reader process for the torn-read test: parse every managed file in a tight loop.

Each round opens ``..data`` once (as an app that wants one consistent set does) and reads
every file relative to that directory; it also reads each file through its visible path.
Every file carries the same change number ``i`` (the JSON value, and the templates that
render it, with a padding whose length is checked and an end marker). Counted:

    torn       a file that does not parse, is cut short, or lacks its end marker
    mixed      files of one round that disagree on ``i`` (two sets mixed)
    backwards  a round whose ``i`` is lower than an earlier round's (an older set came back)
    vanished   the set was replaced and removed while a round was reading it (not an error:
               the round is simply retried)

It runs until --stop-file exists (or --limit seconds pass) and prints one JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

PAD = 4096


def parse(name: str, raw: bytes) -> int:
    """The change number in one file; ValueError when the file is torn or partial."""
    text = raw.decode()
    if name.endswith(".json"):
        value = json.loads(text)
        if len(value["pad"]) != PAD:
            raise ValueError("short pad")
        return int(value["i"])
    lines = text.split("\n")
    if len(lines) != 4 or lines[3] != "" or lines[2] != "end" or len(lines[1]) != PAD + 4:
        raise ValueError("partial template output")
    return int(lines[0].removeprefix("i="))


def read_at(dir_fd: int, rel: str) -> bytes:
    fd = os.open(rel, os.O_RDONLY, dir_fd=dir_fd)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--files", required=True, help="comma-separated paths relative to the root")
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--limit", type=float, default=120.0)
    args = parser.parse_args()
    root, stop = Path(args.root), Path(args.stop_file)
    files = args.files.split(",")
    counts = {"rounds": 0, "visible_reads": 0, "torn": 0, "mixed": 0, "backwards": 0, "vanished": 0}
    distinct: set[int] = set()
    last = -1
    examples: list[str] = []
    print("ready", flush=True)
    deadline = time.monotonic() + args.limit
    while time.monotonic() < deadline and not stop.exists():
        try:
            dir_fd = os.open(root / "..data", os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            counts["vanished"] += 1
            continue
        try:
            raws = [(rel, read_at(dir_fd, rel)) for rel in files]
        except FileNotFoundError:
            counts["vanished"] += 1
            continue
        finally:
            os.close(dir_fd)
        try:
            numbers = {parse(rel, raw) for rel, raw in raws}
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            counts["torn"] += 1
            examples.append(f"torn: {exc}")
            continue
        counts["rounds"] += 1
        if len(numbers) != 1:
            counts["mixed"] += 1
            examples.append(f"mixed: {sorted(numbers)}")
            continue
        number = numbers.pop()
        distinct.add(number)
        if number < last:
            counts["backwards"] += 1
            examples.append(f"backwards: {last} -> {number}")
        last = max(last, number)
        for rel in files:  # and each file on its own, through the visible path
            try:
                raw = (root / rel).read_bytes()
            except FileNotFoundError:
                counts["vanished"] += 1
                continue
            try:
                parse(rel, raw)
                counts["visible_reads"] += 1
            except (ValueError, KeyError, UnicodeDecodeError) as exc:
                counts["torn"] += 1
                examples.append(f"torn visible {rel}: {exc}")
    summary = {**counts, "distinct": len(distinct), "last": last, "examples": examples[:10]}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()

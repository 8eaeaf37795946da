"""Drift repair: a managed file edited, replaced or deleted by someone else is put back.

``watchfiles`` (inotify) reports changes under CONFIG_DIR; after a short debounce the
applier compares the applied set with what it wrote (``FileSet`` records a hash and mode
per file) and rewrites it if they differ, logging a warning. The agent's own staging
directories, lock and temporary links are not looked at. The app is not reloaded: the
files go back to what it was last told to load. Where file events cannot be watched,
the set is checked every SYNC_INTERVAL instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import structlog
from watchfiles import awatch

from agent.applier import Applier
from agent.fileset import DATA_LINK

log = structlog.get_logger("agent.drift")

DEBOUNCE_MS = 200
RUST_TIMEOUT_MS = 1000


def _relevant(root: Path, paths: set[str]) -> bool:
    """Whether any changed path is a visible name, ``..data``, or inside the applied set."""
    try:
        current = os.readlink(root / DATA_LINK)
    except OSError:
        current = ""
    for path in paths:
        try:
            first = Path(path).relative_to(root).parts[0]
        except (ValueError, IndexError):
            continue
        if first in (DATA_LINK, current) or not first.startswith(".."):
            return True
    return False  # only staging directories, the lock and temporary links: the agent's own


async def repair_drift(root: Path, applier: Applier, stop: asyncio.Event, *, fallback: float = 30.0) -> None:
    """Watch ``root`` until ``stop`` is set; repair the applied set whenever it drifts.

    Where file events cannot be watched (no inotify, too many watches), the set is checked
    every ``fallback`` seconds instead.
    """
    root = await asyncio.to_thread(root.absolute)
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    try:
        async for changes in awatch(
            root,
            watch_filter=None,
            debounce=DEBOUNCE_MS,
            step=50,
            stop_event=stop,
            rust_timeout=RUST_TIMEOUT_MS,
            recursive=True,
            ignore_permission_denied=True,
        ):
            if _relevant(root, {path for _, path in changes}):
                await applier.repair()
        return
    except (OSError, RuntimeError) as exc:  # what watchfiles raises when it cannot watch
        log.warning("drift_watch_unavailable", error=str(exc)[:200], check_every=fallback)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), fallback)
        if not stop.is_set():
            await applier.repair()

"""Following the server: the watch stream, the full syncs, and the apply loop of watch and edge modes.

Three tasks share one desired ``ConfigState``:

- the stream task opens the SDK watch from now. Its first event is a progress mark with
  the server's current revision R0; the task then fetches everything (list + resolved
  gets) and applies it at once: content equal to what is on disk (a set an init
  container or an earlier run wrote) is neither rewritten nor signalled. Later events
  merge into the state (``ConfigState`` rules: nothing older than what is held is
  taken, so events replayed after a reconnect are never applied twice); a change whose
  value references secrets is read again with a resolved get (the server injects them);
  a snapshot (the server no longer had the history to resume from) replaces the state.
  The SDK reconnects by itself with jittered backoff and resumes after the last revision
  it delivered. When the watch cannot start at all (server down at start-up) the task
  retries with exponential backoff and full jitter; when it fails for good (an error
  retrying cannot fix, like a proxy refusing the stream) it logs it and tries again after
  SYNC_INTERVAL, with a new client when the token was refused (the token file is read
  again). Either way the new stream starts over with a fresh full sync.
- the apply loop waits for the state to change (with ``--wait MIN:MAX``, for the burst to
  end) and applies a copy: one set and one reload per burst.
- the poll task is the fallback: when the stream has said nothing for longer than
  SYNC_INTERVAL (streaming unavailable, a proxy buffering it, the server down), it does a
  full sync itself, merged with the highest revision the stream had seen as floor.
"""

from __future__ import annotations

import asyncio
import random
import time

import structlog

from agent.applier import Applier
from agent.config import AgentConfig
from agent.health import AgentStatus
from agent.reload import Debouncer
from agent.source import Source
from agent.state import ConfigState
from shared.errors import LLMConfigError, PermissionDenied, Unauthenticated, Unavailable
from shared.sdk import Change, Progress, Snapshot, WatchEvent

log = structlog.get_logger("agent.follow")

RETRY_BASE_DELAY = 0.25
RETRY_MAX_DELAY = 10.0


class Follower:
    def __init__(
        self,
        cfg: AgentConfig,
        source: Source,
        applier: Applier,
        status: AgentStatus,
        *,
        state: ConfigState | None = None,
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.applier = applier
        self.status = status
        self.state = state.copy() if state is not None else ConfigState()
        self.debouncer = Debouncer(*cfg.wait) if cfg.wait is not None else None
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()  # one merge at a time (a full sync spans awaits)
        self.seen_revision: int | None = None  # highest revision the current stream delivered
        self.last_activity = time.monotonic()
        self.synced = asyncio.Event()  # set after the first full sync was applied
        self._connected = False  # the current stream got its first progress mark

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._stream_loop(), name="agent-stream")
            tasks.create_task(self._apply_loop(), name="agent-apply")
            tasks.create_task(self._poll_loop(), name="agent-poll")

    # ---- the stream

    async def _stream_loop(self) -> None:
        failures = 0  # in a row, without a working stream in between
        while True:
            self._connected = False
            try:
                await self._follow_stream()
                error: LLMConfigError = Unavailable("the watch ended")
            except LLMConfigError as exc:
                error = exc
            failures = 1 if self._connected else failures + 1
            self.seen_revision = None
            self.status.record_failure("sync")
            if error.retriable:  # the server is away: try again soon, with jitter
                delay = random.uniform(0, min(RETRY_MAX_DELAY, RETRY_BASE_DELAY * 2**failures))
                log.warning("watch_retrying", error=error.detail, delay=round(delay, 3), failures=failures)
            else:  # retrying at once would fail the same way: the poll covers until the next try
                delay = self.cfg.sync_interval
                log.error("watch_failed", error=error.detail, retry_in=delay)
                if isinstance(error, Unauthenticated | PermissionDenied):
                    reason = f"watch: {error.detail}"
                    self.applier.reporter.submit("error", self.applier.good_revision, reason)
                    await self.source.reset()  # a new client reads the token file again
            await asyncio.sleep(delay)

    async def _follow_stream(self) -> None:
        stream = self.source.watch()
        first = True
        try:
            async for event in stream:
                self.last_activity = time.monotonic()
                if first:
                    first = False
                    if not isinstance(event, Progress):
                        raise LLMConfigError("the server's watch did not start with a progress mark")
                    self.seen_revision = event.revision
                    self._connected = True
                    log.info("watch_connected", revision=event.revision)
                    await self._initial_sync(event.revision)
                    continue
                self.seen_revision = max(self.seen_revision or 0, event.revision)
                await self._on_event(event)
        finally:
            await stream.aclose()

    async def _initial_sync(self, revision: int) -> None:
        async with self._lock:
            fetched = await self.source.fetch(revision)
            self.state.merge_fetch(fetched, revision)
            state = self.state.copy()
        outcome = await self.applier.apply(state)
        log.info("watch_synced", revision=revision, outcome=outcome.value, entries=len(state.entries))
        self.synced.set()

    async def _on_event(self, event: WatchEvent) -> None:
        if isinstance(event, Progress):
            self._on_progress(event.revision)
            return
        async with self._lock:
            if isinstance(event, Snapshot):
                changed = await self._on_snapshot(event)
            else:
                changed = await self._on_change(event)
                self.state.advance(event.revision)  # events come in revision order
        if changed:
            self._changed()

    async def _on_change(self, change: Change) -> bool:
        name = (change.namespace, change.key)
        if not self.source.manages(change.namespace) or not self.state.newer(name, change.revision):
            return False
        entry = await self.source.resolve(change)
        log.debug("change", namespace=change.namespace, key=change.key, revision=change.revision)
        if entry is None:
            return self.state.delete(name, change.revision)
        return self.state.put(name, entry)

    async def _on_snapshot(self, snapshot: Snapshot) -> bool:
        log.warning("watch_snapshot", revision=snapshot.revision, items=len(snapshot.items))
        entries = []
        for item in snapshot.items:
            if not self.source.manages(item.namespace):
                continue
            entry = await self.source.resolve(item)
            if entry is not None:
                entries.append(((item.namespace, item.key), entry))
        return self.state.replace(entries, snapshot.revision)

    def _on_progress(self, revision: int) -> None:
        self.state.advance(revision)
        if self._pending():
            return
        self.applier.confirm(revision)

    def _pending(self) -> bool:
        """Whether the desired state differs from the applied one (or is about to be applied)."""
        if self._dirty.is_set() or (self.debouncer is not None and self.debouncer.pending):
            return True
        if self.applier.lock.locked():
            return True
        return not self.state.same_entries(self.applier.good_state)

    def _changed(self) -> None:
        if self.debouncer is not None:
            self.debouncer.notify()
        else:
            self._dirty.set()

    # ---- applying

    async def _apply_loop(self) -> None:
        while True:
            if self.debouncer is not None:
                await self.debouncer.wait()
            else:
                await self._dirty.wait()
                self._dirty.clear()
            await self.applier.apply(self.state.copy())

    # ---- the fallback poll

    async def _poll_loop(self) -> None:
        interval = self.cfg.sync_interval
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - self.last_activity <= max(interval, 2 * self.source.progress_interval):
                continue
            await self.poll()

    async def poll(self) -> bool:
        """One full sync outside the stream; whether it reached the server."""
        floor = self.seen_revision
        try:
            async with self._lock:
                fetched = await self.source.fetch(floor or 0)
                changed = self.state.merge_fetch(fetched, floor)
                self.state.advance(fetched.max_entry_revision)
        except LLMConfigError as exc:
            log.warning("poll_failed", error=exc.detail)
            self.status.record_failure("sync")
            return False
        log.info("polled", changed=changed, revision=self.state.revision)
        if changed or not self.state.same_entries(self.applier.good_state):
            self._changed()
        elif not self._pending():
            self.applier.confirm(max(self.state.revision, self.applier.good_revision or 0))
        return True

"""Watch: resolved-value change streams, computed once per (tenant, environment, revision).

A tenant that has watchers gets one ``_TenantState``: the newest row of every entry in every
environment, the newest version of every secret, and one ``_EnvView`` per environment being
watched. A commit wakes the state once; it reads the new rows from the store, and for every
watched environment recomputes the resolved value of each entry the rows touch, appending an
event to that view's log only where the resolved value (or a referenced secret's version)
really changed. Watchers then read the shared log from their own cursor, filter it by prefix
and permission, and write the pre-encoded payloads: nothing at commit time is done per
watcher, and a slow watcher only delays itself.

A watcher that starts before a view's log is replayed from history with the very same code
(``_TenantState`` loaded as it stood at the start revision); one that starts before the
compacted revision gets a snapshot of every current value first. So a resume never leaves a
silent gap.

    sub = await services.watch.open(ctx, prefixes=["llm-gateway"], environment=Environment.PRODUCTION,
                                    since=41, key=None, progress_interval=5.0)
    async with sub:
        async for event in sub:   # WatchEvent, in revision order, each once
            ...
"""

from __future__ import annotations

import asyncio
import bisect
import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Literal

import structlog

from server.service import policy
from server.service.core import Core, Ctx
from server.service.policy import Action
from server.service.secret_refs import parse_refs
from shared.errors import InvalidInput, LLMConfigError
from shared.merge import deep_merge
from shared.models import ConfigVersion, Environment, sha256_of, validate_key, validate_namespace

log = structlog.get_logger("llmcm.watch")

EventKind = Literal["put", "delete", "progress", "snapshot"]
Entry = tuple[str, str]  # (namespace, key)

LOG_MAX = 20_000  # events kept per (tenant, environment) log before the oldest are trimmed
ROWS_PER_READ = 1000
MAX_PREFIXES = 64
DEFAULT_PROGRESS_SECONDS = 10.0
REPLAY_SECONDS = 60.0  # bound on a long-poll's replay from history
WAKE_BATCH = 128  # watchers woken per turn of the event loop when a view changes
_TIMER_SLACK = 0.005  # a progress timer this close to its due time counts as due


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event of a watch stream.

    ``put`` / ``delete``: the resolved value of (namespace, key) in ``environment`` changed at
    ``revision`` (``value`` is None for delete). ``secret_refs`` lists the secret references of
    the resolved value with the version each currently serves; values are never injected into
    watch events (fetch the resolved config to get them injected, authorized and audited).
    ``progress``: nothing the watcher can see happened up to ``revision``.
    ``snapshot``: the watcher's start revision was compacted away; ``items`` holds every
    current resolved value (as put events) at ``revision``; live events follow.
    """

    kind: EventKind
    revision: int
    namespace: str = ""
    key: str = ""
    environment: str = ""
    value: dict[str, Any] | None = None
    sha256: str = ""
    secret_refs: tuple[dict[str, Any], ...] = ()
    items: tuple[WatchEvent, ...] = ()
    classification: str | None = field(default=None, compare=False)
    # JSON of to_dict(), encoded once per (environment, revision) and shared by all watchers
    payload: bytes = field(default=b"", compare=False)
    # the last event of its revision in its environment: only after it is a resume point safe
    # (a secret rotation can change several configs at one revision)
    final: bool = field(default=True, compare=False)

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "progress":
            return {"type": "progress", "revision": self.revision}
        if self.kind == "snapshot":
            return {
                "type": "snapshot",
                "revision": self.revision,
                "items": [item.to_dict() for item in self.items],
            }
        return {
            "type": self.kind,
            "revision": self.revision,
            "namespace": self.namespace,
            "key": self.key,
            "environment": self.environment,
            "value": self.value,
            "sha256": self.sha256,
            "secret_refs": list(self.secret_refs),
        }

    def encoded(self) -> WatchEvent:
        """This event with its payload filled in (done once, where the event is made)."""
        body = json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()
        return WatchEvent(
            self.kind,
            self.revision,
            self.namespace,
            self.key,
            self.environment,
            self.value,
            self.sha256,
            self.secret_refs,
            self.items,
            self.classification,
            body,
            self.final,
        )


def progress_event(revision: int) -> WatchEvent:
    return WatchEvent("progress", revision).encoded()


def _strictest(values: Iterable[str | None]) -> str | None:
    found = {v for v in values if v}
    for level in ("restricted", "confidential", "internal", "public"):
        if level in found:
            return level
    return next(iter(sorted(found)), None)


# -- the state machine shared by live logs and history replays ------------------------------------


@dataclass
class _EnvView:
    """The resolved values of one environment and the log of their changes."""

    environment: Environment
    chain: tuple[Environment, ...]
    start: int  # every event after this revision is in ``log`` (or the view is a replay)
    current: dict[Entry, WatchEvent] = field(default_factory=dict)  # latest put per entry
    log: list[WatchEvent] = field(default_factory=list)
    revisions: list[int] = field(default_factory=list)
    # the futures of the watchers waiting for the next change (a dict: O(1) removal, wake order kept)
    waiters: dict[asyncio.Future[bool], None] = field(default_factory=dict)
    # waiting watchers whose transport takes events synchronously: changes are pushed to them
    # without waking their task (each keeps its future for when a push can't be made)
    pushers: dict[Subscription, asyncio.Future[bool]] = field(default_factory=dict)
    _progress: WatchEvent | None = None  # the newest progress mark, shared by idle watchers

    def append(self, event: WatchEvent) -> None:
        self.log.append(event)
        self.revisions.append(event.revision)

    def after(self, revision: int) -> list[WatchEvent]:
        if not self.revisions or self.revisions[-1] <= revision:
            return []  # the common case of a woken watcher that has everything: no search, no copy
        return self.log[bisect.bisect_right(self.revisions, revision) :]

    def progress(self, revision: int) -> WatchEvent:
        """The progress mark at ``revision``; one object (and payload) for every watcher at it."""
        mark = self._progress
        if mark is None or mark.revision != revision:
            mark = self._progress = progress_event(revision)
        return mark

    def trim(self) -> None:
        if len(self.log) > LOG_MAX:
            drop = len(self.log) - LOG_MAX // 2
            self.start = self.revisions[drop - 1]
            del self.log[:drop], self.revisions[:drop]

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, {}
        if waiters:
            self._wake_some(list(waiters), 0, asyncio.get_running_loop())
        if self.pushers:
            self._push_some(list(self.pushers), 0, asyncio.get_running_loop())

    def _push_some(self, subs: list[Subscription], start: int, loop: asyncio.AbstractEventLoop) -> None:
        """Push what is new to ``WAKE_BATCH`` push watchers, and to the rest on later turns.

        A watcher whose push can't be made (its transport's buffer is full, the log was trimmed
        past it, the stream is ending) leaves the push set and its task is woken to go on.
        """
        end = start + WAKE_BATCH
        now = loop.time()
        pushers = self.pushers
        for sub in subs[start:end]:
            waiter = pushers.get(sub)
            if waiter is None or waiter.done():
                continue
            try:
                pushed = sub.push(now)
            except Exception as exc:  # one broken stream must not stop the others' fan-out
                log.warning("watch_push_failed", error=type(exc).__name__)
                pushed = False
            if not pushed:
                del pushers[sub]
                waiter.set_result(True)
        if end < len(subs):
            loop.call_soon(self._push_some, subs, end, loop)

    def _wake_some(
        self, waiters: list[asyncio.Future[bool]], start: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        """Wake ``WAKE_BATCH`` watchers, and the rest on later turns of the loop.

        Between batches the loop takes the completions of the writes already started, so each
        write's objects are freed within a turn or two instead of all of them living until the
        whole fan-out is through (thousands of them then outlive young garbage collections and
        make full collections frequent), and other work is served in between.
        """
        end = start + WAKE_BATCH
        for waiter in waiters[start:end]:
            if not waiter.done():
                waiter.set_result(True)
        if end < len(waiters):
            loop.call_soon(self._wake_some, waiters, end, loop)


class _TenantState:
    """Every entry's layers and every secret's version, as of ``revision``."""

    def __init__(self, tenant_id: str, revision: int) -> None:
        self.tenant_id = tenant_id
        self.revision = revision
        self.layers: dict[Entry, dict[Environment, ConfigVersion]] = {}
        self.secrets: dict[str, tuple[int, int]] = {}  # "ns/key" -> (version, revision)
        self.refs: dict[Entry, frozenset[str]] = {}  # entry -> secret names its layers reference
        self.referrers: dict[str, set[Entry]] = {}
        self.views: dict[Environment, _EnvView] = {}
        self.dirty = False
        self.retired = False  # replaced after a settings change: its streams end
        self.task: asyncio.Task[None] | None = None

    def load(self, rows: Iterable[ConfigVersion], secrets: Iterable[tuple[str, int, int]]) -> None:
        for row in rows:
            self._set_row(row)
        for name, version, revision in secrets:
            self.secrets[name] = (version, revision)

    def _set_row(self, row: ConfigVersion) -> Entry:
        entry = (row.namespace, row.key)
        self.layers.setdefault(entry, {})[row.environment] = row
        names = frozenset(
            ref.name
            for layer in self.layers[entry].values()
            if not layer.tombstone
            for ref in _refs(layer.value)
        )
        for name in self.refs.get(entry, frozenset()) - names:
            self.referrers.get(name, set()).discard(entry)
        for name in names:
            self.referrers.setdefault(name, set()).add(entry)
        self.refs[entry] = names
        return entry

    def add_view(self, environment: Environment, chain: tuple[Environment, ...]) -> _EnvView:
        view = _EnvView(environment, chain, self.revision)
        for entry in self.layers:
            event = self._resolve(view, entry, 0)
            if event is not None:
                view.current[entry] = event
        self.views[environment] = view
        return view

    def _resolve(self, view: _EnvView, entry: Entry, revision: int) -> WatchEvent | None:
        """The put event of ``entry`` in ``view`` (None if it has no value there)."""
        layers = self.layers.get(entry, {})
        found = [layers[env] for env in view.chain if env in layers and not layers[env].tombstone]
        if not found:
            return None
        value, _ = deep_merge((row.environment.value, row.value) for row in found)
        refs = tuple(
            {
                "field_path": ref.field_path,
                "secret_ref": ref.name,
                "version": self.secrets[ref.name][0] if ref.name in self.secrets else None,
            }
            for ref in _refs(value)
        )
        stamp = revision or max(
            [*(row.revision for row in found), *(self.secrets.get(r["secret_ref"], (0, 0))[1] for r in refs)]
        )
        return WatchEvent(
            "put",
            stamp,
            entry[0],
            entry[1],
            view.environment.value,
            value,
            sha256_of(value),
            refs,
            classification=_strictest(row.metadata.get("classification") for row in found),
        )

    def apply(self, revision: int, row: ConfigVersion | None, secret: tuple[str, int] | None) -> None:
        """One committed change: a config row, or a secret's new version."""
        if row is not None:
            entries: Iterable[Entry] = (self._set_row(row),)
            views = [v for v in self.views.values() if row.environment in v.chain]
        else:
            assert secret is not None
            name, version = secret
            self.secrets[name] = (version, revision)
            entries = sorted(self.referrers.get(name, ()))
            views = list(self.views.values())
        made: dict[Environment, list[WatchEvent]] = {}
        for entry in entries:
            for view in views:
                before = view.current.get(entry)
                after = self._resolve(view, entry, revision)
                if after is None:
                    if before is not None:
                        del view.current[entry]
                        classification = before.classification
                        made.setdefault(view.environment, []).append(
                            WatchEvent(
                                "delete",
                                revision,
                                entry[0],
                                entry[1],
                                view.environment.value,
                                classification=classification,
                            ).encoded()
                        )
                elif before is None or (before.sha256, before.secret_refs) != (
                    after.sha256,
                    after.secret_refs,
                ):
                    event = after.encoded()
                    view.current[entry] = event
                    made.setdefault(view.environment, []).append(event)
        for environment, events in made.items():
            view = self.views[environment]
            for event in events[:-1]:
                view.append(replace(event, final=False))
            view.append(events[-1])
        self.revision = revision


def _refs(value: dict[str, Any]) -> list[Any]:
    try:
        return parse_refs(value)
    except InvalidInput:  # checked on write; a value that no longer parses simply has none
        return []


# -- the service -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Filter:
    prefixes: tuple[str, ...]
    key: str | None

    def matches(self, namespace: str, key: str) -> bool:
        if self.key is not None and key != self.key:
            return False
        if not self.prefixes:
            return True
        return any(namespace == p or namespace.startswith(p + "/") for p in self.prefixes)


class WatchService:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._tenants: dict[str, _TenantState] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._closed = asyncio.Event()
        self.watchers = 0
        core.settings_listeners.append(self._retire)  # chains shape every resolved value

    def _retire(self, tenant_id: str) -> None:
        """The tenant's settings changed: end its streams; they resume on a state built anew."""
        state = self._tenants.pop(tenant_id, None)
        if state is not None:
            state.retired = True
            for view in state.views.values():
                view.wake()

    def tenants(self) -> list[str]:
        """Tenants with watch state here (woken by the cluster layer when notices may be lost)."""
        return list(self._tenants)

    # called (synchronously) by the config and secret services after every commit
    def notify(self, tenant_id: str) -> None:
        state = self._tenants.get(tenant_id)
        if state is None:
            return
        state.dirty = True
        if state.task is None or state.task.done():
            state.task = asyncio.get_running_loop().create_task(self._advance_loop(state))

    async def _advance_loop(self, state: _TenantState) -> None:
        failures = 0
        while state.dirty and not self._closed.is_set():
            state.dirty = False
            try:
                await self._advance(state)
                failures = 0
            except LLMConfigError as exc:  # the store hiccuped: retry, watchers just wait longer
                failures += 1
                log.warning("watch_advance_failed", tenant_id=state.tenant_id, error=exc.detail)
                state.dirty = True
                await asyncio.sleep(min(0.05 * 2**failures, 2.0))

    async def _advance(self, state: _TenantState) -> None:
        storage = self.core.storage
        target = await storage.current_revision(state.tenant_id)
        if target <= state.revision:
            return
        changes = await self._changes(state, state.revision, target)
        for revision, row, secret in changes:
            state.apply(revision, row, secret)
        state.revision = target
        for view in state.views.values():
            view.trim()
            view.wake()

    async def _changes(
        self, state: _TenantState, after: int, upto: int
    ) -> list[tuple[int, ConfigVersion | None, tuple[str, int] | None]]:
        """Committed config rows and secret versions in (after, upto], in revision order."""
        storage = self.core.storage
        rows: list[ConfigVersion] = []
        cursor = after
        while True:
            batch = await storage.changes_since(state.tenant_id, cursor, limit=ROWS_PER_READ)
            rows.extend(r for r in batch if r.revision <= upto)
            if len(batch) < ROWS_PER_READ or batch[-1].revision >= upto:
                break
            cursor = batch[-1].revision
        out: list[tuple[int, ConfigVersion | None, tuple[str, int] | None]] = [
            (r.revision, r, None) for r in rows
        ]
        if len(rows) < upto - after:  # some revisions were not config writes: secret writes
            for secret in await storage.list_secrets(state.tenant_id):
                if after < secret.revision <= upto:
                    out.append((secret.revision, None, (f"{secret.namespace}/{secret.key}", secret.version)))
            out.sort(key=lambda change: change[0])
        return out

    async def _state(self, tenant_id: str) -> _TenantState:
        state = self._tenants.get(tenant_id)
        if state is not None:
            return state
        lock = self._opening.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            state = self._tenants.get(tenant_id)
            if state is None:
                state = await self._load(tenant_id, await self.core.storage.current_revision(tenant_id))
                self._tenants[tenant_id] = state
                self.notify(tenant_id)  # anything committed while loading
        return state

    async def _load(self, tenant_id: str, revision: int) -> _TenantState:
        storage = self.core.storage
        state = _TenantState(tenant_id, revision)
        secrets = [
            (f"{s.namespace}/{s.key}", s.version, s.revision)
            for s in await storage.list_secrets(tenant_id)
            if s.revision <= revision
        ]
        state.load(await storage.latest_as_of(tenant_id, revision), secrets)
        return state

    async def _view(self, state: _TenantState, environment: Environment) -> _EnvView:
        view = state.views.get(environment)
        if view is None:
            chain = await self.core.chain(state.tenant_id, environment)
            view = state.views.get(environment) or state.add_view(environment, chain)
        return view

    async def replay(
        self, tenant_id: str, environment: Environment, after: int, upto: int
    ) -> list[WatchEvent]:
        """Every event of ``environment`` in (after, upto], recomputed from the store's history."""
        chain = await self.core.chain(tenant_id, environment)
        state = await self._load(tenant_id, after)
        view = state.add_view(environment, chain)
        for revision, row, secret in await self._changes(state, after, upto):
            state.apply(revision, row, secret)
        return view.log

    async def open(
        self,
        ctx: Ctx,
        *,
        prefixes: Iterable[str] = (),
        environment: Environment,
        since: int | None = None,
        key: str | None = None,
        progress_interval: float = DEFAULT_PROGRESS_SECONDS,
    ) -> Subscription:
        """Check the request and the caller's right to it; the stream starts when iterated."""
        cleaned = tuple(dict.fromkeys(p.strip("/") for p in prefixes))
        if len(cleaned) > MAX_PREFIXES:
            raise InvalidInput(f"at most {MAX_PREFIXES} prefixes per watch")
        for prefix in cleaned:
            validate_namespace(prefix)
        if key is not None:
            validate_key(key)
        if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
            raise InvalidInput("since must be a revision (0 or more)")
        if progress_interval < 0:
            raise InvalidInput("progress interval must be 0 (off) or more seconds")
        tenant_id = ctx.principal.tenant_id
        settings = await self.core.settings(tenant_id)
        current = await self.core.storage.current_revision(tenant_id)
        if since is not None and since > current:
            raise InvalidInput(f"since={since} is ahead of the tenant's current revision {current}")
        # the caller must be able to read every layer of the chain under each prefix
        chain = await self.core.chain(tenant_id, environment)
        scopes: tuple[str | None, ...] = cleaned or (None,)
        for scope in scopes:
            for layer_env in chain:
                request = policy.Request(Action.CONFIG_READ, layer_env, scope)
                decision = self.core.decide(ctx.principal, request, settings)
                if not decision.allowed:
                    await self.core.deny(ctx, request, decision, f"watch/{scope or '*'}@{environment.value}")
        state = await self._state(tenant_id)
        view = await self._view(state, environment)
        return Subscription(
            self, ctx, state, view, _Filter(cleaned, key), since, progress_interval, settings
        )

    async def compact(self, ctx: Ctx, revision: Any) -> dict[str, int]:
        """Drop history superseded at or below ``revision``; older watch starts get a snapshot."""
        await self.core.authorize(ctx, policy.Request(Action.SETTINGS_WRITE), "history")
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 1:
            raise InvalidInput("'revision' must be a positive integer")
        tenant_id = ctx.principal.tenant_id
        async with self.core.storage.write(tenant_id) as tx:
            current = await tx.current_revision()
            if revision > current:
                raise InvalidInput(f"revision {revision} is ahead of the current revision {current}")
            removed = await tx.compact(revision)
            await self.core.audit_in(
                tx,
                self.core.draft(
                    ctx, "history:compact", "history", "ok", {"revision": revision, "removed": removed}
                ),
            )
        return {"compacted_revision": revision, "removed_versions": removed}

    async def poll(
        self,
        ctx: Ctx,
        *,
        environment: Environment,
        since: int,
        wait: float,
        prefixes: Iterable[str] = (),
        key: str | None = None,
        limit: int = 1000,
    ) -> dict[str, Any]:
        """Long-poll: the events after ``since`` (waiting up to ``wait`` s for one), and the revision reached.

        At the deadline the answer is an empty list with the current revision. A revision's
        events are never split across answers, so resuming from the returned revision is exact.
        """
        sub = await self.open(
            ctx, prefixes=prefixes, environment=environment, since=since, key=key, progress_interval=0
        )
        events: list[WatchEvent] = []
        revision = since
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        stream = sub.__aiter__()
        caught_up = False  # the replay (ended by the first progress mark) is never cut short
        async with sub:
            try:
                while True:
                    # once something is in hand, take only what is ready now (the rest of its batch)
                    if not caught_up:
                        remaining = REPLAY_SECONDS
                    else:
                        remaining = 0.0 if events else max(deadline - loop.time(), 0.0)
                    async with asyncio.timeout(remaining):
                        event = await anext(stream)
                    if event.kind == "progress":
                        caught_up = True
                        revision = max(revision, event.revision)
                        if events or loop.time() >= deadline:
                            break
                        continue
                    if event.kind == "snapshot":
                        items = event.to_dict()["items"]
                        return {"revision": event.revision, "snapshot": items, "changes": []}
                    if len(events) >= limit and event.revision != events[-1].revision:
                        break
                    events.append(event)
                    revision = event.revision
            except TimeoutError:
                pass
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
        return {"revision": revision, "changes": [e.to_dict() for e in events]}

    async def close(self) -> None:
        """End every stream (server shutdown)."""
        self._closed.set()
        for state in self._tenants.values():
            for view in state.views.values():
                view.wake()


class Subscription:
    """One watcher's stream: async iterator of ``WatchEvent`` (iterated once), async context manager."""

    def __init__(
        self,
        service: WatchService,
        ctx: Ctx,
        state: _TenantState,
        view: _EnvView,
        selector: _Filter,
        since: int | None,
        progress_interval: float,
        settings: dict[str, Any],
    ) -> None:
        self.service = service
        self.ctx = ctx
        self.state = state
        self.view = view
        self.selector = selector
        self.since = since
        self.progress_interval = progress_interval
        self.settings = settings
        # (namespace, classification) -> whether the prefixes match and policy lets the caller see it
        self._visible: dict[tuple[str, str | None], bool] = {}
        # the progress timer: one per watcher, re-armed lazily (not one per wait) while events flow
        self._waiter: asyncio.Future[bool] | None = None
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        # while the stream waits: the revision it has everything up to (pushes move it on)
        self.cursor = 0
        self._ready: Callable[[], bool] | None = None
        self._send: Callable[[WatchEvent], None] | None = None

    def deliver_with(self, ready: Callable[[], bool], send: Callable[[WatchEvent], None]) -> None:
        """Let changes be pushed through ``send`` while the stream waits, without waking its task.

        For transports that can take bytes synchronously (a socket's buffer): on each change
        the view calls ``ready()`` and, if it says yes, ``send(event)`` for every new event the
        watcher may see, in order, and the stream goes on waiting. When ``ready()`` says no
        (say, the peer stopped reading and the buffer is full) the task is woken instead and
        the events come out of the iterator, where the caller's own (awaited) writes apply
        back-pressure. ``send`` must not fail for a ready transport; the iterator yields only
        what was not sent.
        """
        self._ready, self._send = ready, send

    def push(self, now: float) -> bool:
        """Send the events after ``cursor`` through the push sink; False: wake the task instead."""
        view, ready, send = self.view, self._ready, self._send
        if (
            ready is None
            or send is None
            or self.service._closed.is_set()
            or self.state.retired
            or self.cursor < view.start
            or not ready()
        ):
            return False
        events = view.after(self.cursor)
        if not events:
            return True
        visible = self.visible
        for event in events:  # a send that raises leaves the cursor after the last whole revision
            if visible(event):
                send(event)
            if event.final:  # all of its revision is out: the iterator would go on after it
                self.cursor = event.revision
        if self.progress_interval:
            self._due = now + self.progress_interval  # events flowed: the next mark is due later
        return True

    async def __aenter__(self) -> Subscription:
        self.service.watchers += 1
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.service.watchers -= 1
        self._stop_timer()

    def visible(self, event: WatchEvent) -> bool:
        key = self.selector.key
        if key is not None and event.key != key:
            return False
        memo = (event.namespace, event.classification)
        allowed = self._visible.get(memo)
        if allowed is None:
            allowed = self.selector.matches(event.namespace, event.key)
            if allowed:
                request = policy.Request(
                    Action.CONFIG_READ, self.view.environment, event.namespace, event.classification
                )
                allowed = self.service.core.decide(self.ctx.principal, request, self.settings).allowed
            if len(self._visible) < 4096:
                self._visible[memo] = allowed
        return allowed

    def _snapshot(self) -> WatchEvent:
        items = tuple(e for e in self.view.current.values() if self.visible(e))
        items = tuple(sorted(items, key=lambda e: (e.namespace, e.key)))
        return WatchEvent("snapshot", self.state.revision, items=items).encoded()

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self._events()

    def _waiter_for_change(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[bool]:
        """A future the view's next change sets to True, or the progress timer to False."""
        waiter: asyncio.Future[bool] = loop.create_future()
        if self._send is not None:
            self.view.pushers[self] = waiter
        else:
            self.view.waiters[waiter] = None
        if self.progress_interval:
            self._due = loop.time() + self.progress_interval
            if self._timer is None:
                self._timer = loop.call_at(self._due, self._on_timer)
        self._waiter = waiter
        return waiter

    def _done_waiting(self, waiter: asyncio.Future[bool]) -> None:
        self._waiter = None
        self.view.waiters.pop(waiter, None)  # gone already if a change took it
        self.view.pushers.pop(self, None)

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # busy with events: the next wait arms the timer again
        loop = waiter.get_loop()
        if self._due - loop.time() > _TIMER_SLACK:  # events came since it was armed: it starts later
            self._timer = loop.call_at(self._due, self._on_timer)
        else:
            waiter.set_result(False)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _events(self) -> AsyncIterator[WatchEvent]:
        service, view, state = self.service, self.view, self.state
        visible = self.visible
        loop = asyncio.get_running_loop()
        tenant_id = state.tenant_id
        if self.since is None:
            cursor = state.revision
        elif self.since < await service.core.storage.compacted_revision(tenant_id):
            snapshot = self._snapshot()
            cursor = snapshot.revision
            yield snapshot
        else:
            cursor = self.since
        caught_up = False
        try:
            while not service._closed.is_set() and not state.retired:
                if cursor < view.start:  # before the shared log: recompute from history
                    upto = view.start
                    for event in await service.replay(tenant_id, view.environment, cursor, upto):
                        if visible(event):
                            yield event
                    cursor = upto
                    continue
                events, head = view.after(cursor), state.revision
                if events:
                    for event in events:
                        if visible(event):
                            yield event
                        cursor = event.revision
                    continue
                if not caught_up:  # one mark as soon as the replay is done: connected and up to date
                    caught_up = True
                    cursor = max(cursor, head)
                    yield view.progress(cursor)
                    continue
                cursor = max(cursor, head)  # nothing the watcher can see happened up to head
                self.cursor = cursor
                waiter = self._waiter_for_change(loop)
                try:
                    changed = await waiter
                finally:
                    self._done_waiting(waiter)
                cursor = self.cursor  # pushed while waiting: those events were delivered
                if not changed and not view.after(cursor):
                    cursor = max(cursor, state.revision)
                    yield view.progress(cursor)
        finally:
            self._stop_timer()

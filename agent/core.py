"""The agent's one core, and its three modes chosen by arguments (not by subclassing).

``assemble`` builds the parts from the frozen config: status (health and metrics), the
encrypted cache, the server source (SDK client), the reporter, and the applier with its
reloader. The modes only decide the order in which the parts run:

- ``run_init``: recover the output directory, fetch (retrying with exponential backoff
  and full jitter up to --init-timeout), write, report, exit. When the server stays
  unreachable: with --allow-stale and a valid cache, write from the cache and exit 0
  with a warning; otherwise raise, and ``main`` prints one line and exits non-zero.
  The app is not reloaded (an init container runs before it).
- ``run_follow("watch")``: the sidecar. Adopt the set an init container wrote (nothing
  rewritten, nobody signalled), then follow the server (``agent.follow``); drift repair
  and status reports run beside it, health and metrics are served.
- ``run_follow("standalone")``: the edge. The encrypted cache is the first source: its
  set is applied (or found already in place) before the server is asked anything; the
  local read API is served with health and metrics; the server, when configured, is
  followed whenever it can be reached. Readiness turns false after --max-stale without
  word from the server; the files and the read API keep serving.

Both long-running modes run until ``stop`` is set (SIGTERM / SIGINT in ``main``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from agent.applier import Applier
from agent.config import AgentConfig
from agent.drift import repair_drift
from agent.errors import CacheError
from agent.follow import Follower
from agent.health import AgentStatus, HealthServer
from agent.readapi import read_routes
from agent.reload import build_reloader
from agent.report import Reporter
from agent.source import Source
from agent.state import ConfigState
from shared.errors import LLMConfigError, Unavailable
from shared.models import redact_url

if TYPE_CHECKING:
    from tenacity import RetryCallState

    from agent.cache import Cache

log = structlog.get_logger("agent.core")

INIT_BACKOFF_BASE = 0.25
INIT_BACKOFF_MAX = 5.0


@dataclass
class Parts:
    cfg: AgentConfig
    status: AgentStatus
    reporter: Reporter
    applier: Applier
    source: Source | None
    cache: Cache | None

    async def cached_state(self) -> tuple[ConfigState, float] | None:
        """The state in the cache and when it was saved; None when absent, refused or foreign."""
        if self.cache is None:
            return None
        try:
            snapshot = await asyncio.to_thread(self.cache.load_snapshot)
        except CacheError as exc:
            log.warning("cache_unreadable", error=exc.detail)
            return None
        if snapshot is None:
            log.warning("cache_unusable", reason="empty, or an entry was refused")
            return None
        env, namespaces = self.cfg.environment.value, self.cfg.namespaces
        state = ConfigState.from_cache(snapshot.entries, snapshot.revision, env, namespaces)
        return None if state is None else (state, snapshot.saved_at)

    async def apply_cached(self, *, reload: bool) -> ConfigState | None:
        """Apply the cached state; the state when it is now the applied set."""
        cached = await self.cached_state()
        if cached is None:
            return None
        state, saved_at = cached
        outcome = await self.applier.apply(state, reload=reload, synced_at=saved_at)
        log.warning(
            "applied_from_cache",
            revision=state.revision,
            outcome=outcome.value,
            age_seconds=round(max(0.0, time.time() - saved_at), 1),
        )
        return state if outcome.ok else None


def _open_cache(cfg: AgentConfig) -> Cache | None:
    if cfg.cache_path is None:
        return None
    from agent.cache import Cache, load_or_create_key  # cryptography and sqlitedict: only with a cache

    try:
        key = cfg.cache_key
        if key is None:
            assert cfg.cache_key_path is not None  # set whenever cache_path is
            key = load_or_create_key(cfg.cache_key_path)
        return Cache(cfg.cache_path, key).open()
    except CacheError as exc:
        log.error("cache_unavailable", error=exc.detail)
        return None


@contextlib.asynccontextmanager
async def assemble(cfg: AgentConfig, mode: str) -> AsyncIterator[Parts]:
    """The agent's parts for ``mode``; connections and the cache are closed when the block ends."""
    status = AgentStatus(max_stale=cfg.max_stale)
    cache = await asyncio.to_thread(_open_cache, cfg)
    source = None
    if cfg.server:
        if mode == "init":
            source = Source(cfg, timeout=min(30.0, cfg.init_timeout), reconnect_attempts=1)
        else:
            source = Source(cfg)
    reporter = Reporter(
        source.report if source is not None else None,
        agent_id=cfg.agent_id,
        namespaces=cfg.namespaces,
        environment=cfg.environment.value,
        status=status,
    )
    reloader = None if mode == "init" else build_reloader(cfg)
    applier = Applier(cfg, status, reporter, reloader=reloader, cache=cache)
    try:
        yield Parts(cfg, status, reporter, applier, source, cache)
    finally:
        if source is not None:
            await source.close()
        if cache is not None:
            cache.close()


# ---- init


async def fetch_with_retry(source: Source, time_limit: float) -> ConfigState:
    """The server's current state, retried (exponential backoff, full jitter) for ``time_limit`` s.

    An error retrying cannot fix (a refused token, a missing permission) is raised at once;
    when time runs out the last error is raised, as ``Unavailable``.
    """
    from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay
    from tenacity.wait import wait_random_exponential

    last: list[LLMConfigError] = []

    def note(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, LLMConfigError):
            last[:] = [error]
            log.warning(
                "server_unreachable_retrying",
                attempt=state.attempt_number,
                delay=round(state.upcoming_sleep, 3),
                error=error.detail,
            )

    retrying = AsyncRetrying(
        retry=retry_if_exception(lambda exc: isinstance(exc, LLMConfigError) and exc.retriable),
        wait=wait_random_exponential(multiplier=INIT_BACKOFF_BASE, max=INIT_BACKOFF_MAX),
        stop=stop_after_delay(time_limit),
        reraise=True,
        before_sleep=note,
    )
    try:
        async with asyncio.timeout(time_limit):
            async for attempt in retrying:
                with attempt:
                    revision = await source.current_revision()
                    return await source.fetch(revision)
    except TimeoutError:
        detail = last[0].detail if last else "no answer"
        raise Unavailable(detail) from None
    raise Unavailable("no attempt was made")  # not reached: AsyncRetrying returns or raises


async def run_init(cfg: AgentConfig) -> str:
    """Fetch once and write; a warning to print ("" when none). Raises ``LLMConfigError`` with
    the one line to print when nothing could be written."""
    async with assemble(cfg, "init") as parts:
        assert parts.source is not None  # check_for("init") demands a server
        await parts.applier.recover()
        server = redact_url(cfg.server)
        try:
            state = await fetch_with_retry(parts.source, cfg.init_timeout)
        except LLMConfigError as exc:
            if not exc.retriable:
                detail = f"init: cannot fetch configuration from {server}: {exc.detail}"
                raise LLMConfigError(detail) from None
            reason = f"init: cannot reach server {server} within {cfg.init_timeout:g} s: {exc.detail}"
            if cfg.allow_stale:
                cached = await parts.apply_cached(reload=False)
                if cached is not None:
                    log.warning("init_from_stale_cache", server=server, revision=cached.revision)
                    return f"{reason}; wrote the cached set of revision {cached.revision} (--allow-stale)"
                reason += "; and --allow-stale found no usable cache"
            raise Unavailable(reason) from None
        outcome = await parts.applier.apply(state, reload=False)
        if not outcome.ok:
            raise LLMConfigError(f"init: the configuration was fetched but not written ({outcome.value})")
        await parts.reporter.flush()
        log.info("init_done", revision=state.revision, entries=len(state.entries), outcome=outcome.value)
        return ""


# ---- watch and standalone


async def run_follow(cfg: AgentConfig, mode: str, stop: asyncio.Event) -> int:
    """The sidecar (``watch``) or the edge (``standalone``), until ``stop`` is set."""
    async with assemble(cfg, mode) as parts:
        applier = parts.applier
        await applier.recover()
        state: ConfigState | None = None
        if mode == "standalone":
            state = await parts.apply_cached(reload=True)
            if state is None:
                await applier.adopt()
        elif await applier.adopt() is None and cfg.allow_stale:
            state = await parts.apply_cached(reload=True)
        routes = []
        if mode == "standalone":
            routes = read_routes(lambda: applier.good_state, cfg.environment.value)
        drift_stop = asyncio.Event()
        async with HealthServer(parts.status, cfg.listen_host, cfg.listen_port, routes=routes) as health:
            log.info(
                "agent_started",
                mode=mode,
                server=redact_url(cfg.server) if cfg.server else None,
                namespaces=list(cfg.namespaces),
                environment=cfg.environment.value,
                listen=f"{health.host}:{health.port}",
            )
            async with asyncio.TaskGroup() as tasks:
                jobs = [
                    tasks.create_task(
                        repair_drift(cfg.config_dir, applier, drift_stop, fallback=cfg.sync_interval),
                        name="agent-drift",
                    ),
                    tasks.create_task(parts.reporter.run(), name="agent-report"),
                ]
                if parts.source is not None:
                    follower = Follower(cfg, parts.source, applier, parts.status, state=state)
                    jobs.append(tasks.create_task(follower.run(), name="agent-follow"))
                await stop.wait()
                log.info("agent_stopping", mode=mode)
                drift_stop.set()
                for job in jobs:
                    job.cancel()
        return 0

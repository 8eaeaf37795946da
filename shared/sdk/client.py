"""``ConfigClient``: the async Python SDK of LLM-Config-Manager.

    async with ConfigClient("http://config:8080", tenant_id, token) as client:
        routing = await client.get("llm-gateway/routing", "primary-model", "production")
        api_key = await client.get_secret("api-keys", "anthropic", "production")
        async for change in client.watch("llm-gateway/routing", "primary-model", environment="production"):
            print(change.revision, change.value)

The endpoint's scheme picks the transport: ``http(s)://`` speaks REST and Server-Sent
Events, ``grpc(s)://`` speaks gRPC (grpcio is imported only then). Both behave the same:
answers in the REST API's JSON shapes, errors from ``shared.errors``.

``get`` answers from an in-memory cache for ``cache_ttl`` seconds; a watch on the same
client drops the cached entry as soon as it sees the entry change. Values carrying
injected secret plaintext are not cached (each secret read is audited by the server).

``watch`` never gives up on a connection that drops: it reconnects with jittered
exponential backoff (tenacity; the server's ``retry:`` hint sets the base delay) and resumes
after the last revision it delivered, so every change arrives once, in order, across
server restarts. Errors that retrying cannot fix (bad request, token revoked, permission)
end the watch by raising.

``tenant_id`` is checked against the token's tenant on first use (one ``whoami``); pass
None to skip the check.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_never
from tenacity.wait import wait_random_exponential

from shared.errors import InvalidInput, LLMConfigError, PermissionDenied, ProtocolError, Unavailable
from shared.models import parse_environment, validate_key, validate_namespace
from shared.sdk.cache import ValueCache
from shared.sdk.events import Change, Progress, Snapshot, WatchEvent
from shared.sdk.transport import Items, Transport, WatchRequest, open_transport, scheme_of

log = structlog.get_logger("shared.sdk")

DEFAULT_TIMEOUT = 30.0
DEFAULT_PROGRESS_INTERVAL = 10.0
AGENT_STATES = ("applied", "check_failed", "rolled_back", "error", "stale", "starting")


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, LLMConfigError) and exc.retriable


class ConfigClient:
    """One server endpoint, one tenant, one token; an async context manager, ``close()`` safe twice.

    ``reconnect_delay`` is the base of the watch backoff (overridden by the server's
    ``retry:`` hint), ``reconnect_max_delay`` its cap; ``reconnect_attempts`` is how many
    connection attempts in a row may fail before a watch raises (None: never give up).
    """

    def __init__(
        self,
        endpoint: str,
        tenant_id: str | None,
        auth_token: str,
        cache_enabled: bool = True,
        cache_ttl: float = 300,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        reconnect_delay: float = 1.0,
        reconnect_max_delay: float = 30.0,
        reconnect_attempts: int | None = None,
    ) -> None:
        self.scheme = scheme_of(endpoint)
        if not auth_token or not auth_token.strip():
            raise InvalidInput("auth_token is empty: pass the bearer token the server issued")
        if cache_ttl < 0:
            raise InvalidInput(f"cache_ttl must be 0 or more seconds, got {cache_ttl}")
        if reconnect_delay <= 0 or reconnect_max_delay < reconnect_delay:
            raise InvalidInput("reconnect_delay must be > 0 and no more than reconnect_max_delay")
        if reconnect_attempts is not None and reconnect_attempts < 1:
            raise InvalidInput("reconnect_attempts must be at least 1 (or None: never give up)")
        self.endpoint = endpoint.strip()
        self.tenant_id = tenant_id or None
        self._token = auth_token.strip()
        self._timeout = timeout
        self._reconnect_delay = reconnect_delay
        self._reconnect_max_delay = reconnect_max_delay
        self._reconnect_attempts = reconnect_attempts
        self.cache = ValueCache(cache_ttl) if cache_enabled and cache_ttl > 0 else None
        self._transport: Transport | None = None
        self._tenant_checked = False
        self._tenant_lock = asyncio.Lock()
        self._closed = False
        self._closing = asyncio.Event()  # wakes watches sleeping before a reconnect

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> ConfigClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection(s); open watches end. Safe to call twice."""
        self._closed = True
        self._closing.set()
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close()

    @property
    def closed(self) -> bool:
        return self._closed

    async def _ready(self) -> Transport:
        if self._closed:
            raise InvalidInput("this ConfigClient is closed")
        if self._transport is None:
            self._transport = open_transport(self.endpoint, self._token, timeout=self._timeout)
        if not self._tenant_checked and self.tenant_id is not None:
            async with self._tenant_lock:
                if not self._tenant_checked:
                    await self._check_tenant(self._transport)
        return self._transport

    async def _check_tenant(self, transport: Transport) -> None:
        me = await transport.whoami()
        if me is None:  # gRPC has no whoami; the server still scopes every call to the token's tenant
            self._tenant_checked = True
            return
        if self.tenant_id not in (me.get("tenant_id"), me.get("tenant_name")):
            raise PermissionDenied(
                f"the token belongs to tenant {me.get('tenant_name') or me.get('tenant_id')!r}, "
                f"not to tenant_id {self.tenant_id!r}"
            )
        self._tenant_checked = True

    # -- reads -----------------------------------------------------------------------------

    async def get(self, namespace: str, key: str, environment: str = "global") -> dict[str, Any]:
        """The resolved value of (namespace, key) in ``environment``, secrets injected."""
        return _value_of(await self.get_entry(namespace, key, environment))

    async def get_entry(self, namespace: str, key: str, environment: str = "global") -> dict[str, Any]:
        """The whole resolved answer: ``value``, ``revision``, ``sha256``, ``layers`` (cached like get)."""
        entry = (validate_namespace(namespace), validate_key(key), parse_environment(environment).value)
        if self.cache is not None:
            cached = self.cache.get(entry)
            if cached is not None:
                return cached
        transport = await self._ready()
        generation = self.cache.generation() if self.cache is not None else 0
        body = await transport.get(*entry)
        _value_of(body)
        if self.cache is not None and "secret_versions" not in body:
            self.cache.store(entry, body, generation)
        return body

    async def get_secret(self, namespace: str, key: str, environment: str | None = None) -> str:
        """The plaintext of a secret (never cached; the server audits every read)."""
        env = None if environment is None else parse_environment(environment).value
        transport = await self._ready()
        body = await transport.get_secret(validate_namespace(namespace), validate_key(key), env)
        value = body.get("value")
        if not isinstance(value, str):
            raise ProtocolError(f"answer for secret {namespace}/{key} lacks its value")
        return value

    async def list(
        self, prefix: str | None = None, environment: str = "global", *, resolve: bool = False
    ) -> Items:
        """The entries under a namespace prefix or glob (``llm-gateway/*``)."""
        transport = await self._ready()
        return await transport.list(prefix, parse_environment(environment).value, resolve)

    async def history(
        self, namespace: str, key: str, environment: str = "global", *, limit: int | None = None
    ) -> Items:
        """The versions of one entry, newest first."""
        transport = await self._ready()
        env = parse_environment(environment).value
        return await transport.history(validate_namespace(namespace), validate_key(key), env, limit)

    # -- writes ----------------------------------------------------------------------------

    async def put(
        self,
        namespace: str,
        key: str,
        value: dict[str, Any],
        environment: str = "global",
        *,
        message: str | None = None,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        """Store a new version; the answer carries ``version`` and ``revision``."""
        if not isinstance(value, dict):
            raise InvalidInput("value must be a JSON object (a dict)")
        transport = await self._ready()
        ns, k = validate_namespace(namespace), validate_key(key)
        try:
            return await transport.put(
                ns, k, value, parse_environment(environment).value, message, expected_version
            )
        finally:
            self._forget(ns, k)

    async def delete(
        self,
        namespace: str,
        key: str,
        environment: str = "global",
        *,
        message: str | None = None,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        transport = await self._ready()
        ns, k = validate_namespace(namespace), validate_key(key)
        try:
            return await transport.delete(
                ns, k, parse_environment(environment).value, message, expected_version
            )
        finally:
            self._forget(ns, k)

    async def rollback(
        self,
        namespace: str,
        key: str,
        version: int,
        environment: str = "global",
        *,
        message: str | None = None,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        """Restore the value of ``version`` as a new version."""
        transport = await self._ready()
        ns, k = validate_namespace(namespace), validate_key(key)
        try:
            return await transport.rollback(
                ns, k, version, parse_environment(environment).value, message, expected_version
            )
        finally:
            self._forget(ns, k)

    def _forget(self, namespace: str, key: str) -> None:
        if self.cache is not None:
            self.cache.invalidate(namespace, key)

    # -- agents ----------------------------------------------------------------------------

    async def report_status(
        self,
        *,
        agent_id: str,
        namespaces: Sequence[str],
        environment: str,
        applied_revision: int,
        state: str,
        last_error: str = "",
    ) -> dict[str, Any]:
        """Report what an agent applied (``state`` one of ``AGENT_STATES``); the stored status.

        ``last_error`` is free text; the server scrubs anything that looks like a credential,
        but the caller should not put config values into it in the first place.
        """
        if state not in AGENT_STATES:
            raise InvalidInput(f"state must be one of {', '.join(AGENT_STATES)}, got {state[:40]!r}")
        if not isinstance(applied_revision, int) or applied_revision < 0:
            raise InvalidInput(f"applied_revision must be a revision (0 or more), got {applied_revision!r}")
        report = {
            "agent_id": agent_id,
            "namespaces": [validate_namespace(ns) for ns in namespaces],
            "environment": parse_environment(environment).value,
            "applied_revision": applied_revision,
            "state": state,
            "last_error": last_error,
        }
        transport = await self._ready()
        return await transport.report_status(report)

    # -- watch -----------------------------------------------------------------------------

    def watch(
        self,
        namespace: str | Sequence[str],
        key: str | None = None,
        environment: str = "global",
        since: int | None = None,
        *,
        progress: bool = False,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Changes under ``namespace`` (a prefix, or several) in ``environment``, as they happen.

        Yields ``Change`` for each put or delete of a resolved value (only of ``key`` if
        given), in revision order, each once, and ``Snapshot`` when the server no longer
        had the history to replay from ``since``. ``since=None`` starts from now; otherwise
        every change after revision ``since`` is replayed first. With ``progress=True`` the
        server's ``Progress`` marks are yielded too. Arguments are checked here, before
        anything is sent.
        """
        prefixes = (namespace,) if isinstance(namespace, str) else tuple(namespace)
        if not prefixes:
            raise InvalidInput("watch needs at least one namespace")
        for prefix in prefixes:
            validate_namespace(prefix)
        if key is not None:
            validate_key(key)
            if len(prefixes) != 1:
                raise InvalidInput("watch of one key needs exactly one namespace")
        if since is not None and (not isinstance(since, int) or since < 0):
            raise InvalidInput(f"since must be a revision (0 or more), got {since!r}")
        if progress_interval < 0:
            raise InvalidInput("progress_interval must be 0 (off) or more seconds")
        request = WatchRequest(
            prefixes=prefixes,
            environment=parse_environment(environment).value,
            key=key,
            since=since,
            progress_interval=progress_interval,
        )
        return self._follow(request, progress)

    async def _follow(self, request: WatchRequest, show_progress: bool) -> AsyncGenerator[WatchEvent, None]:
        transport = await self._ready()
        # A reconnect resumes after ``cursor``: the last revision known to be delivered whole.
        # One revision can change several entries (a secret rotation), so a revision counts
        # as whole only once a later one or a progress mark arrives; after a resume, events
        # of the partly delivered revision that were already yielded are skipped.
        cursor: int | None = request.since
        current: int | None = None  # the revision being delivered
        seen: set[tuple[str, str]] = set()  # entries of ``current`` already yielded
        dropped: LLMConfigError | None = None  # why the last working connection ended
        while not self._closed:
            if dropped is not None:
                # everyone whose connection dropped at once must not come back at once
                await self._sleep(random.uniform(0, self._base_delay(transport)))
            stream, event = await self._connect(transport, replace(request, resume_after=cursor))
            if stream is None or event is None:
                return
            if dropped is not None:
                log.info("watch_resumed", endpoint=self.endpoint, after_revision=cursor)
            try:
                while True:
                    fresh = True
                    if isinstance(event, Change):
                        entry = (event.namespace, event.key)
                        if current is not None and (
                            event.revision < current or (event.revision == current and entry in seen)
                        ):
                            fresh = False  # already yielded before the reconnect
                        elif event.revision != current:
                            if current is not None:
                                cursor = current
                            current, seen = event.revision, set()
                        seen.add(entry)
                    elif cursor is None or event.revision >= cursor:
                        cursor = current = event.revision  # progress or snapshot: all up to it
                        seen = set()
                    else:
                        fresh = False
                    if fresh:
                        out = self._deliver(request, event, show_progress)
                        if out is not None:
                            yield out
                    event = await anext(stream)
            except StopAsyncIteration:
                dropped = Unavailable(f"server {self.endpoint} ended the watch stream")
            except LLMConfigError as exc:
                if self._closed:
                    return
                if not _retriable(exc):
                    raise
                dropped = exc
            except Exception:
                if self._closed:  # closing the client under a running watch ends the watch
                    return
                raise
            finally:
                await stream.aclose()
            log.warning(
                "watch_connection_lost", endpoint=self.endpoint, error=dropped.detail, revision=cursor
            )

    async def _connect(
        self, transport: Transport, request: WatchRequest
    ) -> tuple[AsyncGenerator[WatchEvent, None] | None, WatchEvent | None]:
        """Open the stream and take its first event, retrying with backoff; (None, None) once closed."""
        attempts = self._reconnect_attempts
        retrying = AsyncRetrying(
            retry=retry_if_exception(_retriable),
            wait=wait_random_exponential(
                multiplier=self._base_delay(transport), max=self._reconnect_max_delay
            ),
            stop=stop_never if attempts is None else stop_after_attempt(attempts),
            sleep=self._sleep,
            reraise=True,
            before_sleep=self._log_retry,
        )
        async for attempt in retrying:
            with attempt:
                if self._closed:
                    return None, None
                stream = transport.watch(request)
                try:
                    first = await anext(stream)
                except BaseException:
                    await stream.aclose()
                    raise
                return stream, first
        return None, None  # not reached: AsyncRetrying returns or raises

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when the client is closed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing.wait()

    def _base_delay(self, transport: Transport) -> float:
        hint = getattr(transport, "reconnect_hint", None)
        base = hint if isinstance(hint, int | float) and hint > 0 else self._reconnect_delay
        return float(min(base, self._reconnect_max_delay))

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "watch_reconnecting",
            endpoint=self.endpoint,
            attempt=state.attempt_number,
            delay=round(state.upcoming_sleep, 3),
            error=error.detail if isinstance(error, LLMConfigError) else type(error).__name__,
        )

    def _deliver(self, request: WatchRequest, event: WatchEvent, show_progress: bool) -> WatchEvent | None:
        """Update the cache from ``event``; the event to yield (filtered to the key), or None."""
        if isinstance(event, Progress):
            return event if show_progress else None
        if isinstance(event, Snapshot):
            if self.cache is not None:
                self.cache.clear()
            if request.key is None:
                return event
            return Snapshot(event.revision, tuple(c for c in event.items if _matches(request, c)))
        if self.cache is not None:
            self.cache.invalidate(event.namespace, event.key)
        return event if request.key is None or _matches(request, event) else None


def _matches(request: WatchRequest, change: Change) -> bool:
    return change.key == request.key and change.namespace == request.prefixes[0]


def _value_of(body: dict[str, Any]) -> dict[str, Any]:
    value = body.get("value")
    if not isinstance(value, dict):
        raise ProtocolError("the server's answer lacks 'value', a JSON object")
    return value

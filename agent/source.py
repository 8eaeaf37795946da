"""The agent's side of the server: fetch the resolved configs of its namespaces, open the watch,
resolve changes, report status. Everything goes through the SDK's ``ConfigClient`` (as
``agent.transport.AgentClient``), so the scheme of CONFIG_SERVER picks REST + SSE (the
agent's own transport, without aiohttp) or gRPC, and grpcio is loaded only for the latter.

Only the configured namespaces themselves are managed: the server's listing and watch
match a namespace as a prefix (``llm-gateway`` also covers ``llm-gateway/routing``), so
entries of other namespaces are dropped here.

Values come resolved for the agent's environment. A value that references secrets
(``secrets: [...]`` in a listing, ``secret_refs`` on a watch event) is read again with a
resolved get: only then does the server inject the plaintext (authorizing and auditing
the read); a watch event never carries it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Any

import structlog

from agent.config import AgentConfig
from agent.state import ConfigState, Entry, EntryName, has_secret_refs
from agent.transport import AgentClient
from shared.errors import NotFound, ProtocolError
from shared.sdk import Change, ConfigClient, WatchEvent

log = structlog.get_logger("agent.source")

RECONNECT_DELAY = 0.5
RECONNECT_MAX_DELAY = 10.0
MAX_PROGRESS_INTERVAL = 10.0


class Source:
    """``async with Source(cfg) as source:``; ``close()`` is safe twice.

    ``reconnect_attempts``: how many failed connection attempts in a row a watch takes
    before raising (None: it reconnects forever, as a sidecar's watch does).
    """

    def __init__(
        self, cfg: AgentConfig, *, timeout: float = 30.0, reconnect_attempts: int | None = None
    ) -> None:
        self.cfg = cfg
        self.timeout = timeout
        self.reconnect_attempts = reconnect_attempts
        self.environment = cfg.environment.value
        self.namespaces = frozenset(cfg.namespaces)
        self.progress_interval = min(MAX_PROGRESS_INTERVAL, cfg.sync_interval)
        self._client: ConfigClient | None = None
        self._retired: list[ConfigClient] = []  # replaced by reset(), closed later

    async def __aenter__(self) -> Source:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def client(self) -> ConfigClient:
        """The SDK client, made on first use (the token file is read then: projected tokens rotate)."""
        if self._client is None or self._client.closed:
            self._client = AgentClient(
                self.cfg.server,
                self.cfg.tenant_id or None,
                self.cfg.read_token(),
                cache_enabled=False,
                timeout=self.timeout,
                reconnect_delay=RECONNECT_DELAY,
                reconnect_max_delay=RECONNECT_MAX_DELAY,
                reconnect_attempts=self.reconnect_attempts,
            )
        return self._client

    async def close(self) -> None:
        clients, self._retired = self._retired, []
        if self._client is not None:
            clients.append(self._client)
            self._client = None
        for client in clients:
            await client.close()

    async def reset(self) -> None:
        """Use a new client from now on (it reads the token file again). The old one may still
        carry another task's call, so it is closed only at the next reset or at ``close()``."""
        retired, self._retired = self._retired, []
        for client in retired:
            await client.close()
        if self._client is not None:
            self._retired.append(self._client)
            self._client = None

    # ---- reads

    def watch(self) -> AsyncGenerator[WatchEvent, None]:
        """Changes to the namespaces from now on, with progress marks; the first event is the
        progress mark carrying the server's current revision."""
        return self.client.watch(
            sorted(self.namespaces),
            environment=self.environment,
            progress=True,
            progress_interval=self.progress_interval,
        )

    async def current_revision(self) -> int:
        """The server's current revision: the first progress mark of a watch opened from now."""
        stream = self.watch()
        try:
            first = await anext(stream)
        finally:
            await stream.aclose()
        if first.type != "progress":
            raise ProtocolError("the server's watch did not start with a progress mark")
        return first.revision

    async def fetch(self, revision: int = 0) -> ConfigState:
        """Every entry of the namespaces, resolved, secrets injected; ``revision``: the state's."""
        state = ConfigState(revision=revision)
        for namespace in sorted(self.namespaces):
            items = await self.client.list(namespace, self.environment, resolve=True)
            for item in items:
                name = self._name_of(item)
                if name is None:
                    continue
                entry = await self._entry_of(name, item)
                if entry is not None:
                    state.entries[name] = entry
        log.info("fetched", entries=len(state.entries), revision=state.max_entry_revision)
        return state

    async def resolve(self, change: Change) -> Entry | None:
        """The entry a put change leads to (None for a delete, or if it is gone meanwhile)."""
        if change.deleted or change.value is None:
            return None
        if change.secret_refs or has_secret_refs(change.value):
            return await self.get_entry((change.namespace, change.key))
        return Entry(change.value, change.revision, False)

    async def get_entry(self, name: EntryName) -> Entry | None:
        try:
            body = await self.client.get_entry(name[0], name[1], self.environment)
        except NotFound:
            return None
        return _entry(body)

    def manages(self, namespace: str) -> bool:
        return namespace in self.namespaces

    def _name_of(self, item: dict[str, Any]) -> EntryName | None:
        namespace, key = item.get("namespace"), item.get("key")
        if not isinstance(namespace, str) or not isinstance(key, str):
            raise ProtocolError("a listed config lacks its namespace or key")
        return (namespace, key) if namespace in self.namespaces else None

    async def _entry_of(self, name: EntryName, item: dict[str, Any]) -> Entry | None:
        value = item.get("value")
        if not isinstance(value, dict):
            raise ProtocolError(f"listed config {name[0]}/{name[1]} lacks its value")
        if has_secret_refs(value):
            return await self.get_entry(name)
        return _entry(item)

    # ---- status

    async def report(self, report: dict[str, Any]) -> None:
        await self.client.report_status(**report)


def _entry(body: dict[str, Any]) -> Entry:
    value, revision = body.get("value"), body.get("revision")
    if not isinstance(value, dict) or not isinstance(revision, int):
        raise ProtocolError("a resolved config lacks its value or revision")
    return Entry(value, revision, secret=bool(body.get("secret_versions")))

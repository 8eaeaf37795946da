"""What replicas tell each other, and the small interfaces the cluster layer is built from.

A ``Notice`` says "tenant T committed something of kind K; its revision is at least R". It
never carries a value: a replica that hears one reads the rows from the store by revision, as
it does after a commit of its own. Notices may be lost (Redis restarts, reconnects); the
replicas make up for that by polling the store (``server.cluster.node``), so a notice is a
hint to look now, never the only way a change is found.

Each interface has a single-process implementation (``server.cluster.local``) and a Redis one
(``server.cluster.redis_bus``, ``server.cluster.redis_link``), so one server on SQLite and N
replicas on PostgreSQL + Redis run the same code.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from shared.errors import InvalidInput

Kind = Literal["config", "secret", "settings", "tokens"]
KINDS: tuple[Kind, ...] = ("config", "secret", "settings", "tokens")


@dataclass(frozen=True, slots=True)
class Notice:
    """A commit on ``origin`` (a replica id): ``kind`` in ``tenant_id``, which is at ``revision`` or later."""

    tenant_id: str
    revision: int
    kind: Kind
    origin: str

    def encode(self) -> bytes:
        return json.dumps(
            {"t": self.tenant_id, "r": self.revision, "k": self.kind, "o": self.origin}, separators=(",", ":")
        ).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> Notice:
        """A notice from the wire; anything else is ``InvalidInput`` (and is dropped by the caller)."""
        try:
            data = json.loads(raw)
            tenant, revision, kind, origin = data["t"], data["r"], data["k"], data["o"]
        except (ValueError, TypeError, KeyError):
            raise InvalidInput("not a change notice") from None
        if (
            not isinstance(tenant, str)
            or not isinstance(origin, str)
            or not isinstance(revision, int)
            or kind not in KINDS
        ):
            raise InvalidInput("not a change notice")
        return cls(tenant, revision, kind, origin)


Deliver = Callable[[Notice], None]
Resync = Callable[[], None]


class Notifier(Protocol):
    """Carries notices between replicas."""

    @property
    def connected(self) -> bool:
        """Every other replica's notices reach this one now (else the store must be polled)."""
        ...

    async def publish(self, notices: Sequence[Notice]) -> bool:
        """Send notices to every replica; False when they could not be sent (nothing raised)."""
        ...

    async def run(self, deliver: Deliver, resync: Resync) -> None:
        """Hand every notice heard to ``deliver`` until cancelled, reconnecting as needed; call
        ``resync`` each time the subscription is (re)established, since notices sent while it was
        down are lost."""
        ...


class SharedCache(Protocol):
    """Bytes by key, shared by the replicas; any failure is a miss, never an error."""

    async def get(self, tenant_id: str, key: str) -> bytes | None: ...

    async def put(self, tenant_id: str, key: str, data: bytes) -> None: ...


Usage = dict[str, int]
LoadUsage = Callable[[], Awaitable[Usage]]


class Counters(Protocol):
    """Counts for rate limits and quotas, shared by the replicas (or kept in one process)."""

    async def hit(self, key: str, limit: int, window: float, now: float) -> float:
        """Count one event against ``limit`` per sliding ``window`` seconds; 0.0 when admitted, else
        (not counted) the seconds until one would be."""
        ...

    async def reserve(
        self, key: str, deltas: Mapping[str, int], limits: Mapping[str, int], load: LoadUsage
    ) -> str | None:
        """Add ``deltas`` to the usage at ``key`` unless a positive delta would take its field over
        its limit: then nothing is added and that field's name is returned. ``load`` reads the
        usage from the store when it is not known (first use, expired, or the counter store lost it)."""
        ...

    async def add(self, key: str, deltas: Mapping[str, int]) -> None:
        """Add ``deltas`` without a check (a release, or a change that frees room); a usage not
        known is left unknown."""
        ...

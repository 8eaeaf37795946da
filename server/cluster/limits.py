"""Per-tenant rate limits and quotas (tenant settings ``limits``), enforced across replicas.

    "limits": {"api_calls_per_minute": null, "max_configs": 100000,
               "max_secrets": 10000, "max_storage_bytes": 1073741824}

``null`` means no limit. API calls are counted per tenant in a sliding one-minute window when
a request is authenticated (REST and gRPC alike); a watch stream is one call. Quotas count live
config entries (namespace, key, environment), secrets, and the bytes of every entry's current
value and every secret's newest value. A write that would take a quota over its limit, and a
call over the rate, fail with ``RateLimited`` (429, ``Retry-After``).

Quota usage is reserved before the write and given back if the write fails or changes nothing,
so concurrent writers on several replicas can't both take the last slot. Usage is read from the
store on first use and again every ``USAGE_TTL_SECONDS`` (that repairs drift from crashes and
races). The counters are Redis's when the server has Redis, else this process's
(``server.cluster.local.MemoryCounters``): with several replicas and Redis down, each replica
enforces the limits on its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

from server.cluster.base import Counters, Usage
from server.storage import Storage
from shared.crypto import NONCE_BYTES, unb64
from shared.errors import InvalidInput, LLMConfigError, RateLimited
from shared.models import Environment, SecretVersion, canonical_json

DEFAULT_LIMITS: dict[str, int | None] = {
    "api_calls_per_minute": None,
    "max_configs": 100_000,
    "max_secrets": 10_000,
    "max_storage_bytes": 1 << 30,
}
_FIELD_OF = {"configs": "max_configs", "secrets": "max_secrets", "storage_bytes": "max_storage_bytes"}
_WHAT = {"configs": "config entries", "secrets": "secrets", "storage_bytes": "bytes of stored values"}
_GCM_TAG_BYTES = 16
QUOTA_RETRY_SECONDS = 60  # a quota frees only when something is deleted: a long Retry-After


def validate_limits(raw: Any) -> dict[str, int | None]:
    """``raw`` merged over ``DEFAULT_LIMITS``; each a whole number of at least 1, or null (no limit)."""
    if not isinstance(raw, dict):
        raise InvalidInput("settings.limits must be a JSON object")
    unknown = set(raw) - set(DEFAULT_LIMITS)
    if unknown:
        raise InvalidInput(
            f"unknown settings.limits fields: {', '.join(sorted(unknown))}; "
            f"known: {', '.join(DEFAULT_LIMITS)}"
        )
    out = dict(DEFAULT_LIMITS)
    for name, value in raw.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InvalidInput(f"settings.limits.{name} must be a whole number of at least 1, or null")
        out[name] = value
    return out


def secret_bytes(record: SecretVersion) -> int:
    """The plaintext size of a stored secret version (its sealed form less nonce and tag)."""
    try:
        return max(len(unb64(record.ciphertext, "secret ciphertext")) - NONCE_BYTES - _GCM_TAG_BYTES, 0)
    except LLMConfigError:
        return 0


def value_bytes(value: Mapping[str, Any] | None) -> int:
    """What a config value counts against ``max_storage_bytes``."""
    return len(canonical_json(value)) if value is not None else 0


SettingsOf = Callable[[str], Awaitable[dict[str, Any]]]


class Limits:
    def __init__(self, storage: Storage, settings: SettingsOf, counters: Counters) -> None:
        self.storage = storage
        self.settings = settings
        self.counters = counters

    async def _limits(self, tenant_id: str) -> dict[str, int | None]:
        limits: dict[str, int | None] = (await self.settings(tenant_id)).get("limits") or DEFAULT_LIMITS
        return limits

    async def count_call(self, tenant_id: str) -> None:
        """Count one API call of the tenant; ``RateLimited`` when over its rate."""
        limit = (await self._limits(tenant_id)).get("api_calls_per_minute")
        if limit is None:
            return
        wait = await self.counters.hit(f"calls:{tenant_id}", limit, 60.0, time.time())
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise RateLimited(
                f"the tenant's rate limit of {limit} API calls per minute is reached "
                f"(settings.limits.api_calls_per_minute); retry in {seconds} s",
                retry_after=seconds,
            )

    def hold(self, tenant_id: str, *, configs: int = 0, secrets: int = 0, storage_bytes: int = 0) -> Hold:
        """Reserve quota for one write: ``async with limits.hold(...) as held:`` … ``held.cancel()``
        when the write changed nothing. Refused (``RateLimited``) on entry when over a limit;
        given back when the block raises or is cancelled."""
        deltas = {"configs": configs, "secrets": secrets, "storage_bytes": storage_bytes}
        return Hold(self, tenant_id, {k: v for k, v in deltas.items() if v})

    async def usage(self, tenant_id: str) -> Usage:
        """The tenant's usage as the store has it now."""
        rows = await self.storage.list_latest(tenant_id, tuple(Environment))
        live = [row for row in rows if not row.tombstone]
        secrets = await self.storage.list_secrets(tenant_id)
        return {
            "configs": len(live),
            "secrets": len(secrets),
            "storage_bytes": sum(value_bytes(row.value) for row in live)
            + sum(secret_bytes(record) for record in secrets),
        }

    async def reserve(self, tenant_id: str, deltas: Mapping[str, int]) -> None:
        limits = await self._limits(tenant_id)
        caps = {name: limit for name, field in _FIELD_OF.items() if (limit := limits.get(field)) is not None}
        if not any(delta > 0 and name in caps for name, delta in deltas.items()):
            await self.counters.add(f"usage:{tenant_id}", deltas)
            return
        over = await self.counters.reserve(f"usage:{tenant_id}", deltas, caps, lambda: self.usage(tenant_id))
        if over is not None:
            raise RateLimited(
                f"the tenant's quota of {caps[over]} {_WHAT[over]} is reached "
                f"(settings.limits.{_FIELD_OF[over]}); delete some or raise the limit",
                retry_after=QUOTA_RETRY_SECONDS,
                quota=_FIELD_OF[over],
            )


class Hold:
    """One write's reservation; see ``Limits.hold``."""

    def __init__(self, limits: Limits, tenant_id: str, deltas: dict[str, int]) -> None:
        self.limits = limits
        self.tenant_id = tenant_id
        self.deltas = deltas
        self._held = False

    def cancel(self) -> None:
        """The write changed nothing: give the reservation back on exit."""
        self._cancelled = True

    async def __aenter__(self) -> Hold:
        self._cancelled = False
        if self.deltas:
            await self.limits.reserve(self.tenant_id, self.deltas)
            self._held = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._held and (exc_type is not None or self._cancelled):
            self._held = False
            await self.limits.counters.add(
                f"usage:{self.tenant_id}", {name: -delta for name, delta in self.deltas.items()}
            )

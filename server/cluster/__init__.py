"""Running several server replicas as one: change notices, a shared read cache, shared limits.

    base.py        Notice (what replicas tell each other) and the Protocols: Notifier,
                   SharedCache, Counters
    local.py       one process: LocalNotifier, NoSharedCache, MemoryCounters
    redis_link.py  Redis with a breaker; RedisCache, RedisCounters (in-process while it is down)
    redis_bus.py   RedisNotifier: pub/sub with resync on every (re)subscription
    limits.py      per-tenant rate limits and quotas (tenant settings ``limits``)
    node.py        Cluster: wires the services' commit hooks to the notifier, applies other
                   replicas' notices, polls the store when notices may be lost

Only the light modules are re-exported here: the service layer imports this package for
``Limits``, and ``node`` imports the service layer (``server.main`` imports it directly).
"""

from server.cluster.base import Counters, Notice, Notifier, SharedCache
from server.cluster.limits import DEFAULT_LIMITS, Limits, validate_limits
from server.cluster.local import LocalNotifier, MemoryCounters, NoSharedCache

__all__ = [
    "DEFAULT_LIMITS",
    "Counters",
    "Limits",
    "LocalNotifier",
    "MemoryCounters",
    "NoSharedCache",
    "Notice",
    "Notifier",
    "SharedCache",
    "validate_limits",
]

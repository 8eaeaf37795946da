"""The service layer: pure Python, no HTTP or gRPC types; both APIs call it."""

from __future__ import annotations

from dataclasses import dataclass

from server.cluster.base import Counters
from server.keys import KeyProvider
from server.service.agents import AgentService
from server.service.audit import AuditService
from server.service.changes import ChangeFeed, ChangeHub
from server.service.configs import ConfigService
from server.service.core import Clock, Core, Ctx, utc_now
from server.service.keys import KeyService
from server.service.rotation import RotationDue
from server.service.schemas import SchemaService
from server.service.secrets import SecretService
from server.service.tenants import TenantService
from server.service.watch import WatchService
from server.storage import Storage

__all__ = ["Ctx", "Services"]


@dataclass(frozen=True, slots=True)
class Services:
    core: Core
    tenants: TenantService
    schemas: SchemaService
    configs: ConfigService
    audit: AuditService
    secrets: SecretService
    keys: KeyService
    changes: ChangeFeed
    agents: AgentService
    watch: WatchService
    rotation: RotationDue

    @classmethod
    def build(
        cls,
        storage: Storage,
        *,
        clock: Clock = utc_now,
        max_value_bytes: int = 1 << 20,
        keys: KeyProvider | None = None,
        allow_insecure_secrets: bool = False,
        counters: Counters | None = None,
    ) -> Services:
        """``counters``: where rate limits and quotas are counted (default: this process's memory;
        a server with Redis passes Redis's, shared by its replicas)."""
        core = Core(storage, clock=clock, counters=counters)
        schemas = SchemaService(core)
        secrets = SecretService(core, keys, allow_insecure=allow_insecure_secrets)
        configs = ConfigService(core, schemas, max_value_bytes=max_value_bytes, secrets=secrets)
        hub = ChangeHub()
        configs.commit_listeners.append(hub.notify)
        secrets.commit_listeners.append(hub.notify)
        watch = WatchService(core)
        configs.commit_listeners.append(watch.notify)
        secrets.commit_listeners.append(watch.notify)
        return cls(
            core=core,
            tenants=TenantService(core),
            schemas=schemas,
            configs=configs,
            audit=AuditService(core),
            secrets=secrets,
            keys=KeyService(core, keys, secrets),
            changes=ChangeFeed(core, hub, secrets),
            agents=AgentService(core),
            watch=watch,
            rotation=RotationDue(core, secrets),
        )

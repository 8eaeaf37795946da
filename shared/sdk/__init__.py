"""The async Python SDK: ``ConfigClient`` and the events its watches yield.

    from shared.sdk import Change, ConfigClient

    async with ConfigClient("http://127.0.0.1:8080", tenant_id, token) as client:
        value = await client.get("llm-gateway/routing", "primary-model", "production")
        async for change in client.watch("llm-gateway/routing", "primary-model", environment="production"):
            ...

See ``shared.sdk.client`` for the behaviour (cache, reconnects, errors) and
``shared.sdk.events`` for what a watch yields.
"""

from shared.sdk.client import ConfigClient
from shared.sdk.events import Change, Progress, SecretRef, Snapshot, WatchEvent

__all__ = ["Change", "ConfigClient", "Progress", "SecretRef", "Snapshot", "WatchEvent"]

"""Init container of the server pods: wait until the store has a tenant, then exit 0.

``llm-config-server serve`` refuses a store that ``llm-config-server init`` never ran on.
On the first start this container waits instead, saying in its log how to run ``init``
inside it with ``kubectl exec -it``, so the global-admin token that ``init`` prints goes to
the operator's terminal only, never into a log or a file. Once a tenant exists (found
through the same settings the server reads: LLMCM_DATA_DIR, LLMCM_STORAGE) it exits and
the server starts. It gives up after an hour with exit 1, and the kubelet runs it again.
"""

import asyncio
import os
import sys
import time

from server.config import ServerConfig
from server.storage import open_storage
from shared.errors import LLMConfigError

GIVE_UP_AFTER = 3600.0
POLL_EVERY = 15.0


async def initialized() -> bool:
    async with open_storage(ServerConfig.load().storage_url) as store:
        return bool(await store.list_tenants())


def main() -> int:
    pod = os.environ.get("HOSTNAME", "<pod>")
    deadline = time.monotonic() + GIVE_UP_AFTER
    while True:
        try:
            if asyncio.run(initialized()):
                print("the store is initialized", flush=True)
                return 0
            print(
                "the store has no tenant yet; create one with: "
                f"kubectl exec -it {pod} -c wait-for-init -- llm-config-server init",
                flush=True,
            )
        except LLMConfigError as exc:
            print(f"cannot check the store yet: {exc.detail}", flush=True)
        if time.monotonic() > deadline:
            print("gave up waiting for 'llm-config-server init'; the kubelet runs this again", flush=True)
            return 1
        time.sleep(POLL_EVERY)


if __name__ == "__main__":
    sys.exit(main())

"""What ``ConfigClient`` needs from a transport, and how an endpoint picks one.

Two transports implement ``Transport``: REST + Server-Sent Events (``shared.sdk.rest``,
for ``http://`` and ``https://``) and gRPC (``shared.sdk.grpc``, for ``grpc://`` and
``grpcs://``). Both answer with the REST API's JSON shapes (plain dicts), decode watch
streams into ``shared.sdk.events`` and raise only the ``shared.errors`` tree, so the
client above them never knows which one it has.

``watch`` is one connection: it yields events until the connection ends, then raises
(``Unavailable`` for a dropped or closed connection, which is retriable). Resuming is the
client's job; the transport only sends the revision to resume from.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol

from shared.errors import InvalidInput
from shared.sdk.events import WatchEvent

Items = list[dict[str, Any]]  # entries, versions: the REST API's JSON objects
HTTP_SCHEMES = ("http", "https")
GRPC_SCHEMES = ("grpc", "grpcs")


@dataclass(frozen=True, slots=True)
class WatchRequest:
    """One watch connection: what to watch and where to start.

    ``since`` is the revision the caller asked to start after (None: from now); ``resume_after``
    is the last revision already delivered on an earlier connection of the same watch (None
    on the first). When both are set, ``resume_after`` wins.
    """

    prefixes: tuple[str, ...]
    environment: str
    key: str | None = None
    since: int | None = None
    resume_after: int | None = None
    progress_interval: float = 10.0

    @property
    def start_after(self) -> int | None:
        return self.resume_after if self.resume_after is not None else self.since


class Transport(Protocol):
    async def close(self) -> None: ...

    async def whoami(self) -> dict[str, Any] | None:
        """Who the token is (``GET /v1/whoami``); None where the transport can't tell."""
        ...

    async def get(self, namespace: str, key: str, environment: str) -> dict[str, Any]:
        """The resolved entry, as ``GET /v1/configs/{ns}/{key}?env=E&resolve=true`` answers."""
        ...

    async def get_secret(self, namespace: str, key: str, environment: str | None) -> dict[str, Any]: ...

    async def list(self, prefix: str | None, environment: str, resolve: bool) -> Items: ...

    async def put(
        self,
        namespace: str,
        key: str,
        value: dict[str, Any],
        environment: str,
        message: str | None,
        expected_version: int | None,
    ) -> dict[str, Any]: ...

    async def delete(
        self, namespace: str, key: str, environment: str, message: str | None, expected_version: int | None
    ) -> dict[str, Any]: ...

    async def history(self, namespace: str, key: str, environment: str, limit: int | None) -> Items: ...

    async def rollback(
        self,
        namespace: str,
        key: str,
        version: int,
        environment: str,
        message: str | None,
        expected_version: int | None,
    ) -> dict[str, Any]: ...

    def watch(self, request: WatchRequest) -> AsyncGenerator[WatchEvent, None]: ...

    async def report_status(self, report: dict[str, Any]) -> dict[str, Any]:
        """An agent's status report (``POST /v1/agents/status``); the stored status back."""
        ...


def scheme_of(endpoint: str) -> str:
    """The endpoint's scheme, lower-cased; ``InvalidInput`` unless it is one we speak."""
    scheme, sep, _ = endpoint.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in HTTP_SCHEMES + GRPC_SCHEMES:
        shown = endpoint.rpartition("@")[2][:200]  # never echo credentials put into the URL
        raise InvalidInput(f"endpoint must start with http://, https://, grpc:// or grpcs://, got {shown!r}")
    return scheme


def open_transport(endpoint: str, token: str, *, timeout: float) -> Transport:
    """The transport the endpoint's scheme names; grpcio is imported only for grpc(s)://."""
    scheme = scheme_of(endpoint)
    if scheme in HTTP_SCHEMES:
        from shared.sdk.rest import RestTransport

        return RestTransport(endpoint, token, timeout=timeout)
    from shared.sdk.grpc import GrpcTransport

    return GrpcTransport(endpoint, token, timeout=timeout)


def idle_timeout(progress_interval: float) -> float | None:
    """How long a watch may hear nothing before it counts as dead: three missed progress marks."""
    if progress_interval <= 0:
        return None
    return max(3 * progress_interval, progress_interval + 2.0)


def watch_query(request: WatchRequest) -> list[tuple[str, str]]:
    """The query string of an SSE watch request."""
    query = [("env", request.environment)]
    query += [("prefix", prefix) for prefix in request.prefixes]
    if request.key is not None:
        query.append(("key", request.key))
    if request.since is not None:
        query.append(("since", str(request.since)))
    query.append(("progress", f"{round(request.progress_interval * 1000)}ms"))
    return query

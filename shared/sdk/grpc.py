"""The gRPC transport (``grpc://`` and ``grpcs://`` endpoints) over ``llmconfig.v1.ConfigService``.

This module is imported only when a client is given a gRPC endpoint, so REST users never
load grpcio or protobuf. It is the SDK's one boundary with generated code: requests are
built from plain arguments and answers are turned into the REST API's JSON shapes and
``shared.sdk.events``, so nothing generated leaves it.

Errors: a failed call becomes the project's exception. The server puts the whole problem
document into the trailing metadata ``llmcm-problem``; when it is there it decides the
class (exactly as over REST), otherwise the status code does. A refused or dropped
connection is ``Unavailable``, naming the endpoint and never the token.

The gRPC API has no secret reads: ``get_secret`` needs an http(s) endpoint (a resolved
``get`` still injects referenced secrets over gRPC).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import grpc
from yarl import URL

from shared.errors import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    LLMConfigError,
    NotFound,
    PermissionDenied,
    ProtocolError,
    RateLimited,
    StorageError,
    Unauthenticated,
    Unavailable,
    from_problem,
)
from shared.proto.llmconfig.v1 import config_pb2 as pb
from shared.proto.llmconfig.v1 import config_pb2_grpc as pb_grpc
from shared.sdk.events import EVENT_TYPES, WatchEvent, event_from_dict
from shared.sdk.transport import Items, WatchRequest, idle_timeout

DEFAULT_PORT = 50051
PROBLEM_METADATA = "llmcm-problem"

# A config client's traffic is small messages that must arrive quickly, not bulk data: HTTP/2
# bandwidth-delay probing (on by default in grpc) only adds a PING round trip to the server
# per burst of received messages; with 1,000 watchers that cost the server about a quarter of
# its CPU per event fanned out (bench/propagation.py). The default 64 KB windows are plenty.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (("grpc.http2.bdp_probe", 0),)

_BY_STATUS: dict[Any, type[LLMConfigError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidInput,
    grpc.StatusCode.OUT_OF_RANGE: InvalidInput,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.CANCELLED: Unavailable,
    grpc.StatusCode.INTERNAL: StorageError,
    grpc.StatusCode.DATA_LOSS: StorageError,
    grpc.StatusCode.UNIMPLEMENTED: ProtocolError,
    grpc.StatusCode.UNKNOWN: ProtocolError,
}


def grpc_target(endpoint: str) -> tuple[str, bool]:
    """(``host:port``, uses TLS) for a ``grpc://`` or ``grpcs://`` endpoint; ``InvalidInput`` if malformed."""
    try:
        url = URL(endpoint.strip())
    except (ValueError, TypeError):
        url = None
    if url is None or url.scheme not in ("grpc", "grpcs") or not url.host:
        shown = endpoint.rpartition("@")[2][:200]
        raise InvalidInput(f"gRPC endpoint must look like grpc://host:port or grpcs://host, got {shown!r}")
    if url.user is not None or url.password is not None:
        raise InvalidInput("endpoint must not carry credentials; pass the token separately")
    if url.path not in ("", "/") or url.query_string or url.fragment:
        raise InvalidInput("gRPC endpoint must be only scheme, host and port")
    host = f"[{url.host}]" if ":" in url.host else url.host
    port = url.explicit_port or (443 if url.scheme == "grpcs" else DEFAULT_PORT)
    return f"{host}:{port}", url.scheme == "grpcs"


class GrpcTransport:
    """``Transport`` over one ``grpc.aio`` channel; the token goes in each call's metadata."""

    def __init__(self, endpoint: str, token: str, *, timeout: float) -> None:
        target, tls = grpc_target(endpoint)
        self.endpoint = endpoint.strip().rstrip("/")
        self._timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._channel = (
            grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=CHANNEL_OPTIONS)
            if tls
            else grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        )
        self._stub = pb_grpc.ConfigServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._closed = False

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._channel.close()

    async def whoami(self) -> dict[str, Any] | None:
        return None  # the gRPC API has no whoami: the tenant check is skipped

    # -- unary calls -----------------------------------------------------------------------

    async def _call(self, method: Callable[..., Awaitable[Any]], request: Any) -> Any:
        try:
            return await method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        except asyncio.CancelledError:
            if self._closed_under_call():
                raise Unavailable(f"the connection to {self.endpoint} was closed") from None
            raise

    async def get(self, namespace: str, key: str, environment: str) -> dict[str, Any]:
        request = pb.GetRequest(namespace=namespace, key=key, environment=environment, resolve=True)
        return entry_dict(await self._call(self._stub.Get, request))

    async def get_secret(self, namespace: str, key: str, environment: str | None) -> dict[str, Any]:
        raise InvalidInput(
            "get_secret needs an http(s):// endpoint: the gRPC API has no secret reads "
            "(a resolved get injects referenced secrets over gRPC too)"
        )

    async def list(self, prefix: str | None, environment: str, resolve: bool) -> Items:
        request = pb.ListRequest(prefix=prefix or "", environment=environment, resolve=resolve)
        answer = await self._call(self._stub.List, request)
        return [entry_dict(item) for item in answer.items]

    async def put(
        self,
        namespace: str,
        key: str,
        value: dict[str, Any],
        environment: str,
        message: str | None,
        expected_version: int | None,
    ) -> dict[str, Any]:
        request = pb.PutRequest(
            namespace=namespace,
            key=key,
            environment=environment,
            value_json=json.dumps(value, ensure_ascii=False),
            message=message or "",
        )
        if expected_version is not None:
            request.expected_version = expected_version
        return entry_dict(await self._call(self._stub.Put, request), write=True)

    async def delete(
        self, namespace: str, key: str, environment: str, message: str | None, expected_version: int | None
    ) -> dict[str, Any]:
        request = pb.DeleteRequest(
            namespace=namespace, key=key, environment=environment, message=message or ""
        )
        if expected_version is not None:
            request.expected_version = expected_version
        return entry_dict(await self._call(self._stub.Delete, request), write=True)

    async def history(self, namespace: str, key: str, environment: str, limit: int | None) -> Items:
        request = pb.HistoryRequest(namespace=namespace, key=key, environment=environment, limit=limit or 0)
        answer = await self._call(self._stub.History, request)
        return [entry_dict(item) for item in answer.versions]

    async def rollback(
        self,
        namespace: str,
        key: str,
        version: int,
        environment: str,
        message: str | None,
        expected_version: int | None,
    ) -> dict[str, Any]:
        request = pb.RollbackRequest(
            namespace=namespace, key=key, environment=environment, version=version, message=message or ""
        )
        if expected_version is not None:
            request.expected_version = expected_version
        return entry_dict(await self._call(self._stub.Rollback, request), write=True)

    async def report_status(self, report: dict[str, Any]) -> dict[str, Any]:
        request = pb.ReportStatusRequest(
            agent_id=report["agent_id"],
            namespaces=list(report["namespaces"]),
            environment=report["environment"],
            applied_revision=report["applied_revision"],
            state=report["state"],
            last_error=report.get("last_error", ""),
        )
        answer = await self._call(self._stub.ReportStatus, request)
        return {
            "agent_id": answer.agent_id,
            "namespaces": list(answer.namespaces),
            "environment": answer.environment,
            "applied_revision": answer.applied_revision,
            "state": answer.state,
            "last_error": answer.last_error,
            "reported_at": answer.reported_at,
        }

    # -- watch -----------------------------------------------------------------------------

    async def watch(self, request: WatchRequest) -> AsyncGenerator[WatchEvent, None]:
        """One Watch stream: its events until it ends, then ``Unavailable`` (retriable)."""
        message = pb.WatchRequest(
            prefixes=list(request.prefixes),
            environment=request.environment,
            key=request.key or "",
            progress_interval_seconds=request.progress_interval,
        )
        if request.start_after is not None:
            message.since_revision = request.start_after
        idle = idle_timeout(request.progress_interval)
        call = self._stub.Watch(message, metadata=self._metadata)
        try:
            while True:
                try:
                    async with asyncio.timeout(idle):
                        received = await call.read()
                except TimeoutError:
                    raise Unavailable(
                        f"server {self.endpoint} sent nothing on the watch for {idle}s"
                    ) from None
                except grpc.aio.AioRpcError as exc:
                    raise self._error(exc) from None
                except asyncio.CancelledError:
                    if self._closed_under_call():
                        raise Unavailable(f"the connection to {self.endpoint} was closed") from None
                    raise
                if received is grpc.aio.EOF:
                    break
                if received.type in EVENT_TYPES:
                    yield event_from_dict(event_dict(received))
        finally:
            call.cancel()
        raise Unavailable(f"server {self.endpoint} ended the watch stream")

    # -- errors ----------------------------------------------------------------------------

    def _closed_under_call(self) -> bool:
        """grpc.aio cancels the calls of a closed channel: that ends the call, not the caller's task."""
        task = asyncio.current_task()
        return self._closed and (task is None or task.cancelling() == 0)

    def _error(self, exc: Any) -> LLMConfigError:
        code = exc.code()
        detail = exc.details() or ""
        problem = _problem_of(exc)
        if problem is not None:
            status = problem.get("status")
            return from_problem(problem, status if isinstance(status, int) else 500)
        cls = _BY_STATUS.get(code, LLMConfigError)
        if cls is Unavailable:
            if code == grpc.StatusCode.UNAVAILABLE:
                return Unavailable(f"cannot reach server {self.endpoint}: {detail[:200] or 'unavailable'}")
            return Unavailable(f"call to server {self.endpoint} failed: {code.name.lower()}")
        if cls is ProtocolError:
            return ProtocolError(f"server {self.endpoint} answered {code.name}: {detail[:200]}")
        return cls(detail or f"gRPC status {code.name}")


def _problem_of(exc: Any) -> dict[str, Any] | None:
    try:
        trailing = exc.trailing_metadata() or ()
    except Exception:  # a call that never got an answer has no trailers to read
        return None
    for name, value in trailing:
        if name == PROBLEM_METADATA:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            try:
                problem = json.loads(text)
            except json.JSONDecodeError:
                return None
            return problem if isinstance(problem, dict) else None
    return None


def _json(text: str, what: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ProtocolError(f"server sent {what} that is not JSON") from None


def entry_dict(entry: Any, *, write: bool = False) -> dict[str, Any]:
    """A ``ConfigEntry`` message in the shape REST answers with (resolved or a stored version)."""
    out: dict[str, Any] = {
        "namespace": entry.namespace,
        "key": entry.key,
        "environment": entry.environment,
        "revision": entry.revision,
        "value": _json(entry.value_json, "a value"),
        "sha256": entry.sha256,
    }
    if entry.resolved:
        out["resolved"] = True
        out["layers"] = [
            {"environment": layer.environment, "version": layer.version, "revision": layer.revision}
            for layer in entry.layers
        ]
        if entry.provenance:
            out["provenance"] = dict(entry.provenance)
        if entry.secret_versions:
            out["secret_versions"] = [
                {"secret_ref": used.secret_ref, "version": used.version, "revision": used.revision}
                for used in entry.secret_versions
            ]
    else:
        out.update(
            version=entry.version,
            change_type=entry.change_type,
            author=entry.author,
            message=entry.message,
            created_at=entry.created_at,
            deleted=entry.deleted,
            metadata=_json(entry.metadata_json, "metadata") or {},
        )
        if entry.patch_json:
            out["patch"] = _json(entry.patch_json, "a patch")
    if write:
        out["changed"] = entry.changed
    return out


def event_dict(event: Any) -> dict[str, Any]:
    """A ``WatchEvent`` message as the JSON object SSE carries (then decoded like it)."""
    out: dict[str, Any] = {"type": event.type, "revision": event.revision}
    if event.type in ("put", "delete"):
        out.update(
            namespace=event.namespace,
            key=event.key,
            environment=event.environment,
            value=_json(event.value_json, "a watch value"),
            sha256=event.sha256,
            secret_refs=[
                {"field_path": ref.field_path, "secret_ref": ref.secret_ref, "version": ref.version}
                for ref in event.secret_refs
            ],
        )
    elif event.type == "snapshot":
        out["items"] = [event_dict(item) for item in event.items]
    return out

"""The gRPC API, ``llmconfig.v1.ConfigService``: the REST handlers' twin over the same services.

Each RPC takes the steps a REST request takes in ``server.api.app`` and ``server.api.configs``:
a request id (metadata ``x-request-id`` if well formed), the principal from the same
``Authenticator`` (metadata ``authorization: Bearer …``, or the verified client certificate
when mTLS is on), the request turned into the arguments the REST handler passes, the same
service call (so the same policy decisions and audit records), the answer turned into a
message. Config values travel as JSON text (``value_json``) so numbers keep their JSON form.

Errors from the one exception tree become status codes by ``status_code_for``; the details
are the REST problem's ``detail`` and the trailing metadata ``llmcm-problem`` carries the
whole problem document as JSON (e.g. every schema violation). Anything outside the tree,
and server-side failures, are INTERNAL with only the request id, never the text.

Only the ``server.api.grpc_*`` modules import the generated code (messages are built in
``grpc_messages``). The servicer registers its own handlers instead of the generated
``add_…_to_server``: watch events are serialized once and shared by every watcher of the same
tenant and environment (``server.api.fanout``), and the Watch handler has no response
serializer, so those bytes go out as they are.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import math
import os
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
import structlog
from cryptography import x509

from server.api.fanout import Encodings, StallGuard
from server.api.grpc_messages import agent_message, entry_message, serialize, watch_bytes
from server.auth import Authenticator
from server.service import Ctx, Services
from shared.errors import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    LLMConfigError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from shared.models import ConfigRef, parse_environment, parse_json
from shared.proto.llmconfig.v1 import config_pb2 as pb

log = structlog.get_logger("llmcm.grpc")

SERVICE = "llmconfig.v1.ConfigService"
PROBLEM_KEY = "llmcm-problem"
REQUEST_ID_KEY = "x-request-id"
DEFAULT_PROGRESS_SECONDS = 10.0
SLOW_WATCHER_SECONDS = 30.0  # as over SSE: a watcher that takes no event this long is dropped
_MESSAGE_MAX = 2000  # of the details text (it travels in a header)
_PROBLEM_MAX = 6000  # of the problem document in trailing metadata (clients accept 8 KiB by default)
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_ID_PREFIX = "g" + os.urandom(4).hex()
_ID_COUNTER = itertools.count(1)

# the first class a raised error is an instance of decides its code (SchemaViolation is an InvalidInput)
STATUS_CODES: tuple[tuple[type[LLMConfigError], grpc.StatusCode], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (PayloadTooLarge, grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Conflict, grpc.StatusCode.ABORTED),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
)

Message = TypeVar("Message")


def status_code_for(error: BaseException) -> grpc.StatusCode:
    """The status code of an error; INTERNAL for anything the tree does not map."""
    for cls, code in STATUS_CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _problem_metadata(problem: dict[str, Any]) -> str:
    """The problem as ASCII JSON that fits in trailing metadata (violations cut if they must be)."""
    encoded = json.dumps(problem, separators=(",", ":"))
    violations = problem.get("violations")
    if len(encoded) > _PROBLEM_MAX and isinstance(violations, list):
        kept = list(violations)
        while kept and len(encoded) > _PROBLEM_MAX:
            kept.pop()
            encoded = json.dumps(
                {**problem, "violations": kept, "violations_truncated": True}, separators=(",", ":")
            )
    if len(encoded) > _PROBLEM_MAX:
        short = {k: problem[k] for k in ("type", "title", "status", "code", "request_id") if k in problem}
        encoded = json.dumps(
            {**short, "detail": str(problem.get("detail", ""))[:1000]}, separators=(",", ":")
        )
    return encoded


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY:
            if isinstance(value, str) and 0 < len(value) <= 64 and set(value) <= _ID_CHARS:
                return value
            break
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else None
    return None


def certificate_uris(context: grpc.aio.ServicerContext) -> list[str] | None:
    """URI SANs of the client certificate of this call; None without one.

    The gRPC listener only sees certificates when mTLS is on, and then it requires and
    verifies them against the client CA during the handshake (see ``grpc_server``).
    """
    pems = context.auth_context().get("x509_pem_cert")
    if not pems:
        return None
    try:
        cert = x509.load_pem_x509_certificate(pems[0])
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    except ValueError:
        return None
    return [str(uri) for uri in sans.get_values_for_type(x509.UniformResourceIdentifier)]


def _loopback_peer(peer: str) -> bool:
    """``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000`` (or a unix socket) is on this machine."""
    kind, _, address = peer.partition(":")
    if kind == "unix":
        return True
    host = address.rsplit(":", 1)[0].strip("[]").split("%")[0]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- requests ------------------------------------------------------------------------------


def _ref(request: Any) -> ConfigRef:
    return ConfigRef.parse(request.namespace, request.key, request.environment)


def _optional(request: Any, field: str) -> int | None:
    return int(getattr(request, field)) if request.HasField(field) else None


def _resume_hint(revision: int | None) -> str:
    if revision is None:
        return "reconnect (nothing was delivered yet)"
    return f"reconnect with since_revision={revision}"


def _message_text(raw: str) -> str:
    if len(raw) > 2000:
        raise InvalidInput("'message' is longer than 2000 characters")
    return raw


class ConfigServicer:
    """The RPC handlers; ``method_handlers()`` is what the server registers."""

    def __init__(
        self,
        services: Services,
        authenticator: Authenticator,
        *,
        tls: bool = False,
        client_certificates: bool = False,
        max_body_bytes: int = 1 << 20,
    ) -> None:
        self.services = services
        self.authenticator = authenticator
        self.tls = tls
        self.client_certificates = client_certificates
        self.max_body_bytes = max_body_bytes
        self._events = Encodings(watch_bytes)
        self._stalls = StallGuard(SLOW_WATCHER_SECONDS)
        self._streams: set[asyncio.Task[Any]] = set()
        self._closing = False

    # -- the edge ----------------------------------------------------------------------------

    async def _ctx(self, context: grpc.aio.ServicerContext, request_id: str) -> Ctx:
        def peer_uris() -> list[str] | None:
            return certificate_uris(context) if self.client_certificates else None

        principal = await self.authenticator.authenticate(_authorization(context), peer_uris, request_id)
        private = self.tls or _loopback_peer(str(context.peer() or ""))
        return Ctx(principal, request_id, private)

    def _check_size(self, request: Any) -> None:
        if request.ByteSize() > self.max_body_bytes:
            raise PayloadTooLarge(f"request message is larger than the limit of {self.max_body_bytes} bytes")

    async def _abort(
        self, context: grpc.aio.ServicerContext, method: str, request_id: str, error: BaseException
    ) -> NoReturn:
        code = status_code_for(error)
        if isinstance(error, LLMConfigError) and code is not grpc.StatusCode.INTERNAL:
            problem = error.to_problem()
            problem["request_id"] = request_id
            detail = error.detail
        else:
            if isinstance(error, LLMConfigError):
                # our own server-side failure (storage, audit): its code, not its text
                log.error("grpc_call_failed", method=method, request_id=request_id, error=error.code)
                problem = {"title": error.title, "status": error.status, "code": error.code}
            else:
                # the exception text may carry values: log the type and where, never the text
                log.error(
                    "unhandled_error",
                    method=method,
                    request_id=request_id,
                    error_type=type(error).__name__,
                    where=traceback.format_tb(error.__traceback__)[-3:],
                )
                problem = {"title": "Internal error", "status": 500, "code": "internal"}
            detail = f"internal error; see server logs for request id {request_id}"
            problem.update(detail=detail, request_id=request_id)
        if len(detail) > _MESSAGE_MAX:
            detail = detail[: _MESSAGE_MAX - 1] + "…"
        await context.abort(
            code,
            detail,
            trailing_metadata=((PROBLEM_KEY, _problem_metadata(problem)), (REQUEST_ID_KEY, request_id)),
        )
        raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises

    async def _unary(
        self,
        method: str,
        request: Any,
        context: grpc.aio.ServicerContext,
        work: Callable[[Ctx], Awaitable[Message]],
    ) -> Message:
        request_id = _request_id(context)
        try:
            self._check_size(request)
            ctx = await self._ctx(context, request_id)
            reply = await work(ctx)
        except Exception as exc:  # every error becomes a status (a BaseException is not one)
            await self._abort(context, method, request_id, exc)
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        return reply

    # -- configs -----------------------------------------------------------------------------

    async def Get(self, request: Any, context: grpc.aio.ServicerContext) -> pb.ConfigEntry:
        async def work(ctx: Ctx) -> pb.ConfigEntry:
            configs = self.services.configs
            version = _optional(request, "version")
            # the same parse of the same request always gives the same arguments (REST keys by raw URL)
            memo_key = (SERVICE, request.SerializeToString(deterministic=True))
            result = configs.memo_get(ctx.principal, memo_key)
            if result is None:
                ref = _ref(request)
                if version is not None and version < 1:
                    raise InvalidInput("'version' must be at least 1")
                if version is not None and request.resolve:
                    raise InvalidInput("use either version=N (one stored version) or resolve=true, not both")
                result = await configs.get(
                    ctx,
                    ref,
                    version=version,
                    resolve=request.resolve,
                    explain=request.explain,
                    memo_key=memo_key,
                )
            msg = entry_message(result.body)
            msg.etag = result.etag
            return msg

        return await self._unary("Get", request, context, work)

    async def List(self, request: Any, context: grpc.aio.ServicerContext) -> pb.ListResponse:
        async def work(ctx: Ctx) -> pb.ListResponse:
            env = parse_environment(request.environment)
            items = await self.services.configs.list_entries(
                ctx, env, prefix=request.prefix or None, resolve=request.resolve
            )
            return pb.ListResponse(environment=env.value, items=[entry_message(item) for item in items])

        return await self._unary("List", request, context, work)

    async def Put(self, request: Any, context: grpc.aio.ServicerContext) -> pb.ConfigEntry:
        async def work(ctx: Ctx) -> pb.ConfigEntry:
            ref = _ref(request)
            if not request.value_json:
                raise InvalidInput("'value_json' must carry the value: a JSON object")
            value = parse_json(request.value_json, "value_json")
            metadata = parse_json(request.metadata_json, "metadata_json") if request.metadata_json else None
            result = await self.services.configs.put(
                ctx,
                ref,
                value,
                message=_message_text(request.message),
                expected_version=_optional(request, "expected_version"),
                metadata=metadata,
            )
            return entry_message(result.to_dict())

        return await self._unary("Put", request, context, work)

    async def Delete(self, request: Any, context: grpc.aio.ServicerContext) -> pb.ConfigEntry:
        async def work(ctx: Ctx) -> pb.ConfigEntry:
            result = await self.services.configs.delete(
                ctx,
                _ref(request),
                message=request.message[:2000],
                expected_version=_optional(request, "expected_version"),
            )
            return entry_message(result.to_dict())

        return await self._unary("Delete", request, context, work)

    async def History(self, request: Any, context: grpc.aio.ServicerContext) -> pb.HistoryResponse:
        async def work(ctx: Ctx) -> pb.HistoryResponse:
            ref = _ref(request)
            if request.limit < 0:
                raise InvalidInput("'limit' must be at least 1")
            before = _optional(request, "before")
            if before is not None and before < 1:
                raise InvalidInput("'before' must be at least 1")
            versions = await self.services.configs.history(
                ctx, ref, limit=request.limit or 100, before=before
            )
            return pb.HistoryResponse(versions=[entry_message(v) for v in versions])

        return await self._unary("History", request, context, work)

    async def Rollback(self, request: Any, context: grpc.aio.ServicerContext) -> pb.ConfigEntry:
        async def work(ctx: Ctx) -> pb.ConfigEntry:
            result = await self.services.configs.rollback(
                ctx,
                _ref(request),
                int(request.version),
                message=_message_text(request.message),
                expected_version=_optional(request, "expected_version"),
            )
            return entry_message(result.to_dict())

        return await self._unary("Rollback", request, context, work)

    # -- agents ------------------------------------------------------------------------------

    async def ReportStatus(self, request: Any, context: grpc.aio.ServicerContext) -> pb.AgentStatus:
        async def work(ctx: Ctx) -> pb.AgentStatus:
            status = await self.services.agents.report(
                ctx,
                agent_id=request.agent_id,
                namespaces=list(request.namespaces),
                environment=request.environment,
                applied_revision=int(request.applied_revision),
                state=request.state,
                last_error=request.last_error,
            )
            return agent_message(status)

        return await self._unary("ReportStatus", request, context, work)

    # -- watch -------------------------------------------------------------------------------

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        """Open the subscription (errors are a status, never an empty stream), then relay it.

        The stream only ends with an error status: UNAVAILABLE when the server shuts down or
        the watcher takes too long to take an event, naming the revision to resume from (the
        last one whose events were all delivered).
        """
        request_id = _request_id(context)
        try:
            self._check_size(request)
            ctx = await self._ctx(context, request_id)
            if not request.environment:
                raise InvalidInput("'environment' is required: the environment whose values to watch")
            progress = DEFAULT_PROGRESS_SECONDS
            if request.HasField("progress_interval_seconds"):
                progress = request.progress_interval_seconds
                if not math.isfinite(progress) or progress < 0:
                    raise InvalidInput("'progress_interval_seconds' must be 0 (none) or a positive number")
            since = _optional(request, "since_revision")
            sub = await self.services.watch.open(
                ctx,
                prefixes=list(request.prefixes),
                environment=parse_environment(request.environment),
                since=since,
                key=request.key or None,
                progress_interval=progress,
            )
        except Exception as exc:
            await self._abort(context, "Watch", request_id, exc)
        resume = since
        encode, write = self._events.get, context.write
        stream = self._stalls.open()
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        try:
            async with sub:
                async for event in sub:
                    stream.busy()
                    await write(encode(event))
                    stream.idle()
                    if event.final:
                        resume = event.revision
            raise Unavailable(f"the server is shutting down; {_resume_hint(resume)}")
        except asyncio.CancelledError:
            if stream.claim():
                slow = Unavailable(
                    f"this watcher took no event for {SLOW_WATCHER_SECONDS:.0f} s and was "
                    f"disconnected; {_resume_hint(resume)}"
                )
                await self._abort(context, "Watch", request_id, slow)
            if not self._closing:
                raise  # the client went away
            shutting = Unavailable(f"the server is shutting down; {_resume_hint(resume)}")
            await self._abort(context, "Watch", request_id, shutting)
        except Exception as exc:
            await self._abort(context, "Watch", request_id, exc)
        finally:
            self._stalls.close(stream)
            if task is not None:
                self._streams.discard(task)

    def close_streams(self) -> None:
        """End every watch stream with UNAVAILABLE (at shutdown; clients resume elsewhere)."""
        self._closing = True
        for task in list(self._streams):
            task.cancel("server stopping")

    # -- registration ------------------------------------------------------------------------

    def method_handlers(self) -> dict[str, Any]:
        def unary(fn: Any, request_type: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=request_type.FromString, response_serializer=serialize
            )

        return {
            "Get": unary(self.Get, pb.GetRequest),
            "List": unary(self.List, pb.ListRequest),
            "Put": unary(self.Put, pb.PutRequest),
            "Delete": unary(self.Delete, pb.DeleteRequest),
            "History": unary(self.History, pb.HistoryRequest),
            "Rollback": unary(self.Rollback, pb.RollbackRequest),
            "ReportStatus": unary(self.ReportStatus, pb.ReportStatusRequest),
            # the stream writes events serialized once for all its watchers: bytes go out as they are
            "Watch": grpc.unary_stream_rpc_method_handler(
                self.Watch, request_deserializer=pb.WatchRequest.FromString, response_serializer=None
            ),
        }

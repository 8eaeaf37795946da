"""The gRPC listener: a ``grpc.aio`` server for ``ConfigServicer`` on ``--grpc-port``.

Built for many long-lived watch streams (one connection per pod, thousands at once after a
rollout or a server restart): no cap on concurrent RPCs or streams per connection, a queue of
calls not yet picked up large enough for a reconnect storm (the default sheds calls past
1,000), HTTP/2 keepalive both ways so dead peers are dropped and idle streams survive
middleboxes, and the process's open-file limit raised to its hard limit (each connection is a
descriptor).

Transport security follows the REST listener: the same ``--tls-cert`` / ``--tls-key``; with
``--tls-client-ca`` client certificates are verified against it and their SPIFFE ID
authenticates like over REST. grpcio can only *require* a client certificate (it has no
"request, but optional" mode), so with mTLS on every gRPC client presents one; a bearer
token sent with it still wins, as over REST.

The port is checked before grpc binds it (grpc's own bind failure is a multi-line C-core log),
and ``SO_REUSEPORT`` is off, so a port another server holds is refused with one line instead
of being silently shared.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import structlog

from server.api.grpc_service import SERVICE, ConfigServicer
from server.auth import Authenticator
from server.service import Services
from shared.errors import Unavailable

log = structlog.get_logger("llmcm.grpc")

_MESSAGE_SLACK = 64 * 1024  # beyond the body limit, so an oversized request gets our clear error


def server_options(max_body_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", 1 << 20),
        # calls that arrive faster than grpc.aio asks for them wait here; past the soft limit the
        # C core sheds them at random with CANCELLED (6% of a 2,000-stream reconnect storm was lost)
        ("grpc.server.max_pending_requests", 20_000),
        ("grpc.server.max_pending_requests_hard_limit", 50_000),
        ("grpc.max_receive_message_length", max_body_bytes + _MESSAGE_SLACK),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _check_port(host: str, port: int) -> None:
    """Refuse a port someone already listens on, naming the reason the way the REST port does."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Unavailable(f"cannot listen on {host}:{port} for gRPC: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise Unavailable(f"cannot listen on {host}:{port} for gRPC: {reason}") from None


class GrpcServer:
    """Start with ``async with GrpcServer(...)``; ``stop()`` is safe twice."""

    def __init__(
        self,
        services: Services,
        authenticator: Authenticator,
        *,
        host: str,
        port: int,
        max_body_bytes: int = 1 << 20,
        tls_cert: str = "",
        tls_key: str = "",
        tls_client_ca: str = "",
        shutdown_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.shutdown_timeout = shutdown_timeout
        self._tls = (tls_cert, tls_key, tls_client_ca) if tls_cert else None
        self.servicer = ConfigServicer(
            services,
            authenticator,
            tls=self._tls is not None,
            client_certificates=bool(tls_client_ca),
            max_body_bytes=max_body_bytes,
        )
        self._max_body_bytes = max_body_bytes
        self._server: Any = None

    async def __aenter__(self) -> GrpcServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _credentials(self) -> Any:
        assert self._tls is not None
        cert, key, client_ca = self._tls
        pair = [(Path(key).read_bytes(), Path(cert).read_bytes())]
        if client_ca:
            return grpc.ssl_server_credentials(
                pair, root_certificates=Path(client_ca).read_bytes(), require_client_auth=True
            )
        return grpc.ssl_server_credentials(pair)

    async def start(self) -> None:
        _check_port(self.host, self.port)
        open_files = raise_open_file_limit()
        server = grpc.aio.server(options=server_options(self._max_body_bytes), maximum_concurrent_rpcs=None)
        handlers = self.servicer.method_handlers()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        server.add_registered_method_handlers(SERVICE, handlers)
        address = _address(self.host, self.port)
        try:
            if self._tls is not None:
                server.add_secure_port(address, self._credentials())
            else:
                server.add_insecure_port(address)
        except RuntimeError:
            # _check_port found it free a moment ago: another process took it since
            raise Unavailable(
                f"cannot listen on {self.host}:{self.port} for gRPC: {os.strerror(errno.EADDRINUSE)}"
            ) from None
        await server.start()
        self._server = server
        log.info(
            "grpc_started",
            host=self.host,
            port=self.port,
            tls=self._tls is not None,
            open_file_limit=open_files,
        )

    async def stop(self) -> None:
        """Refuse new calls, end watch streams (clients resume elsewhere), let unary calls finish."""
        server, self._server = self._server, None
        if server is None:
            return
        self.servicer.close_streams()
        await server.stop(self.shutdown_timeout)
        log.info("grpc_stopped")

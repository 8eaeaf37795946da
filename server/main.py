"""``llm-config-server``: init a store, apply migrations, serve the APIs.

serve: load config → TLS context and JWT key set (a bad file is one clear line) →
open storage → build services → start the HTTP(S) site, then the gRPC listener →
wait for SIGTERM/SIGINT (the handler only sets an event) → end gRPC streams, stop accepting,
drain in-flight requests within ``shutdown_timeout`` → close storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from typing import Any

import click
import structlog
from aiohttp import web

from server.api.app import create_app
from server.api.grpc_server import GrpcServer
from server.auth import Authenticator, JwtSettings, JwtVerifier, server_context
from server.cluster.node import Cluster, MeteredAuthenticator
from server.config import ServerConfig
from server.keys import KeyProvider
from server.keys.local import LocalKeyProvider, create_master_key_file, load_master_key
from server.keys.vault import VaultKeyProvider, VaultSettings
from server.service import Services
from server.service.keys import Rewrapper
from server.storage import SQLiteStorage, open_storage, schema_version
from shared.errors import LLMConfigError
from shared.logs import configure_logging
from shared.models import redact_url

log = structlog.get_logger("llmcm.server")


def _config(ctx: click.Context, **flags: Any) -> ServerConfig:
    try:
        return ServerConfig.load(flags=flags, config_file=ctx.obj.get("config_file"))
    except LLMConfigError as exc:
        raise click.ClickException(exc.detail) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), help="TOML file with a [server] table."
)
@click.pass_context
def cli(ctx: click.Context, config_file: str | None) -> None:
    """LLM-Config-Manager server."""
    ctx.ensure_object(dict)
    ctx.obj["config_file"] = config_file


_data = click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False),
    help="Data directory (the SQLite store, the master key file).",
)
_storage = click.option(
    "--storage",
    help="Storage URL: sqlite:///PATH (default: llmcm.db in the data dir) or postgresql://HOST/DB "
    "(replicas sharing one database). Env LLMCM_STORAGE.",
)


@cli.command()
@_data
@_storage
@click.option("--tenant-name", default="default", show_default=True, help="Name of the first tenant.")
@click.option("--json", "as_json", is_flag=True, help="Print {tenant_id, token} as JSON.")
@click.pass_context
def init(
    ctx: click.Context, data_dir: str | None, storage: str | None, tenant_name: str, as_json: bool
) -> None:
    """Create the store, a first tenant and a global-admin token (printed once)."""
    config = _config(ctx, data_dir=data_dir, storage=storage)
    configure_logging("warning")

    async def run() -> tuple[str, str]:
        async with open_storage(config.storage_url) as store:
            if await store.list_tenants():
                raise click.ClickException(
                    f"the store at {store.url_for_logs} is already initialized; "
                    "use the token you were given, or create another with `llm-config token create`"
                )
            if not config.master_key:
                create_master_key_file(config.master_key_path)
            tenant, token = await Services.build(store).tenants.bootstrap(tenant_name)
            return tenant.id, token

    try:
        tenant_id, token = asyncio.run(run())
    except LLMConfigError as exc:
        raise click.ClickException(exc.detail) from None
    if as_json:
        click.echo(json.dumps({"tenant_id": tenant_id, "token": token}))
        return
    click.echo(f"Initialized store: {redact_url(config.storage_url) if config.storage else config.data_dir}")
    click.echo(f"Tenant: {tenant_name} ({tenant_id})")
    click.echo("Global-admin token (shown once; keep it secret):")
    click.echo(token)


@cli.command()
@_storage
@_data
@click.pass_context
def migrate(ctx: click.Context, storage: str | None, data_dir: str | None) -> None:
    """Apply schema migrations (idempotent)."""
    config = _config(ctx, data_dir=data_dir, storage=storage)
    configure_logging("warning")

    async def run() -> list[int]:
        store = open_storage(config.storage_url)
        await store.open(migrate=False)  # so that migrate() below reports what it applied
        try:
            return await store.migrate()
        finally:
            await store.close()

    try:
        applied = asyncio.run(run())
    except LLMConfigError as exc:
        raise click.ClickException(exc.detail) from None
    if applied:
        click.echo(f"applied migrations: {', '.join(map(str, applied))}")
    else:
        click.echo(f"schema is up to date (version {schema_version(config.storage_url)})")


@cli.command()
@_data
@_storage
@click.option("--host", help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, help="REST port (default 8080).")
@click.option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    help="gRPC port (default 50051; 0 turns gRPC off). Env LLMCM_GRPC_PORT.",
)
@click.option(
    "--redis",
    help="Redis URL (redis://HOST:PORT/DB) joining replicas on one PostgreSQL store: change notices, "
    "shared cache, limits. Env LLMCM_REDIS.",
)
@click.option(
    "--redis-prefix", help="Prefix of every Redis key and channel (default llmcm:). Env LLMCM_REDIS_PREFIX."
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--tls-cert", help="PEM certificate (chain) to serve HTTPS with. Env LLMCM_TLS_CERT.")
@click.option("--tls-key", help="PEM private key of --tls-cert. Env LLMCM_TLS_KEY.")
@click.option(
    "--tls-client-ca",
    help="PEM CA bundle: request client certificates (mTLS) and verify them against it. "
    "Env LLMCM_TLS_CLIENT_CA.",
)
@click.option(
    "--spiffe-trust-domain",
    help="Trust domain of client SPIFFE IDs, e.g. example.org. Env LLMCM_SPIFFE_TRUST_DOMAIN.",
)
@click.option("--jwt-jwks", help="JWKS file or https:// URL of the OIDC provider. Env LLMCM_JWT_JWKS.")
@click.option("--jwt-issuer", help="Required 'iss' of JWTs. Env LLMCM_JWT_ISSUER.")
@click.option("--jwt-audience", help="Required 'aud' of JWTs. Env LLMCM_JWT_AUDIENCE.")
@click.option("--jwt-tenant-claim", help="Claim holding the tenant id or name (default: tenant).")
@click.option("--jwt-roles-claim", help="Claim holding the list of roles (default: roles).")
@click.option("--jwt-namespaces-claim", help="Claim holding namespace scopes (default: namespaces).")
@click.option(
    "--jwt-allow-global-admin",
    is_flag=True,
    default=None,
    help="Accept the global-admin role from JWTs (refused by default). Env LLMCM_JWT_ALLOW_GLOBAL_ADMIN.",
)
@click.option("--jwt-leeway", type=float, help="Clock skew allowed for exp/nbf, seconds (default 30).")
@click.option(
    "--key-provider",
    type=click.Choice(["local", "vault"]),
    help="Who wraps data keys (default local). Env LLMCM_KEY_PROVIDER; vault: README, Vault.",
)
@click.option("--vault-addr", help="Vault URL. Env LLMCM_VAULT_ADDR or VAULT_ADDR.")
@click.option("--vault-mount", help="Transit mount path (default transit). Env LLMCM_VAULT_MOUNT.")
@click.option(
    "--due-scan-interval",
    type=float,
    help="Seconds between scans for secrets due for rotation (default 60). Env LLMCM_DUE_SCAN_INTERVAL.",
)
@click.pass_context
def serve(ctx: click.Context, /, **flags: Any) -> None:
    """Serve the REST and gRPC APIs until SIGTERM or SIGINT."""
    config = _config(ctx, **flags)
    configure_logging(config.log_level, config.log_format)
    try:
        asyncio.run(_serve(config))
    except LLMConfigError as exc:
        raise click.ClickException(exc.detail) from None


def _init_hint(config: ServerConfig) -> tuple[str, str]:
    """Where the store is, and the init command that creates it, as the user would name them."""
    if config.storage:
        shown = redact_url(config.storage)
        return shown, f"llm-config-server init --storage {shown}"
    return str(config.data_dir), f"llm-config-server init --data {config.data_dir}"


async def _serve(config: ServerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # the files behind this context (already checked by it) serve gRPC too (server.api.grpc_server)
    ssl_context = (
        server_context(config.tls_cert, config.tls_key, config.tls_client_ca) if config.tls else None
    )
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_storage(config.storage_url))
        if not await store.list_tenants():
            where, init_cmd = _init_hint(config)
            raise click.ClickException(f"no tenant in the store at {where}; run '{init_cmd}' first")
        keys: KeyProvider
        if config.key_provider == "vault":
            vault = await stack.enter_async_context(
                VaultKeyProvider(_vault_settings(config), max_encryptions=config.kek_max_encryptions)
            )
            keys = vault
        else:
            if not config.master_key and not config.master_key_path.exists():
                if not isinstance(store, SQLiteStorage):
                    # replicas of a shared store must all hold the one key init made; a new one
                    # here would seal key-encryption keys that no other replica can open
                    raise click.ClickException(
                        f"master key file {config.master_key_path} is missing; every server on a "
                        "shared store needs the key 'llm-config-server init' created: copy the file "
                        "(--data DIR or master_key_file) or set LLMCM_MASTER_KEY"
                    )
                if await store.tenants_with_secrets():
                    # a new key could open none of the stored KEKs: refuse rather than start blind
                    raise click.ClickException(
                        f"master key file {config.master_key_path} is missing, but the store holds "
                        "secrets; restore the file or set LLMCM_MASTER_KEY"
                    )
                create_master_key_file(config.master_key_path)
            keys = LocalKeyProvider(
                store,
                load_master_key(config.master_key, config.master_key_path),
                max_encryptions=config.kek_max_encryptions,
            )
        cluster = await stack.enter_async_context(
            Cluster(
                replicated=not isinstance(store, SQLiteStorage),
                redis_url=config.redis,
                redis_prefix=config.redis_prefix,
                fallback_poll=config.fallback_poll_interval,
                safety_poll=config.safety_poll_interval,
            )
        )
        services = Services.build(
            store,
            max_value_bytes=config.max_body_bytes,
            keys=keys,
            allow_insecure_secrets=config.allow_insecure_secrets,
            counters=cluster.counters,
        )
        node = cluster.wire(services)
        if not config.tls and config.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning(
                "serving_without_tls",
                host=config.host,
                hint="tokens cross the network in clear text and remote clients get no secret values "
                "(allow_insecure_secrets overrides): set --tls-cert and --tls-key",
            )
        verifier: JwtVerifier | None = None
        if config.jwt:
            verifier = await stack.enter_async_context(JwtVerifier(_jwt_settings(config)))
            await verifier.start()
        authenticator: Authenticator = MeteredAuthenticator(
            services.core.limits,
            services.tenants,
            jwt=verifier,
            trust_domain=config.spiffe_trust_domain,
            allow_jwt_global_admin=config.jwt_allow_global_admin,
        )
        app = create_app(services, max_body_bytes=config.max_body_bytes, authenticator=authenticator)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=config.shutdown_timeout)
        await runner.setup()
        try:
            site = web.TCPSite(runner, config.host, config.port, backlog=1024, ssl_context=ssl_context)
            try:
                await site.start()
            except OSError as exc:
                # asyncio wraps the bind error in a long sentence; the errno says it plainly
                reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or str(exc)
                raise click.ClickException(
                    f"cannot listen on {config.host}:{config.port}: {reason}"
                ) from None
            grpc_api = (
                await stack.enter_async_context(_grpc_server(config, services, authenticator))
                if config.grpc_port
                else None
            )
            log.info(
                "server_started",
                host=config.host,
                port=config.port,
                grpc_port=config.grpc_port or None,
                storage=store.url_for_logs,
                tls=config.tls,
                mtls_trust_domain=config.spiffe_trust_domain or None,
                jwt_issuer=config.jwt_issuer or None,
                key_provider=config.key_provider,
                replicated=cluster.replicated,
                redis=redact_url(config.redis) if config.redis else None,
            )
            async with asyncio.TaskGroup() as background:
                rewrap = background.create_task(
                    Rewrapper(services.keys, rate=config.rewrap_rate).run(), name="rewrap"
                )
                due_scan = background.create_task(
                    services.rotation.run(config.due_scan_interval), name="rotation-due"
                )
                replicas = background.create_task(node.run(), name="cluster")
                await stop.wait()
                log.info("server_stopping", drain_seconds=config.shutdown_timeout)
                await services.watch.close()  # end watch streams so the drain isn't held open
                rewrap.cancel("server stopping")
                due_scan.cancel("server stopping")
                replicas.cancel("server stopping")
                if grpc_api is not None:
                    await grpc_api.stop()  # watch streams end now; clients resume elsewhere
        finally:
            await runner.cleanup()
    log.info("server_stopped")


def _grpc_server(config: ServerConfig, services: Services, authenticator: Authenticator) -> GrpcServer:
    return GrpcServer(
        services,
        authenticator,
        host=config.host,
        port=config.grpc_port,
        max_body_bytes=config.max_body_bytes,
        tls_cert=config.tls_cert,
        tls_key=config.tls_key,
        tls_client_ca=config.tls_client_ca,
        shutdown_timeout=config.shutdown_timeout,
    )


def _vault_settings(config: ServerConfig) -> VaultSettings:
    return VaultSettings(
        addr=config.vault_addr,
        token=config.vault_token,
        role_id=config.vault_role_id,
        secret_id=config.vault_secret_id,
        mount=config.vault_mount,
        namespace=config.vault_namespace,
    )


def _jwt_settings(config: ServerConfig) -> JwtSettings:
    return JwtSettings(
        jwks=config.jwt_jwks,
        issuer=config.jwt_issuer,
        audience=config.jwt_audience,
        tenant_claim=config.jwt_tenant_claim,
        roles_claim=config.jwt_roles_claim,
        namespaces_claim=config.jwt_namespaces_claim,
        leeway=config.jwt_leeway,
    )


def main() -> None:
    cli(prog_name="llm-config-server")


if __name__ == "__main__":
    main()

"""Versioned schema migrations. Append new versions; never edit an applied one."""

from __future__ import annotations

SQLITE_MIGRATIONS: list[tuple[int, tuple[str, ...]]] = [
    (
        1,
        (
            """CREATE TABLE chains (
                id TEXT PRIMARY KEY,
                revision INTEGER NOT NULL DEFAULT 0,
                audit_seq INTEGER NOT NULL DEFAULT 0,
                audit_hash TEXT NOT NULL
            )""",
            """CREATE TABLE tenants (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                status TEXT NOT NULL,
                created_at TEXT NOT NULL,
                settings TEXT NOT NULL
            )""",
            """CREATE TABLE tokens (
                id TEXT PRIMARY KEY,
                tenant_id TEXT NOT NULL REFERENCES tenants(id),
                name TEXT NOT NULL,
                token_hash TEXT NOT NULL UNIQUE,
                roles TEXT NOT NULL,
                namespaces TEXT NOT NULL,
                created_at TEXT NOT NULL,
                expires_at TEXT,
                revoked INTEGER NOT NULL DEFAULT 0,
                created_by TEXT NOT NULL
            )""",
            "CREATE INDEX tokens_tenant ON tokens(tenant_id)",
            """CREATE TABLE config_versions (
                tenant_id TEXT NOT NULL REFERENCES tenants(id),
                namespace TEXT NOT NULL,
                key TEXT NOT NULL,
                environment TEXT NOT NULL,
                version INTEGER NOT NULL,
                revision INTEGER NOT NULL,
                value TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                change_type TEXT NOT NULL,
                author TEXT NOT NULL,
                message TEXT NOT NULL,
                created_at TEXT NOT NULL,
                patch TEXT NOT NULL,
                tombstone INTEGER NOT NULL DEFAULT 0,
                metadata TEXT NOT NULL,
                PRIMARY KEY (tenant_id, namespace, key, environment, version)
            )""",
            "CREATE UNIQUE INDEX config_versions_revision ON config_versions(tenant_id, revision)",
            """CREATE TABLE schemas (
                tenant_id TEXT NOT NULL REFERENCES tenants(id),
                name TEXT NOT NULL,
                schema TEXT NOT NULL,
                created_at TEXT NOT NULL,
                PRIMARY KEY (tenant_id, name)
            )""",
            """CREATE TABLE schema_bindings (
                id TEXT PRIMARY KEY,
                tenant_id TEXT NOT NULL REFERENCES tenants(id),
                schema_name TEXT NOT NULL,
                namespace_glob TEXT NOT NULL,
                key_glob TEXT NOT NULL,
                created_at TEXT NOT NULL
            )""",
            """CREATE TABLE audit_log (
                chain TEXT NOT NULL,
                seq INTEGER NOT NULL,
                time TEXT NOT NULL,
                tenant_id TEXT NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                resource TEXT NOT NULL,
                result TEXT NOT NULL,
                request_id TEXT NOT NULL,
                metadata TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL,
                PRIMARY KEY (chain, seq)
            )""",
        ),
    ),
]

SQLITE_MIGRATIONS.append(
    (
        2,
        (
            # per-tenant key-encryption keys of the local key provider, sealed by the master key
            """CREATE TABLE keks (
                tenant_id TEXT NOT NULL REFERENCES tenants(id),
                version INTEGER NOT NULL,
                sealed TEXT NOT NULL,
                created_at TEXT NOT NULL,
                encryptions INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (tenant_id, version)
            )""",
            """CREATE TABLE secret_versions (
                tenant_id TEXT NOT NULL REFERENCES tenants(id),
                namespace TEXT NOT NULL,
                key TEXT NOT NULL,
                version INTEGER NOT NULL,
                revision INTEGER NOT NULL,
                status TEXT NOT NULL,
                format INTEGER NOT NULL,
                kek_id TEXT NOT NULL,
                kek_version INTEGER NOT NULL,
                wrapped_dek TEXT NOT NULL,
                ciphertext TEXT NOT NULL,
                created_at TEXT NOT NULL,
                author TEXT NOT NULL,
                message TEXT NOT NULL,
                valid_until TEXT,
                expires_at TEXT,
                metadata TEXT NOT NULL,
                PRIMARY KEY (tenant_id, namespace, key, version)
            )""",
            "CREATE UNIQUE INDEX secret_versions_revision ON secret_versions(tenant_id, revision)",
        ),
    )
)

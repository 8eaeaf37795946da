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

SQLITE_MIGRATIONS.append(
    (
        3,
        (
            # the last report of each agent (llm-config agents, rollout status); one row per agent
            """CREATE TABLE agent_status (
                tenant_id TEXT NOT NULL REFERENCES tenants(id),
                agent_id TEXT NOT NULL,
                namespaces TEXT NOT NULL,
                environment TEXT NOT NULL,
                applied_revision INTEGER NOT NULL,
                state TEXT NOT NULL,
                last_error TEXT NOT NULL,
                reported_at TEXT NOT NULL,
                PRIMARY KEY (tenant_id, agent_id)
            )""",
        ),
    )
)

SQLITE_MIGRATIONS.append(
    (
        4,
        (
            # history at or below this revision may have been compacted away (watch snapshots)
            "ALTER TABLE chains ADD COLUMN compacted_revision INTEGER NOT NULL DEFAULT 0",
        ),
    )
)

SQLITE_MIGRATIONS.append(
    (
        5,
        (
            # notices about secrets that have no version row (revocations, rotation reminders), so the
            # change feed can replay them; metadata only, never a value
            """CREATE TABLE secret_events (
                tenant_id TEXT NOT NULL REFERENCES tenants(id),
                revision INTEGER NOT NULL,
                namespace TEXT NOT NULL,
                key TEXT NOT NULL,
                kind TEXT NOT NULL,
                versions TEXT NOT NULL,
                created_at TEXT NOT NULL,
                data TEXT NOT NULL,
                PRIMARY KEY (tenant_id, revision)
            )""",
            # each version's rotation reminder is announced once
            "CREATE UNIQUE INDEX secret_events_due ON secret_events"
            "(tenant_id, namespace, key, kind, versions) WHERE kind = 'rotation_due'",
        ),
    )
)


# PostgreSQL: the same schema, version by version (a version number means the same tables on
# both backends; append a PostgreSQL version with each SQLite one). Identifiers compare and sort
# bytewise (COLLATE "C"), as SQLite does, whatever the database's collation; JSON is kept as
# text, byte for byte as written; integers are 64-bit.
_ID = 'TEXT COLLATE "C"'

POSTGRES_MIGRATIONS: list[tuple[int, tuple[str, ...]]] = [
    (
        1,
        (
            f"""CREATE TABLE chains (
                id {_ID} PRIMARY KEY,
                revision BIGINT NOT NULL DEFAULT 0,
                audit_seq BIGINT NOT NULL DEFAULT 0,
                audit_hash TEXT NOT NULL
            )""",
            f"""CREATE TABLE tenants (
                id {_ID} PRIMARY KEY,
                name {_ID} NOT NULL UNIQUE,
                status TEXT NOT NULL,
                created_at {_ID} NOT NULL,
                settings TEXT NOT NULL
            )""",
            f"""CREATE TABLE tokens (
                id {_ID} PRIMARY KEY,
                tenant_id {_ID} NOT NULL REFERENCES tenants(id),
                name TEXT NOT NULL,
                token_hash {_ID} NOT NULL UNIQUE,
                roles TEXT NOT NULL,
                namespaces TEXT NOT NULL,
                created_at {_ID} NOT NULL,
                expires_at TEXT,
                revoked BOOLEAN NOT NULL DEFAULT FALSE,
                created_by TEXT NOT NULL
            )""",
            "CREATE INDEX tokens_tenant ON tokens(tenant_id)",
            f"""CREATE TABLE config_versions (
                tenant_id {_ID} NOT NULL REFERENCES tenants(id),
                namespace {_ID} NOT NULL,
                key {_ID} NOT NULL,
                environment {_ID} NOT NULL,
                version BIGINT NOT NULL,
                revision BIGINT NOT NULL,
                value TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                change_type TEXT NOT NULL,
                author TEXT NOT NULL,
                message TEXT NOT NULL,
                created_at TEXT NOT NULL,
                patch TEXT NOT NULL,
                tombstone BOOLEAN NOT NULL DEFAULT FALSE,
                metadata TEXT NOT NULL,
                PRIMARY KEY (tenant_id, namespace, key, environment, version)
            )""",
            "CREATE UNIQUE INDEX config_versions_revision ON config_versions(tenant_id, revision)",
            f"""CREATE TABLE schemas (
                tenant_id {_ID} NOT NULL REFERENCES tenants(id),
                name {_ID} NOT NULL,
                schema TEXT NOT NULL,
                created_at TEXT NOT NULL,
                PRIMARY KEY (tenant_id, name)
            )""",
            f"""CREATE TABLE schema_bindings (
                id {_ID} PRIMARY KEY,
                tenant_id {_ID} NOT NULL REFERENCES tenants(id),
                schema_name {_ID} NOT NULL,
                namespace_glob TEXT NOT NULL,
                key_glob TEXT NOT NULL,
                created_at {_ID} NOT NULL
            )""",
            f"""CREATE TABLE audit_log (
                chain {_ID} NOT NULL,
                seq BIGINT NOT NULL,
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
    (
        2,
        (
            f"""CREATE TABLE keks (
                tenant_id {_ID} NOT NULL REFERENCES tenants(id),
                version BIGINT NOT NULL,
                sealed TEXT NOT NULL,
                created_at TEXT NOT NULL,
                encryptions BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (tenant_id, version)
            )""",
            f"""CREATE TABLE secret_versions (
                tenant_id {_ID} NOT NULL REFERENCES tenants(id),
                namespace {_ID} NOT NULL,
                key {_ID} NOT NULL,
                version BIGINT NOT NULL,
                revision BIGINT NOT NULL,
                status TEXT NOT NULL,
                format BIGINT NOT NULL,
                kek_id TEXT NOT NULL,
                kek_version BIGINT NOT NULL,
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
    ),
    (
        3,
        (
            f"""CREATE TABLE agent_status (
                tenant_id {_ID} NOT NULL REFERENCES tenants(id),
                agent_id {_ID} NOT NULL,
                namespaces TEXT NOT NULL,
                environment TEXT NOT NULL,
                applied_revision BIGINT NOT NULL,
                state TEXT NOT NULL,
                last_error TEXT NOT NULL,
                reported_at TEXT NOT NULL,
                PRIMARY KEY (tenant_id, agent_id)
            )""",
        ),
    ),
    (
        4,
        ("ALTER TABLE chains ADD COLUMN compacted_revision BIGINT NOT NULL DEFAULT 0",),
    ),
    (
        5,
        (
            f"""CREATE TABLE secret_events (
                tenant_id {_ID} NOT NULL REFERENCES tenants(id),
                revision BIGINT NOT NULL,
                namespace {_ID} NOT NULL,
                key {_ID} NOT NULL,
                kind {_ID} NOT NULL,
                versions {_ID} NOT NULL,
                created_at TEXT NOT NULL,
                data TEXT NOT NULL,
                PRIMARY KEY (tenant_id, revision)
            )""",
            "CREATE UNIQUE INDEX secret_events_due ON secret_events"
            "(tenant_id, namespace, key, kind, versions) WHERE kind = 'rotation_due'",
        ),
    ),
]

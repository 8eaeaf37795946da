"""Rows to models and back: the column lists and row readers both storage backends share.

A row is anything indexable by position (an sqlite3 tuple or an asyncpg Record); integer
columns are cast, so a driver's integer type never leaks into a model.
"""

from __future__ import annotations

import json
from typing import Any

from server.storage.base import AgentStatus, SecretEvent
from shared.models import (
    AuditRecord,
    ChangeType,
    ConfigVersion,
    Environment,
    SecretStatus,
    SecretVersion,
    Tenant,
    TokenRecord,
)

VERSION_COLS = (
    "namespace, key, environment, version, revision, value, sha256, change_type, author, "
    "message, created_at, patch, tombstone, metadata"
)


TENANT_COLS = "id, name, status, created_at, settings"


TOKEN_COLS = "id, tenant_id, name, token_hash, roles, namespaces, created_at, expires_at, revoked, created_by"


AUDIT_COLS = (
    "seq, chain, time, tenant_id, actor, action, resource, result, request_id, metadata, prev_hash, hash"
)


SECRET_COLS = (
    "namespace, key, version, revision, status, format, kek_id, kek_version, wrapped_dek, ciphertext, "
    "created_at, author, message, valid_until, expires_at, metadata"
)


SECRET_EVENT_COLS = "revision, namespace, key, kind, versions, created_at, data"


AGENT_COLS = "tenant_id, agent_id, namespaces, environment, applied_revision, state, last_error, reported_at"


def version_of(row: Any) -> ConfigVersion:
    return ConfigVersion(
        namespace=row[0],
        key=row[1],
        environment=Environment(row[2]),
        version=int(row[3]),
        revision=int(row[4]),
        value=json.loads(row[5]),
        sha256=row[6],
        change_type=ChangeType(row[7]),
        author=row[8],
        message=row[9],
        created_at=row[10],
        patch=json.loads(row[11]),
        tombstone=bool(row[12]),
        metadata=json.loads(row[13]),
    )


def tenant_of(row: Any) -> Tenant:
    return Tenant(id=row[0], name=row[1], status=row[2], created_at=row[3], settings=json.loads(row[4]))


def token_of(row: Any) -> TokenRecord:
    return TokenRecord(
        id=row[0],
        tenant_id=row[1],
        name=row[2],
        token_hash=row[3],
        roles=tuple(json.loads(row[4])),
        namespaces=tuple(json.loads(row[5])),
        created_at=row[6],
        expires_at=row[7],
        revoked=bool(row[8]),
        created_by=row[9],
    )


def audit_of(row: Any) -> AuditRecord:
    return AuditRecord(
        seq=int(row[0]),
        chain=row[1],
        time=row[2],
        tenant_id=row[3],
        actor=row[4],
        action=row[5],
        resource=row[6],
        result=row[7],
        request_id=row[8],
        metadata=json.loads(row[9]),
        prev_hash=row[10],
        hash=row[11],
    )


def secret_of(row: Any) -> SecretVersion:
    return SecretVersion(
        namespace=row[0],
        key=row[1],
        version=int(row[2]),
        revision=int(row[3]),
        status=SecretStatus(row[4]),
        format=int(row[5]),
        kek_id=row[6],
        kek_version=int(row[7]),
        wrapped_dek=row[8],
        ciphertext=row[9],
        created_at=row[10],
        author=row[11],
        message=row[12],
        valid_until=row[13],
        expires_at=row[14],
        metadata=json.loads(row[15]),
    )


def secret_event_of(row: Any) -> SecretEvent:
    return SecretEvent(
        revision=int(row[0]),
        namespace=row[1],
        key=row[2],
        kind=row[3],
        versions=tuple(int(v) for v in json.loads(row[4])),
        created_at=row[5],
        data=json.loads(row[6]),
    )


def agent_of(row: Any) -> AgentStatus:
    return AgentStatus(
        tenant_id=row[0],
        agent_id=row[1],
        namespaces=tuple(json.loads(row[2])),
        environment=row[3],
        applied_revision=int(row[4]),
        state=row[5],
        last_error=row[6],
        reported_at=row[7],
    )

"""Hashing and verification of the tamper-evident audit chain.

Each record's hash covers its sequence number, its fields and the previous
record's hash, so editing, deleting or reordering any stored record breaks the
chain at that point. Kept free of I/O so every storage backend computes the
same hashes and ``verify_chain`` can check records from any source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shared.models import AuditRecord, canonical_json

GENESIS_HASH = "0" * 64


def record_hash(prev_hash: str, seq: int, chain: str, fields: dict[str, Any]) -> str:
    body = canonical_json({"prev_hash": prev_hash, "seq": seq, "chain": chain, **fields})
    return hashlib.sha256(body).hexdigest()


def hashed_fields(record: AuditRecord) -> dict[str, Any]:
    return {
        "time": record.time,
        "tenant_id": record.tenant_id,
        "actor": record.actor,
        "action": record.action,
        "resource": record.resource,
        "result": record.result,
        "request_id": record.request_id,
        "metadata": record.metadata,
    }


@dataclass(frozen=True, slots=True)
class ChainReport:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "first_bad_seq": self.first_bad_seq,
            "reason": self.reason,
        }


class ChainVerifier:
    """Feeds records in stored order; stops at the first one that doesn't fit."""

    def __init__(self) -> None:
        self.prev_hash = GENESIS_HASH
        self.expected_seq = 1
        self.checked = 0
        self.failure: ChainReport | None = None

    def feed(self, records: Iterable[AuditRecord]) -> bool:
        """Check a batch; False once a bad record was found."""
        for record in records:
            if self.failure is not None:
                return False
            self.failure = self._check(record)
            if self.failure is not None:
                return False
            self.prev_hash = record.hash
            self.expected_seq += 1
            self.checked += 1
        return self.failure is None

    def _check(self, record: AuditRecord) -> ChainReport | None:
        def bad(reason: str) -> ChainReport:
            return ChainReport(False, self.checked, record.seq, reason)

        if record.seq != self.expected_seq:
            return bad(
                f"expected record {self.expected_seq} but found {record.seq}: "
                "a record was deleted or the records were reordered"
            )
        if record.prev_hash != self.prev_hash:
            return bad("prev_hash does not match the hash of the record before it")
        if record_hash(record.prev_hash, record.seq, record.chain, hashed_fields(record)) != record.hash:
            return bad("record content does not match its hash: the record was edited")
        return None

    def report(self) -> ChainReport:
        return self.failure or ChainReport(True, self.checked)

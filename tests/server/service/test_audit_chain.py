"""Verification of the audit hash chain, on records built in memory."""

from dataclasses import replace

from server.audit_chain import GENESIS_HASH, ChainVerifier, hashed_fields, record_hash
from shared.models import AuditRecord


def chain(n: int) -> list[AuditRecord]:
    out, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        rec = AuditRecord(
            seq,
            "c",
            f"2026-01-01T00:00:0{seq}Z",
            "t",
            "token:x",
            "config:put",
            f"config/{seq}",
            "ok",
            "r",
            {"i": seq},
            prev,
            "",
        )
        rec = replace(rec, hash=record_hash(prev, seq, "c", hashed_fields(rec)))
        out.append(rec)
        prev = rec.hash
    return out


def verify(records: list[AuditRecord]) -> tuple[bool, int | None]:
    v = ChainVerifier()
    v.feed(records)
    report = v.report()
    return report.ok, report.first_bad_seq


class TestChainVerifier:
    def test_intact_chain_verifies(self) -> None:
        """An untouched chain is ok."""
        assert verify(chain(5)) == (True, None)

    def test_edited_record_is_named(self) -> None:
        """Changing a field of record 3 makes record 3 the first bad one."""
        records = chain(5)
        records[2] = replace(records[2], metadata={"i": 99})
        assert verify(records) == (False, 3)

    def test_deleted_record_is_named(self) -> None:
        """Removing record 3 makes the record found in its place the first bad one."""
        records = chain(5)
        del records[2]
        assert verify(records) == (False, 4)

    def test_reordered_records_are_detected(self) -> None:
        """Swapping two records (with their seq numbers) breaks the chain at the first of them."""
        records = chain(5)
        records[1], records[2] = replace(records[2], seq=2), replace(records[1], seq=3)
        assert verify(records) == (False, 2)

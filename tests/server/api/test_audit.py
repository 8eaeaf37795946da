"""The audit log over REST: what gets recorded, that it verifies, that it holds no secret,
and that tampering with the stored chain is detected."""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

import pytest

from tests.server.api.conftest import MakeToken
from tests.server.api.helpers import audit_records, cfg, last_seq, ok, problem, token
from tests.support import Http, ServerProcess

Operation = Callable[[Http, Any], None]


def _put(http: Http, _: Any) -> None:
    ok(http.put(cfg("aud", "k", "staging"), {"value": {"n": 9}}))


def _delete(http: Http, _: Any) -> None:
    ok(http.delete(cfg("aud", "k", "staging")))


def _rollback(http: Http, _: Any) -> None:
    ok(http.post("/v1/configs/aud/k/rollback?env=staging", {"version": 1}))


def _settings(http: Http, _: Any) -> None:
    ok(http.put("/v1/settings", {"audit_reads": False}))


def _schema(http: Http, _: Any) -> None:
    ok(http.put("/v1/schemas/aud-schema", {"schema": {"type": "object"}}))


def _bind(http: Http, _: Any) -> None:
    ok(http.post("/v1/schema-bindings", {"schema": "prompt-template", "namespace": "prompts"}), 201)


def _unbind(http: Http, binding_id: Any) -> None:
    assert http.delete(f"/v1/schema-bindings/{binding_id}").status == 204


def _token_create(http: Http, _: Any) -> None:
    token(http, "aud-token", ["developer"])


def _token_revoke(http: Http, token_id: Any) -> None:
    ok(http.delete(f"/v1/tokens/{token_id}"))


WRITES: dict[str, tuple[Operation, str, str]] = {
    "config-put": (_put, "config:put", "config/aud/k@staging"),
    "config-delete": (_delete, "config:delete", "config/aud/k@staging"),
    "config-rollback": (_rollback, "config:rollback", "config/aud/k@staging"),
    "settings": (_settings, "settings:write", "settings"),
    "schema-put": (_schema, "schema:put", "schema/aud-schema"),
    "schema-bind": (_bind, "schema:bind", "schema-binding/"),
    "schema-unbind": (_unbind, "schema:unbind", "schema-binding/"),
    "token-create": (_token_create, "token:create", "token/"),
    "token-revoke": (_token_revoke, "token:revoke", "token/"),
}


class TestRecorded:
    """Every write, every denial and every token operation appends a record."""

    @pytest.fixture
    def prepared(self, tadmin: Http) -> dict[str, Any]:
        """An entry aud/k (staging), a binding and a spare token to act on."""
        ok(tadmin.put(cfg("aud", "k", "staging"), {"value": {"n": 1}}), 201)
        binding = ok(tadmin.post("/v1/schema-bindings", {"schema": "model-endpoint", "namespace": "m"}), 201)
        spare = token(tadmin, "spare", ["developer"])
        return {"schema-unbind": binding["id"], "token-revoke": spare["id"]}

    @pytest.mark.parametrize("name", WRITES)
    def test_write_appends_one_record(self, tadmin: Http, prepared: dict[str, Any], name: str) -> None:
        """The operation appends exactly one ok record with its action, resource, actor and request id."""
        operation, action, resource = WRITES[name]
        before = last_seq(tadmin)
        operation(tadmin, prepared.get(name))
        new = audit_records(tadmin, after=before)
        assert [(r["action"], r["result"]) for r in new] == [(action, "ok")]
        assert new[0]["resource"].startswith(resource)
        assert new[0]["actor"] == f"token:{ok(tadmin.get('/v1/whoami'))['token_id']}"
        assert new[0]["request_id"] and new[0]["time"]

    def test_config_write_records_version(self, tadmin: Http) -> None:
        """A config write's record names the version and revision, and nothing derived from the value."""
        out = ok(tadmin.put(cfg("aud", "k"), {"value": {"n": 1}}), 201)
        record = audit_records(tadmin, action="config:put")[-1]
        assert record["metadata"]["version"] == 1
        assert record["metadata"]["revision"] == out["revision"]
        assert out["sha256"] not in str(record)  # an unsalted hash would confirm guesses of the value

    def test_unchanged_write_is_recorded(self, tadmin: Http) -> None:
        """A no-op write still leaves a record, with result unchanged."""
        ok(tadmin.put(cfg("aud", "k"), {"value": {"n": 1}}), 201)
        before = last_seq(tadmin)
        ok(tadmin.put(cfg("aud", "k"), {"value": {"n": 1}}))
        assert [r["result"] for r in audit_records(tadmin, after=before)] == ["unchanged"]

    def test_request_id_links_record(self, tadmin: Http) -> None:
        """The X-Request-Id of the request is the request_id of its record."""
        ok(tadmin.put(cfg("aud", "k"), {"value": {"n": 1}}, headers={"X-Request-Id": "trace-77"}), 201)
        assert audit_records(tadmin)[-1]["request_id"] == "trace-77"

    def test_denial_appends_record(self, tadmin: Http, make_token: MakeToken) -> None:
        """A denied request appends one record with result denied."""
        dev, _ = make_token(["developer"])
        before = last_seq(tadmin)
        problem(dev.put(cfg("aud", "k", "production"), {"value": {"n": 1}}), 403)
        assert [(r["action"], r["result"]) for r in audit_records(tadmin, after=before)] == [
            ("config:write", "denied")
        ]

    @pytest.mark.parametrize("how", ["revoked", "expired"])
    def test_refused_token_use_is_recorded(self, tadmin: Http, make_token: MakeToken, how: str) -> None:
        """Using a revoked or expired token leaves an auth record on the token's tenant chain."""
        client, record = make_token(["developer"], **({"expires_in": 1} if how == "expired" else {}))
        if how == "revoked":
            ok(tadmin.delete(f"/v1/tokens/{record['id']}"))
        else:
            time.sleep(1.5)
        before = last_seq(tadmin)
        problem(client.get("/v1/whoami"), 401)
        new = audit_records(tadmin, after=before)
        assert [(r["action"], r["result"], r["actor"]) for r in new] == [
            ("auth", "denied", f"token:{record['id']}")
        ]
        assert how in new[0]["metadata"]["reason"]

    def test_unknown_token_is_recorded_on_system_chain(self, server: ServerProcess, admin: Http) -> None:
        """An unknown token is recorded on the _system chain, which the global-admin can read."""
        before = audit_records(admin, chain="_system")
        problem(server.http("lcm_unknown-token-for-audit").get("/v1/whoami"), 401)
        after = audit_records(admin, chain="_system", after=before[-1]["seq"] if before else 0)
        assert [(r["action"], r["result"]) for r in after] == [("auth", "denied")]

    def test_audit_reads_records_every_read(self, tadmin: Http) -> None:
        """With settings audit_reads on, each read (repeated ones too) appends a config:read record."""
        ok(tadmin.put(cfg("aud", "k"), {"value": {"n": 1}}), 201)
        ok(tadmin.get(cfg("aud", "k")))
        ok(tadmin.put("/v1/settings", {"audit_reads": True}))
        before = last_seq(tadmin)
        for _ in range(3):
            ok(tadmin.get(cfg("aud", "k")))
        assert [r["action"] for r in audit_records(tadmin, after=before)] == ["config:read"] * 3

    def test_filters(self, tadmin: Http) -> None:
        """?action= and ?result= select records."""
        ok(tadmin.put(cfg("aud", "k"), {"value": {"n": 1}}), 201)
        token(tadmin, "t", ["developer"])
        assert {r["action"] for r in audit_records(tadmin, action="token:create")} == {"token:create"}
        assert {r["result"] for r in audit_records(tadmin, result="ok")} == {"ok"}

    def test_records_are_consecutive(self, tadmin: Http) -> None:
        """Sequence numbers run 1, 2, 3 … with each prev_hash the hash before it."""
        for n in range(3):
            assert tadmin.put(cfg("aud", "k"), {"value": {"n": n}}).status in (200, 201)
        records = audit_records(tadmin)
        assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
        assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(records))


class TestVerify:
    """GET /v1/audit/verify on an untouched log."""

    def test_verify_ok_after_activity(self, tadmin: Http, make_token: MakeToken) -> None:
        """After writes, denials and token operations the chain verifies."""
        dev, record = make_token(["developer"])
        ok(tadmin.put(cfg("v", "k"), {"value": {"a": 1}}), 201)
        problem(dev.put(cfg("v", "k", "production"), {"value": {"a": 1}}), 403)
        ok(tadmin.delete(f"/v1/tokens/{record['id']}"))
        problem(dev.get("/v1/whoami"), 401)
        report = ok(tadmin.get("/v1/audit/verify"))
        assert (report["ok"], report["first_bad_seq"]) == (True, None)
        assert report["checked"] == len(audit_records(tadmin))

    def test_developer_cannot_read_audit(self, make_token: MakeToken) -> None:
        """Audit reading needs a role that grants it."""
        dev, _ = make_token(["developer"])
        problem(dev.get("/v1/audit/verify"), 403)


class TestNoSecrets:
    """No audit record, and no log line, contains a token secret."""

    def test_no_token_in_any_record(
        self, server: ServerProcess, admin: Http, tenant: dict[str, str], tadmin: Http, make_token: MakeToken
    ) -> None:
        """Every token created here (used, revoked, refused) is absent from every chain and the DB."""
        secrets = [server.token, tenant["token"]]
        for roles, extra in (
            (["developer"], {}),
            (["operator"], {"expires_in": 3600}),
            (["service-account"], {}),
        ):
            client, record = make_token(roles, ["a"] if roles == ["service-account"] else None, **extra)
            secrets.append(client.token or "")
            ok(client.get("/v1/whoami"))
            problem(client.post("/v1/tenants", {"name": "nope"}), 403)
            ok(tadmin.delete(f"/v1/tokens/{record['id']}"))
            problem(client.get("/v1/whoami"), 401)
        bogus = "lcm_thisIsNotARealTokenButStillASecret000000000"
        secrets.append(bogus)
        problem(server.http(bogus).get("/v1/whoami"), 401)
        chains = ["_system", *(t["id"] for t in ok(admin.get("/v1/tenants"))["tenants"])]
        dumped = json.dumps([audit_records(admin, chain=c) for c in chains])
        assert [s for s in secrets if s in dumped] == []
        with closing(sqlite3.connect(f"file:{server.data_dir / 'llmcm.db'}?mode=ro", uri=True)) as db:
            raw = json.dumps(db.execute("SELECT * FROM audit_log").fetchall())
        assert "lcm_" not in raw

    def test_no_token_in_server_log(
        self, server: ServerProcess, tenant: dict[str, str], make_token: MakeToken
    ) -> None:
        """The server's log never contains a token secret."""
        client, _ = make_token(["developer"])
        problem(client.put(cfg("sec", "k", "production"), {"value": {"a": 1}}), 403)
        problem(server.http("lcm_bogus-for-log").get("/v1/whoami"), 401)
        log = server.log_path.read_text()
        assert [s for s in (server.token, tenant["token"], client.token or "", "lcm_bogus") if s in log] == []


# -- tampering with the stored chain -----------------------------------------------------------------


@pytest.fixture
def tampered(
    fresh_server: ServerProcess,
) -> Callable[[Callable[[sqlite3.Connection, str], None]], Any]:
    """A server with records 1..6 on the admin's chain; tamper(fn) stops it, runs fn on the DB, restarts."""
    admin = fresh_server.admin
    for n in range(5):
        ok(admin.put(cfg("tamper", f"k{n}"), {"value": {"n": n}}), 201)
    assert [r["seq"] for r in audit_records(admin)] == [1, 2, 3, 4, 5, 6]
    assert ok(admin.get("/v1/audit/verify"))["ok"] is True

    def tamper(edit: Callable[[sqlite3.Connection, str], None]) -> Any:
        fresh_server.stop()
        with closing(sqlite3.connect(fresh_server.data_dir / "llmcm.db")) as db:
            edit(db, fresh_server.tenant_id)
            db.commit()
        fresh_server.start()
        return ok(fresh_server.admin.get("/v1/audit/verify"))

    return tamper


class TestTamper:
    """Editing the SQLite file behind the server's back is detected at the first bad record."""

    def test_untouched_restart_verifies(self, tampered: Callable[..., Any]) -> None:
        """A stop and start without edits still verifies (the control for the cases below)."""
        report = tampered(lambda db, chain: None)
        assert (report["ok"], report["checked"]) == (True, 6)

    def test_edited_metadata(self, tampered: Callable[..., Any]) -> None:
        """Changing one record's metadata names that record."""

        def edit(db: sqlite3.Connection, chain: str) -> None:
            db.execute(
                "UPDATE audit_log SET metadata = ? WHERE chain = ? AND seq = 3",
                (json.dumps({"version": 99}), chain),
            )

        report = tampered(edit)
        assert (report["ok"], report["first_bad_seq"]) == (False, 3)

    def test_edited_result(self, tampered: Callable[..., Any]) -> None:
        """Changing one record's result column names that record."""

        def edit(db: sqlite3.Connection, chain: str) -> None:
            db.execute("UPDATE audit_log SET result = 'denied' WHERE chain = ? AND seq = 4", (chain,))

        report = tampered(edit)
        assert (report["ok"], report["first_bad_seq"]) == (False, 4)

    def test_deleted_middle_record(self, tampered: Callable[..., Any]) -> None:
        """Deleting record 3 is found where the gap is (3 missing, 4 out of place)."""

        def edit(db: sqlite3.Connection, chain: str) -> None:
            db.execute("DELETE FROM audit_log WHERE chain = ? AND seq = 3", (chain,))

        report = tampered(edit)
        assert report["ok"] is False
        assert report["first_bad_seq"] in (3, 4)
        assert report["checked"] == 2

    def test_swapped_seq(self, tampered: Callable[..., Any]) -> None:
        """Swapping the seq numbers of records 2 and 5 names record 2."""

        def edit(db: sqlite3.Connection, chain: str) -> None:
            db.execute("UPDATE audit_log SET seq = -1 WHERE chain = ? AND seq = 2", (chain,))
            db.execute("UPDATE audit_log SET seq = 2 WHERE chain = ? AND seq = 5", (chain,))
            db.execute("UPDATE audit_log SET seq = 5 WHERE chain = ? AND seq = -1", (chain,))

        report = tampered(edit)
        assert (report["ok"], report["first_bad_seq"]) == (False, 2)

    def test_deleted_last_record(self, tampered: Callable[..., Any]) -> None:
        """Deleting the newest record is caught by the chain head and names record 6."""

        def edit(db: sqlite3.Connection, chain: str) -> None:
            db.execute("DELETE FROM audit_log WHERE chain = ? AND seq = 6", (chain,))

        report = tampered(edit)
        assert (report["ok"], report["first_bad_seq"]) == (False, 6)

    def test_deleted_last_record_and_head(self, tampered: Callable[..., Any]) -> None:
        """Deleting the newest record and rewinding the head's seq alone still fails on the head hash."""

        def edit(db: sqlite3.Connection, chain: str) -> None:
            db.execute("DELETE FROM audit_log WHERE chain = ? AND seq = 6", (chain,))
            db.execute("UPDATE chains SET audit_seq = 5 WHERE id = ?", (chain,))

        report = tampered(edit)
        assert report["ok"] is False

    def test_rehashed_edit_breaks_next_link(self, tampered: Callable[..., Any]) -> None:
        """Editing record 3 and recomputing its own hash is still caught, at record 4's prev_hash."""

        def edit(db: sqlite3.Connection, chain: str) -> None:
            from server.audit_chain import record_hash

            row = db.execute(
                "SELECT time, tenant_id, actor, action, resource, result, request_id, metadata, "
                "prev_hash FROM audit_log WHERE chain = ? AND seq = 3",
                (chain,),
            ).fetchone()
            fields = dict(
                zip(
                    ("time", "tenant_id", "actor", "action", "resource", "result", "request_id"),
                    row[:7],
                    strict=True,
                )
            )
            fields["metadata"] = {"forged": True}
            digest = record_hash(row[8], 3, chain, fields)
            db.execute(
                "UPDATE audit_log SET metadata = ?, hash = ? WHERE chain = ? AND seq = 3",
                (json.dumps({"forged": True}), digest, chain),
            )

        report = tampered(edit)
        assert (report["ok"], report["first_bad_seq"]) == (False, 4)

"""The fixture itself: a server starts, answers health and serves a written config."""

from tests.support import Http, ServerProcess


def test_ready_and_roundtrip(server: ServerProcess, admin: Http) -> None:
    """A value written with PUT comes back unchanged from GET."""
    assert server.http().get("/health/live").status == 200
    reply = admin.put("/v1/configs/smoke/one/k?env=global", {"value": {"a": 1}})
    assert reply.status == 201
    got = admin.get("/v1/configs/smoke/one/k?env=global")
    assert got.status == 200
    assert got.json["value"] == {"a": 1}

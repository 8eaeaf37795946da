"""``shared.sdk.events``: wire objects become typed events, and malformed ones a ProtocolError."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import ProtocolError
from shared.sdk.events import Change, Progress, SecretRef, Snapshot, event_from_dict

PUT: dict[str, Any] = {
    "type": "put",
    "revision": 12,
    "namespace": "llm/routing",
    "key": "model",
    "environment": "production",
    "value": {"model": "a", "api_key": {"secret_ref": "keys/a"}},
    "sha256": "ab" * 32,
    "secret_refs": [{"field_path": "/api_key", "secret_ref": "keys/a", "version": 3}],
}


class TestEventFromDict:
    def test_put(self) -> None:
        """A put becomes a frozen Change whose to_dict is the wire object again."""
        change = event_from_dict(PUT)
        assert isinstance(change, Change)
        assert change.secret_refs == (SecretRef("/api_key", "keys/a", 3),)
        assert not change.deleted
        assert change.to_dict() == PUT
        with pytest.raises(AttributeError):
            change.revision = 13  # type: ignore[misc]

    def test_delete_progress_snapshot(self) -> None:
        """delete has no value; progress and snapshot are their own types."""
        delete = event_from_dict({**PUT, "type": "delete", "value": None, "sha256": ""})
        assert isinstance(delete, Change) and delete.deleted and delete.value is None
        assert event_from_dict({"type": "progress", "revision": 40}) == Progress(40)
        snapshot = event_from_dict({"type": "snapshot", "revision": 41, "items": [PUT]})
        assert isinstance(snapshot, Snapshot)
        assert snapshot.items == (event_from_dict(PUT),)

    @pytest.mark.parametrize(
        "raw",
        [
            [],
            {"type": "progress"},
            {"type": "progress", "revision": -1},
            {"type": "progress", "revision": True},
            {**PUT, "type": "patch"},
            {**PUT, "value": None},
            {**PUT, "namespace": 5},
            {**PUT, "secret_refs": "keys/a"},
            {**PUT, "secret_refs": [{"field_path": "/a", "secret_ref": "k", "version": "3"}]},
            {"type": "snapshot", "revision": 1, "items": [1]},
        ],
    )
    def test_malformed(self, raw: Any) -> None:
        """Anything off-shape is a ProtocolError naming the problem."""
        with pytest.raises(ProtocolError, match="malformed watch event"):
            event_from_dict(raw)

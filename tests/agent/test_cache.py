"""The encrypted offline cache: round trips, the key file, and every way a sealed entry is refused."""

from __future__ import annotations

import base64
import os
import pickle
import sqlite3
import stat
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.cache import MANIFEST, TABLE, Cache, load_or_create_key, parse_key
from agent.errors import CacheError
from shared.errors import InvalidInput

SECRET = "sk-ant-very-secret-value"


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def cache(tmp_path: Path, key: bytes) -> Iterator[Cache]:
    with Cache(tmp_path / "cache" / "agent.db", key) as c:
        yield c


def raw_rows(path: Path) -> dict[str, bytes]:
    with sqlite3.connect(path) as db:
        return {k: v for k, v in db.execute(f'SELECT key, value FROM "{TABLE}"')}


def set_raw(path: Path, name: str, value: object) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute(f'REPLACE INTO "{TABLE}" (key, value) VALUES (?, ?)', (name, value))
        db.commit()
    finally:
        db.close()


def refused(logs: Sequence[MutableMapping[str, Any]], name: str) -> bool:
    return any(e["event"] == "cache_entry_refused" and e["name"] == name for e in logs)


class TestRoundTrip:
    def test_put_get(self, cache: Cache) -> None:
        """A value comes back exactly as stored; an absent name is None."""
        cache.put("llm/routing/primary", {"model": "m", "n": [1, 2.5, None, True]})
        assert cache.get("llm/routing/primary") == {"model": "m", "n": [1, 2.5, None, True]}
        assert cache.get("absent") is None
        assert cache.names() == ["llm/routing/primary"]

    def test_persists_across_reopen(self, tmp_path: Path, key: bytes) -> None:
        """A new Cache on the same file and key reads what the previous one saved."""
        path = tmp_path / "c.db"
        with Cache(path, key) as c:
            c.save_snapshot({"a/k": {"v": 1}, "b/k": {"v": 2}}, revision=17)
        with Cache(path, key) as c:
            snap = c.load_snapshot()
            assert c.revision() == 17
        assert snap is not None and snap.revision == 17
        assert snap.entries == {"a/k": {"v": 1}, "b/k": {"v": 2}}

    def test_snapshot_replaces_previous(self, cache: Cache) -> None:
        """A snapshot drops names that are no longer in the set."""
        cache.save_snapshot({"a": 1, "b": 2}, revision=1)
        cache.save_snapshot({"b": 3}, revision=2)
        snap = cache.load_snapshot()
        assert snap is not None and snap.entries == {"b": 3} and snap.revision == 2
        assert cache.names() == ["b"]

    def test_no_snapshot_yet(self, cache: Cache) -> None:
        """An empty cache has no snapshot and no revision."""
        assert cache.load_snapshot() is None and cache.revision() is None

    def test_file_is_private_and_holds_no_plaintext(self, tmp_path: Path, cache: Cache) -> None:
        """The cache file is 0600 and the secret value does not appear in it."""
        cache.save_snapshot({"api-keys/anthropic": {"value": SECRET}}, revision=3)
        cache.close()
        path = tmp_path / "cache" / "agent.db"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert SECRET.encode() not in path.read_bytes()

    def test_reserved_and_bad_names(self, cache: Cache) -> None:
        """Names starting with '..' (the manifest's) and empty names are refused."""
        for name in (MANIFEST, "..x", ""):
            with pytest.raises(InvalidInput, match="cache entry name"):
                cache.put(name, 1)

    def test_close_twice_and_use_after_close(self, tmp_path: Path, key: bytes) -> None:
        """close() is safe twice; using a closed cache is a clear error."""
        c = Cache(tmp_path / "c.db", key).open()
        c.close()
        c.close()
        with pytest.raises(CacheError, match="not open"):
            c.put("a", 1)

    def test_corrupt_file_is_moved_aside(self, tmp_path: Path, key: bytes) -> None:
        """A file that is not a database is moved aside and an empty cache takes its place."""
        path = tmp_path / "c.db"
        path.write_bytes(b"not sqlite at all" * 100)
        with Cache(path, key) as c:
            assert c.load_snapshot() is None
            c.put("a", 1)
            assert c.get("a") == 1
        assert (tmp_path / "c.db.corrupt").exists()


class TestRefusals:
    def test_tampered_entry(self, tmp_path: Path, cache: Cache) -> None:
        """One flipped bit in the ciphertext: refused, logged, None."""
        cache.put("a", {"v": SECRET})
        path = tmp_path / "cache" / "agent.db"
        blob = bytearray(raw_rows(path)["a"])
        blob[20] ^= 0x01
        set_raw(path, "a", bytes(blob))
        with capture_logs() as logs:
            assert cache.get("a") is None
        assert refused(logs, "a")
        assert SECRET not in repr(logs)

    def test_truncated_entry(self, tmp_path: Path, cache: Cache) -> None:
        """A shortened blob, and one shorter than a nonce and tag, are refused."""
        cache.put("a", {"v": 1})
        path = tmp_path / "cache" / "agent.db"
        blob = raw_rows(path)["a"]
        for cut in (blob[:-1], blob[:10]):
            set_raw(path, "a", cut)
            with capture_logs() as logs:
                assert cache.get("a") is None
            assert refused(logs, "a")

    def test_entry_from_another_key(self, tmp_path: Path, cache: Cache) -> None:
        """An entry sealed under another key (a foreign cache file) is refused."""
        other = tmp_path / "other.db"
        with Cache(other, os.urandom(32)) as foreign:
            foreign.put("a", {"v": "attacker"})
        set_raw(tmp_path / "cache" / "agent.db", "a", raw_rows(other)["a"])
        with capture_logs() as logs:
            assert cache.get("a") is None
        assert refused(logs, "a")

    def test_whole_file_with_another_key(self, tmp_path: Path) -> None:
        """A cache opened with a different key returns no snapshot at all."""
        path = tmp_path / "c.db"
        with Cache(path, os.urandom(32)) as c:
            c.save_snapshot({"a": 1}, revision=5)
        with Cache(path, os.urandom(32)) as c, capture_logs() as logs:
            assert c.load_snapshot() is None and c.revision() is None
        assert refused(logs, MANIFEST)

    def test_entry_moved_to_another_name(self, tmp_path: Path, cache: Cache) -> None:
        """A valid blob copied under another entry's name does not open there (name is AAD)."""
        cache.put("prod/db", {"host": "prod"})
        cache.put("dev/db", {"host": "dev"})
        path = tmp_path / "cache" / "agent.db"
        set_raw(path, "prod/db", raw_rows(path)["dev/db"])
        with capture_logs() as logs:
            assert cache.get("prod/db") is None
        assert refused(logs, "prod/db")
        assert cache.get("dev/db") == {"host": "dev"}

    def test_text_instead_of_blob(self, tmp_path: Path, cache: Cache) -> None:
        """A row holding text rather than a sealed blob is refused."""
        set_raw(tmp_path / "cache" / "agent.db", "a", '{"v": 1}')
        with capture_logs() as logs:
            assert cache.get("a") is None
        assert refused(logs, "a")

    def test_pickle_payload_is_never_unpickled(self, tmp_path: Path, cache: Cache) -> None:
        """A planted pickle that would run code is treated as a bad ciphertext; nothing runs."""
        marker = tmp_path / "pwned"

        class Exploit:
            def __reduce__(self) -> tuple[object, tuple[str]]:
                return (os.system, (f"touch {marker}",))

        set_raw(tmp_path / "cache" / "agent.db", "a", pickle.dumps(Exploit()))
        assert cache.get("a") is None
        assert cache.load_snapshot() is None
        assert not marker.exists()

    def test_snapshot_with_a_tampered_entry_is_refused_whole(self, tmp_path: Path, cache: Cache) -> None:
        """One bad entry makes the whole snapshot unusable: the agent acts as if it had no cache."""
        cache.save_snapshot({"a": 1, "b": 2}, revision=4)
        path = tmp_path / "cache" / "agent.db"
        blob = bytearray(raw_rows(path)["b"])
        blob[-1] ^= 0x80
        set_raw(path, "b", bytes(blob))
        with capture_logs() as logs:
            assert cache.load_snapshot() is None
        assert refused(logs, "b")

    def test_snapshot_with_a_deleted_entry_is_refused(self, tmp_path: Path, cache: Cache) -> None:
        """An entry removed from the file behind the manifest's back: no snapshot."""
        cache.save_snapshot({"a": 1, "b": 2}, revision=4)
        path = tmp_path / "cache" / "agent.db"
        with sqlite3.connect(path) as db:
            db.execute(f'DELETE FROM "{TABLE}" WHERE key = ?', ("a",))
        assert cache.load_snapshot() is None

    def test_manifest_swapped_for_an_entry(self, tmp_path: Path, cache: Cache) -> None:
        """An entry's blob put in the manifest's place does not open as the manifest."""
        cache.save_snapshot({"a": {"revision": 99, "saved_at": 1, "names": []}}, revision=4)
        path = tmp_path / "cache" / "agent.db"
        set_raw(path, MANIFEST, raw_rows(path)["a"])
        with capture_logs() as logs:
            assert cache.load_snapshot() is None
        assert refused(logs, MANIFEST)


class TestKey:
    def test_created_when_absent(self, tmp_path: Path) -> None:
        """An absent key file is created: mode 0600, 32 random bytes base64, reused afterwards."""
        path = tmp_path / "keys" / "cache.key"
        key = load_or_create_key(path)
        assert len(key) == 32
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert base64.b64decode(path.read_text().strip()) == key
        assert load_or_create_key(path) == key

    def test_existing_key_file_is_used(self, tmp_path: Path) -> None:
        """A key made with `head -c 32 /dev/urandom | base64` is read as is."""
        raw = os.urandom(32)
        path = tmp_path / "k"
        path.write_text(base64.b64encode(raw).decode() + "\n")
        path.chmod(0o600)
        assert load_or_create_key(path) == raw

    @pytest.mark.parametrize(
        ("content", "expected"),
        [
            (base64.b64encode(b"x" * 16), "holds 16 bytes"),
            (b"not base64 at all!", "not base64"),
            (b"\xff\xfe", "not base64"),
        ],
    )
    def test_bad_key_file(self, tmp_path: Path, content: bytes, expected: str) -> None:
        """A key of the wrong size or not base64 is a clear error that does not print the key."""
        path = tmp_path / "k"
        path.write_bytes(content)
        with pytest.raises(InvalidInput, match=expected) as caught:
            load_or_create_key(path)
        assert "head -c 32 /dev/urandom | base64" in caught.value.detail
        assert content.decode(errors="replace") not in caught.value.detail

    def test_loose_key_file_mode_warns(self, tmp_path: Path) -> None:
        """A key file others can read is used, with a warning."""
        path = tmp_path / "k"
        path.write_text(base64.b64encode(os.urandom(32)).decode())
        path.chmod(0o644)
        with capture_logs() as logs:
            load_or_create_key(path)
        assert any(e["event"] == "cache_key_file_not_private" for e in logs)

    def test_env_key(self) -> None:
        """A key given inline (CACHE_KEY) is parsed with the same rules."""
        raw = os.urandom(32)
        assert parse_key(base64.b64encode(raw).decode(), "CACHE_KEY") == raw
        with pytest.raises(InvalidInput, match="CACHE_KEY holds 3 bytes"):
            parse_key(base64.b64encode(b"abc").decode(), "CACHE_KEY")

    def test_wrong_key_size_for_cache(self, tmp_path: Path) -> None:
        """A Cache refuses a key that is not 32 bytes."""
        with pytest.raises(InvalidInput, match="32 bytes"):
            Cache(tmp_path / "c.db", b"short")

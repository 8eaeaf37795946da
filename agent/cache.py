"""The encrypted offline cache: the last applied set, so an agent can start while the server is down.

Entries live in one ``sqlitedict`` table at CACHE_PATH (file mode 0600). Every
value is canonical JSON sealed with AES-256-GCM (``shared.crypto``) under the
cache key, with the entry's name in the associated data, so a value that was
edited, truncated, written under another key, or moved to another entry's name
does not open. Such an entry is refused: a warning is logged and ``None`` comes
back; it is never handed to the app. Values are stored as raw bytes, never
pickled (sqlitedict's default), so a planted cache file cannot run code.

A snapshot (``save_snapshot``) replaces the whole cache in one transaction and
records a sealed manifest: the applied revision, when it was saved, and the names
it holds. ``load_snapshot`` returns it only if the manifest and every entry it
lists open; otherwise the agent behaves as if it had no cache.

The key is 32 random bytes, base64-encoded, from CACHE_KEY (env) or the file
CACHE_KEY_FILE, which is created with mode 0600 when absent (as
``head -c 32 /dev/urandom | base64`` would make it). The API is synchronous
(SQLite and a key file); the core loop calls it in a thread.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
from sqlitedict import SqliteDict

from agent.errors import CacheError
from shared.crypto import KEY_BYTES, DecryptionFailed, aad_for, b64, new_key, open_sealed, seal
from shared.errors import InvalidInput
from shared.models import canonical_json, parse_json

log = structlog.get_logger("agent.cache")

MANIFEST = "..manifest"
TABLE = "entries"
PURPOSE = "llmcm-agent-cache"


# ---- the key


def parse_key(text: str, source: str) -> bytes:
    """32 bytes from base64 ``text``; the error names ``source`` and the byte count, never the key."""
    try:
        key = base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise InvalidInput(
            f"{source} is not base64; it must hold 32 random bytes, base64-encoded "
            "(head -c 32 /dev/urandom | base64)"
        ) from None
    if len(key) != KEY_BYTES:
        raise InvalidInput(
            f"{source} holds {len(key)} bytes; it must hold {KEY_BYTES} random bytes, base64-encoded "
            "(head -c 32 /dev/urandom | base64)"
        )
    return key


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``; a new random key is written there (mode 0600) when it does not exist."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(4096)
            mode = os.fstat(fh.fileno()).st_mode
    except FileNotFoundError:
        return _create_key(path)
    except OSError as exc:
        raise CacheError(f"cannot read CACHE_KEY_FILE {path}: {exc.strerror}") from None
    if stat.S_IMODE(mode) & 0o077:
        log.warning("cache_key_file_not_private", path=str(path), mode=f"{stat.S_IMODE(mode):04o}")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        text = "!"  # not base64: parse_key says so
    return parse_key(text, f"CACHE_KEY_FILE {path}")


def _create_key(path: Path) -> bytes:
    key = new_key()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return load_or_create_key(path)  # another process made it first
    except OSError as exc:
        raise CacheError(f"cannot create CACHE_KEY_FILE {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (b64(key) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info("cache_key_created", path=str(path))
    return key


# ---- the cache


@dataclass(frozen=True, slots=True)
class Snapshot:
    revision: int
    saved_at: float  # Unix time of the save
    entries: dict[str, Any]


def _check_name(name: str) -> str:
    if not name or name.startswith("..") or len(name) > 1024:
        raise InvalidInput(f"cache entry name {name[:60]!r} is empty, too long or reserved ('..' prefix)")
    return name


class Cache:
    """``with Cache(path, key) as cache: ...``; ``close()`` is safe to call twice."""

    def __init__(self, path: Path, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise InvalidInput(f"the cache key must be {KEY_BYTES} bytes")
        self.path = Path(path)
        self._key = key
        self._db: SqliteDict | None = None

    # ---- lifecycle

    def open(self) -> Cache:
        if self._db is not None:
            return self
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError:
            aside = self.path.with_name(self.path.name + ".corrupt")
            log.warning("cache_unreadable_moved_aside", path=str(self.path), moved_to=str(aside))
            try:
                os.replace(self.path, aside)
                self._db = self._connect()
            except (OSError, sqlite3.DatabaseError) as exc:
                raise CacheError(f"cannot open the cache at {self.path}: {exc}") from None
        except OSError as exc:
            raise CacheError(f"cannot open the cache at {self.path}: {exc.strerror}") from None
        return self

    def _connect(self) -> SqliteDict:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        probe = sqlite3.connect(self.path)  # a non-database fails here, before sqlitedict's thread
        try:
            probe.execute("PRAGMA schema_version").fetchone()
        finally:
            probe.close()
        db = SqliteDict(
            str(self.path),
            tablename=TABLE,
            flag="c",
            autocommit=False,
            encode=_encode_blob,
            decode=_decode_blob,
            outer_stack=False,
        )
        return db

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def __enter__(self) -> Cache:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def _table(self) -> SqliteDict:
        if self._db is None:
            raise CacheError("the cache is not open")
        return self._db

    # ---- single entries

    def put(self, name: str, value: Any) -> None:
        """Seal and store ``value`` under ``name`` (committed)."""
        with self._sqlite_errors("write"):
            self._table[_check_name(name)] = self._seal(name, value)
            self._table.commit()

    def get(self, name: str) -> Any | None:
        """The value under ``name``; None when absent or refused (tampered, truncated, foreign)."""
        _check_name(name)
        return self._open(name)

    def delete(self, name: str) -> None:
        with self._sqlite_errors("write"):
            if _check_name(name) in self._table:
                del self._table[name]
                self._table.commit()

    def names(self) -> list[str]:
        with self._sqlite_errors("read"):
            return sorted(str(k) for k in self._table if k != MANIFEST)

    # ---- snapshots

    def save_snapshot(self, entries: Mapping[str, Any], revision: int) -> None:
        """Replace the cache with ``entries`` at ``revision`` in one transaction."""
        names = sorted(_check_name(name) for name in entries)
        manifest = {"revision": revision, "saved_at": time.time(), "names": names}
        with self._sqlite_errors("write"):
            table = self._table
            for old in [k for k in table if k != MANIFEST and k not in entries]:
                del table[old]
            for name in names:
                table[name] = self._seal(name, entries[name])
            table[MANIFEST] = self._seal(MANIFEST, manifest)
            table.commit()
        log.info("cache_saved", revision=revision, entries=len(names))

    def load_snapshot(self) -> Snapshot | None:
        """The saved snapshot if the manifest and every entry it lists open; else None (logged)."""
        manifest = self._open(MANIFEST)
        if manifest is None:
            return None
        revision, saved_at, names = manifest.get("revision"), manifest.get("saved_at"), manifest.get("names")
        if not (isinstance(revision, int) and isinstance(saved_at, int | float) and isinstance(names, list)):
            log.warning("cache_entry_refused", name=MANIFEST, reason="manifest has an unexpected shape")
            return None
        entries: dict[str, Any] = {}
        for name in names:
            value = self._open(str(name))
            if value is None:
                log.warning("cache_snapshot_refused", revision=revision, missing_or_refused=str(name))
                return None
            entries[str(name)] = value
        return Snapshot(revision=revision, saved_at=float(saved_at), entries=entries)

    def revision(self) -> int | None:
        """The revision of the saved snapshot (from its sealed manifest), or None."""
        manifest = self._open(MANIFEST)
        revision = manifest.get("revision") if isinstance(manifest, dict) else None
        return revision if isinstance(revision, int) else None

    # ---- sealing

    def _aad(self, name: str) -> bytes:
        return aad_for(purpose=PURPOSE, name=name)

    def _seal(self, name: str, value: Any) -> bytes:
        return seal(self._key, canonical_json(value), self._aad(name))

    def _open(self, name: str) -> Any | None:
        with self._sqlite_errors("read"):
            blob = self._table.get(name)
        if blob is None:
            return None
        if not isinstance(blob, bytes):
            log.warning("cache_entry_refused", name=name, reason="not a sealed value")
            return None
        try:
            plaintext = open_sealed(self._key, blob, self._aad(name), f"cache entry {name!r}")
            return parse_json(plaintext, f"cache entry {name!r}")
        except (DecryptionFailed, InvalidInput) as exc:
            log.warning("cache_entry_refused", name=name, reason=exc.detail)
            return None

    @contextlib.contextmanager
    def _sqlite_errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise CacheError(f"cannot {what} the cache at {self.path}: {exc}") from None


def _encode_blob(value: bytes) -> sqlite3.Binary:
    return sqlite3.Binary(value)


def _decode_blob(value: Any) -> Any:
    return bytes(value) if isinstance(value, bytes | memoryview) else value

"""Atomic file sets under CONFIG_DIR, swapped the way the kubelet swaps ConfigMap volumes.

    CONFIG_DIR/
      ..2026_11_26_07_30_00.123456789/    one complete set: the files, their directories, ..meta.json
      ..data -> ..2026_11_26_07_30_00.123456789
      llm-gateway -> ..data/llm-gateway     one symlink per top-level name
      nginx.conf -> ..data/nginx.conf
      ..lock                                held while a set is staged and swapped

A new set is written into a fresh timestamped directory (files and directories
fsynced), then a temporary symlink to it is renamed over ``..data`` (one atomic
rename), the visible top-level links are made, and the old directory is removed.
An app that opens several files through the visible names sees one set or the
next, never a mix and never a partial file. Content that did not change is not
rewritten (``Outcome.UNCHANGED``), so a sidecar starting after the init
container adopts the set it finds.

CONFIG_DIR is usually a volume the app can write too, so every operation walks
from a descriptor of CONFIG_DIR with ``dir_fd`` calls, ``O_NOFOLLOW`` and
``O_EXCL``: a symlink the app plants is never followed when writing or reading,
and names starting with ``..`` belong to the agent. Paths come only from
validated namespaces and keys (``FileSpec.for_entry``) or from names matching
``SEGMENT_RE``.

The API is synchronous (file-system calls); the core loop calls it in a thread.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import itertools
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import structlog

from agent.errors import FileSetError
from shared.errors import InvalidInput
from shared.models import validate_key, validate_namespace

log = structlog.get_logger("agent.fileset")
P = ParamSpec("P")
R = TypeVar("R")

DATA_LINK = "..data"
DATA_TMP = "..data_tmp"
LINK_TMP = "..link_tmp"
LOCK_NAME = "..lock"
META_NAME = "..meta.json"
META_FORMAT = 1
TIMESTAMPED_RE = re.compile(r"\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\d{9}", re.ASCII)
# One path segment of a managed file: no leading dot (so never "..", "." or a reserved "..name")
SEGMENT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}", re.ASCII)
SUFFIX_RE = re.compile(r"\.[a-z0-9]{1,16}", re.ASCII)
MAX_DEPTH = 64
MAX_FILES = 100_000
MAX_SET_BYTES = 512 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _os_errors(what: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Translate an ``OSError`` from a file-system step into ``FileSetError`` naming the step."""

    def wrap(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return func(*args, **kwargs)
            except OSError as exc:
                raise FileSetError(f"cannot {what}: {exc.strerror or exc}") from None

        return run

    return wrap


class Outcome(StrEnum):
    WRITTEN = "written"  # a new set was swapped in
    UNCHANGED = "unchanged"  # the applied set already had this content; nothing touched
    REPAIRED = "repaired"  # content unchanged, but missing or wrong visible links were restored


def check_relpath(path: str) -> str:
    """``path`` if it is a safe relative path of a managed file, else ``InvalidInput``."""
    segments = path.split("/")
    if len(path) > 4096 or len(segments) > MAX_DEPTH:
        raise InvalidInput(f"output path is too long or too deep ({len(path)} characters)")
    for segment in segments:
        if not SEGMENT_RE.fullmatch(segment):
            shown = path[:120].encode("unicode_escape").decode("ascii")
            raise InvalidInput(
                f"invalid output path {shown!r}: each segment must match {SEGMENT_RE.pattern} "
                "(no leading dot, no empty segment, no '..')"
            )
    return path


@dataclass(frozen=True, slots=True)
class FileSpec:
    """One file of a set: its path relative to CONFIG_DIR, its bytes, whether it holds secrets."""

    path: str
    content: bytes = field(repr=False)
    secret: bool = False

    def __post_init__(self) -> None:
        check_relpath(self.path)

    @classmethod
    def for_entry(
        cls, namespace: str, key: str, suffix: str, content: bytes, *, secret: bool = False
    ) -> FileSpec:
        """``<namespace>/<key><suffix>``, from a validated namespace and key."""
        validate_namespace(namespace)
        validate_key(key)
        if not SUFFIX_RE.fullmatch(suffix):
            raise InvalidInput(f"invalid file suffix {suffix[:20]!r}: use '.' and 1-16 of a-z, 0-9")
        return cls(f"{namespace}/{key}{suffix}", content, secret)


@dataclass(frozen=True, slots=True)
class AppliedFile:
    content: bytes = field(repr=False)
    mode: int
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class AppliedSet:
    """The set ``..data`` points at, read back without following any symlink inside it."""

    directory: str  # the timestamped directory's name
    revision: int | None
    files: Mapping[str, AppliedFile]
    drifted: tuple[str, ...]  # paths that differ from what the agent wrote (edited, added, removed)
    meta: Mapping[str, Any]

    def contents(self) -> dict[str, bytes]:
        return {path: f.content for path, f in self.files.items()}


@dataclass(frozen=True, slots=True)
class WriteResult:
    outcome: Outcome
    directory: str
    revision: int | None


class StagedSet:
    """A set written to its own directory but not yet visible; ``commit()`` swaps it in.

    ``path`` is the absolute directory (for ``--check-cmd '... {staged}/nginx.conf'``).
    When ``unchanged`` is true, ``path`` is the applied set itself and ``commit()`` only
    repairs the visible links. A set not committed is removed when the ``stage`` block ends.
    """

    def __init__(
        self,
        owner: FileSet,
        root_fd: int,
        name: str,
        top: frozenset[str],
        revision: int | None,
        unchanged: bool,
    ) -> None:
        self._fs = owner
        self._root_fd = root_fd
        self.name = name
        self.path = owner.root / name
        self._top = top
        self.revision = revision
        self.unchanged = unchanged
        self.committed: WriteResult | None = None
        self._open = True

    @_os_errors("swap in the staged set")
    def commit(self) -> WriteResult:
        if not self._open:
            raise FileSetError("a staged set can only be committed inside its stage() block")
        if self.committed is not None:
            return self.committed
        fs, fd = self._fs, self._root_fd
        if self.unchanged:
            repaired = fs._link_visible(fd, self._top)
            if repaired:
                os.fsync(fd)
            outcome = Outcome.REPAIRED if repaired else Outcome.UNCHANGED
            self.committed = WriteResult(outcome, self.name, self.revision)
            return self.committed
        fs._swap(fd, self.name)
        self.committed = WriteResult(Outcome.WRITTEN, self.name, self.revision)
        fs._link_visible(fd, self._top)
        os.fsync(fd)
        fs._remove_stale(fd, keep=self.name)
        log.info("fileset_written", directory=self.name, revision=self.revision)
        return self.committed


class FileSet:
    """The managed file sets under one output directory."""

    def __init__(
        self,
        root: Path,
        *,
        file_mode: int = 0o644,
        secret_mode: int = 0o600,
        dir_mode: int = 0o755,
        owner: tuple[int, int] | None = None,
        lock_timeout: float = 10.0,
    ) -> None:
        for name, mode in (("file_mode", file_mode), ("secret_mode", secret_mode), ("dir_mode", dir_mode)):
            if not 0 <= mode <= 0o777:
                raise InvalidInput(f"{name} {mode:o} is not a permission mode between 000 and 777")
        if dir_mode & 0o700 != 0o700:
            raise InvalidInput(
                f"dir_mode {dir_mode:03o} must give the owner rwx (the agent replaces the set)"
            )
        self.root = Path(root).absolute()
        self.file_mode = file_mode
        self.secret_mode = secret_mode
        self.dir_mode = dir_mode
        self.owner = owner
        self.lock_timeout = lock_timeout

    # ---- public operations

    def write(self, files: Iterable[FileSpec], revision: int | None = None) -> WriteResult:
        """Make ``files`` the applied set (atomically), or report that it already is."""
        with self.stage(files, revision) as staged:
            return staged.commit()

    @contextlib.contextmanager
    def stage(self, files: Iterable[FileSpec], revision: int | None = None) -> Iterator[StagedSet]:
        """Write ``files`` to a new hidden directory and yield it, holding the lock, for checks."""
        specs = _check_specs(files)
        top = frozenset(spec.path.split("/", 1)[0] for spec in specs)
        with self._root() as root_fd, self._locked(root_fd):
            current_name = self._current_name(root_fd)
            if current_name is not None:
                current = self._read_set(root_fd, current_name)
                if current is not None and self._same(specs, current):
                    staged = StagedSet(self, root_fd, current_name, top, revision, unchanged=True)
                    try:
                        yield staged
                    finally:
                        staged._open = False
                    return
            name = self._make_dir(root_fd)
            staged = StagedSet(self, root_fd, name, top, revision, unchanged=False)
            try:
                self._populate(root_fd, name, specs, revision)
                yield staged
            finally:
                staged._open = False
                if staged.committed is None:
                    self._remove_entry(root_fd, name)

    def current(self) -> AppliedSet | None:
        """The applied set, or None when nothing was applied yet (or ``..data`` is dangling)."""
        with self._root() as root_fd, self._locked(root_fd):
            name = self._current_name(root_fd)
            return None if name is None else self._read_set(root_fd, name)

    @_os_errors("clean up the output directory")
    def recover(self) -> list[str]:
        """Remove what an interrupted write left behind; returns the names removed.

        Timestamped directories that ``..data`` does not point at, temporary links, and
        visible links into ``..data`` whose target is gone. The app's own files are kept.
        """
        removed: list[str] = []
        with self._root() as root_fd, self._locked(root_fd):
            current = self._current_name(root_fd)
            for name in sorted(os.listdir(root_fd)):
                if name in (DATA_LINK, LOCK_NAME) or name == current:
                    continue
                if TIMESTAMPED_RE.fullmatch(name) or name in (DATA_TMP, LINK_TMP):
                    self._remove_entry(root_fd, name)
                    removed.append(name)
                elif not name.startswith("..") and self._is_dangling_visible(root_fd, name):
                    os.unlink(name, dir_fd=root_fd)
                    removed.append(name)
            if removed:
                os.fsync(root_fd)
                log.warning("fileset_recovered", removed=removed, current=current)
        return removed

    # ---- descriptors and locking

    @contextlib.contextmanager
    def _root(self) -> Iterator[int]:
        try:
            self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise FileSetError(f"cannot open output directory {self.root}: {exc.strerror}") from None
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self, root_fd: int) -> Iterator[None]:
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(LOCK_NAME, flags, 0o600, dir_fd=root_fd)
        except OSError as exc:
            raise FileSetError(
                f"cannot open the lock file {self.root / LOCK_NAME}: {exc.strerror} "
                "(names starting with '..' in the output directory belong to the agent)"
            ) from None
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise FileSetError(
                            f"another agent holds {self.root / LOCK_NAME} "
                            f"for more than {self.lock_timeout:g} s"
                        ) from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(fd)  # releases the lock

    # ---- reading

    def _current_name(self, root_fd: int) -> str | None:
        try:
            target = os.readlink(DATA_LINK, dir_fd=root_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise FileSetError(
                    f"{self.root / DATA_LINK} is not a symlink; names starting with '..' belong to the agent"
                ) from None
            raise FileSetError(f"cannot read {self.root / DATA_LINK}: {exc.strerror}") from None
        if not TIMESTAMPED_RE.fullmatch(target):
            # never followed; the next swap renames a link of ours over it
            log.warning("fileset_foreign_data_link", link=str(self.root / DATA_LINK))
            return None
        try:
            st = os.stat(target, dir_fd=root_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return target if stat.S_ISDIR(st.st_mode) else None

    @_os_errors("read the applied set")
    def _read_set(self, root_fd: int, name: str) -> AppliedSet | None:
        files: dict[str, AppliedFile] = {}
        odd: list[str] = []
        try:
            dir_fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
        except OSError:
            return None
        try:
            meta = _read_meta(dir_fd)
            self._read_tree(dir_fd, "", files, odd, depth=0, budget=[MAX_FILES, MAX_SET_BYTES])
        finally:
            os.close(dir_fd)
        recorded = meta.get("files")
        if not isinstance(recorded, dict):
            recorded = {}
        drifted = set(odd)
        for path, applied in files.items():
            want = recorded.get(path)
            if (
                not isinstance(want, dict)
                or want.get("sha256") != hashlib.sha256(applied.content).hexdigest()
                or want.get("mode") != f"{applied.mode:04o}"
            ):
                drifted.add(path)
        drifted.update(path for path in recorded if path not in files)
        revision = meta.get("revision")
        return AppliedSet(
            directory=name,
            revision=revision if isinstance(revision, int) and not isinstance(revision, bool) else None,
            files=files,
            drifted=tuple(sorted(drifted)),
            meta=meta,
        )

    def _read_tree(
        self,
        dir_fd: int,
        prefix: str,
        files: dict[str, AppliedFile],
        odd: list[str],
        *,
        depth: int,
        budget: list[int],
    ) -> None:
        for name in sorted(os.listdir(dir_fd)):
            if depth == 0 and name == META_NAME:
                continue
            path = prefix + name
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode) and depth < MAX_DEPTH:
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                except OSError:
                    odd.append(path)
                    continue
                try:
                    self._read_tree(sub, path + "/", files, odd, depth=depth + 1, budget=budget)
                finally:
                    os.close(sub)
            elif stat.S_ISREG(st.st_mode) and budget[0] > 0 and st.st_size <= budget[1]:
                try:
                    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
                    fd = os.open(name, flags, dir_fd=dir_fd)
                except OSError:
                    odd.append(path)
                    continue
                try:
                    fst = os.fstat(fd)
                    content = _read_all(fd, budget[1]) if stat.S_ISREG(fst.st_mode) else None
                finally:
                    os.close(fd)
                if content is None:
                    odd.append(path)
                    continue
                budget[0] -= 1
                budget[1] -= len(content)
                files[path] = AppliedFile(content, stat.S_IMODE(fst.st_mode), fst.st_uid, fst.st_gid)
            else:  # a symlink, device, fifo … planted inside the set, or over the limits
                odd.append(path)

    def _same(self, specs: list[FileSpec], current: AppliedSet) -> bool:
        if current.drifted or set(current.files) != {spec.path for spec in specs}:
            return False
        for spec in specs:
            applied = current.files[spec.path]
            if applied.content != spec.content or applied.mode != self._mode_of(spec):
                return False
            if self.owner is not None and (applied.uid, applied.gid) != self.owner:
                return False
        return True

    def _is_dangling_visible(self, root_fd: int, name: str) -> bool:
        try:
            target = os.readlink(name, dir_fd=root_fd)
        except OSError:
            return False  # not a symlink: the app's own file
        if target != f"{DATA_LINK}/{name}":
            return False
        try:
            os.stat(target, dir_fd=root_fd, follow_symlinks=False)
        except FileNotFoundError:
            return True
        return False

    # ---- writing

    def _mode_of(self, spec: FileSpec) -> int:
        return self.secret_mode if spec.secret else self.file_mode

    def _make_dir(self, root_fd: int) -> str:
        now = time.time_ns()
        for attempt in range(100):
            ns = now + attempt
            stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime(ns // 10**9))
            name = f"..{stamp}.{ns % 10**9:09d}"
            try:
                os.mkdir(name, 0o700, dir_fd=root_fd)
                return name
            except FileExistsError:
                continue
            except OSError as exc:
                raise FileSetError(f"cannot create a directory in {self.root}: {exc.strerror}") from None
        raise FileSetError(f"cannot create a new timestamped directory in {self.root}")

    def _populate(self, root_fd: int, name: str, specs: list[FileSpec], revision: int | None) -> None:
        dirs: dict[str, int] = {}
        try:
            dirs[""] = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
            recorded: dict[str, Any] = {}
            for spec in specs:
                parent, _, base = spec.path.rpartition("/")
                parent_fd = self._open_dirs(dirs, parent)
                mode = self._mode_of(spec)
                _write_file(parent_fd, base, spec.content, mode, self.owner)
                recorded[spec.path] = {
                    "sha256": hashlib.sha256(spec.content).hexdigest(),
                    "mode": f"{mode:04o}",
                    "secret": spec.secret,
                }
            meta = {
                "format": META_FORMAT,
                "revision": revision,
                "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": recorded,
            }
            _write_file(dirs[""], META_NAME, json.dumps(meta, sort_keys=True).encode() + b"\n", 0o600, None)
            for path in sorted(dirs, key=len, reverse=True):  # deepest first, the set's own dir last
                os.fchmod(dirs[path], self.dir_mode)
                if self.owner is not None:
                    os.fchown(dirs[path], *self.owner)
                os.fsync(dirs[path])
        except OSError as exc:
            raise FileSetError(f"cannot write the new set in {self.root / name}: {exc.strerror}") from None
        finally:
            for fd in dirs.values():
                os.close(fd)

    def _open_dirs(self, dirs: dict[str, int], path: str) -> int:
        if path in dirs:
            return dirs[path]
        parent, _, base = path.rpartition("/")
        parent_fd = self._open_dirs(dirs, parent)
        os.mkdir(base, 0o700, dir_fd=parent_fd)  # inside a directory this write just made: never exists
        dirs[path] = os.open(base, _DIR_FLAGS, dir_fd=parent_fd)
        return dirs[path]

    def _swap(self, root_fd: int, name: str) -> None:
        try:
            os.fsync(root_fd)  # the new directory's entry first
            self._remove_entry(root_fd, DATA_TMP)
            os.symlink(name, DATA_TMP, dir_fd=root_fd)
            os.replace(DATA_TMP, DATA_LINK, src_dir_fd=root_fd, dst_dir_fd=root_fd)
            os.fsync(root_fd)
        except OSError as exc:
            raise FileSetError(
                f"cannot swap {self.root / DATA_LINK} to the new set: {exc.strerror}"
            ) from None

    def _link_visible(self, root_fd: int, top: frozenset[str]) -> int:
        """Point each top-level name at ``..data/<name>``; drop links to names no longer in the set."""
        changed = 0
        for name in sorted(top):
            target = f"{DATA_LINK}/{name}"
            try:
                st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None and not stat.S_ISLNK(st.st_mode):
                raise FileSetError(
                    f"{self.root / name} is a real file or directory, not a link the agent made; "
                    "remove it so the agent can manage that name"
                )
            if st is not None and os.readlink(name, dir_fd=root_fd) == target:
                continue
            self._remove_entry(root_fd, LINK_TMP)
            os.symlink(target, LINK_TMP, dir_fd=root_fd)
            os.replace(LINK_TMP, name, src_dir_fd=root_fd, dst_dir_fd=root_fd)  # replaces the link itself
            changed += 1
            if st is not None:
                log.warning("fileset_link_restored", name=name)
        for name in os.listdir(root_fd):
            if name.startswith("..") or name in top:
                continue
            try:
                if os.readlink(name, dir_fd=root_fd) == f"{DATA_LINK}/{name}":
                    os.unlink(name, dir_fd=root_fd)
                    changed += 1
            except OSError:
                continue  # not a symlink: the app's own file
        return changed

    def _remove_stale(self, root_fd: int, keep: str) -> None:
        for name in os.listdir(root_fd):
            if name != keep and TIMESTAMPED_RE.fullmatch(name):
                self._remove_entry(root_fd, name)

    @_os_errors("remove an old entry")
    def _remove_entry(self, root_fd: int, name: str) -> None:
        """Remove ``name`` in CONFIG_DIR: a link or file is unlinked, a directory removed
        without following any symlink in it."""
        try:
            st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=root_fd)
        else:
            os.unlink(name, dir_fd=root_fd)


def _check_specs(files: Iterable[FileSpec]) -> list[FileSpec]:
    specs = sorted(files, key=lambda spec: spec.path)
    paths = {spec.path for spec in specs}
    if len(paths) != len(specs):
        dup = next(a.path for a, b in itertools.pairwise(specs) if a.path == b.path)
        raise InvalidInput(f"output path {dup!r} is given twice")
    for spec in specs:
        parts = spec.path.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in paths:
                raise InvalidInput(
                    f"output path {prefix!r} is both a file and the directory of {spec.path!r}"
                )
    return specs


def _write_file(dir_fd: int, name: str, content: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_all(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _read_meta(dir_fd: int) -> dict[str, Any]:
    try:
        fd = os.open(META_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return {}
    try:
        raw = _read_all(fd, 64 << 20)
    finally:
        os.close(fd)
    try:
        meta = json.loads(raw)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) and meta.get("format") == META_FORMAT else {}

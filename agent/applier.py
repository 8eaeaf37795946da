"""Applying a state: render, stage, check, swap, reload, verify, roll back, cache, report.

One ``Applier`` per agent; its lock makes applies, rollbacks and drift repairs one at a
time. ``apply(state)`` does, in order:

1. render the whole set (``agent.layout``); a render error keeps the old set;
2. stage it next to the applied one (``FileSet.stage``); content equal to the applied set
   is not rewritten and causes no reload;
3. run ``--check-cmd`` on the staged directory; a failure keeps the old set and is
   reported as ``check_failed`` (the next change tries again);
4. swap it in atomically, then reload the app (signal, command or URL);
5. with ``--health-url``, wait for the app to answer healthy; if it does not in time, or
   the signalled process died, write the last good set back, reload again, and report
   ``rolled_back``;
6. record the apply (status, metrics), save the state to the encrypted cache, report.

The last good set (its files, and its values when known) is what drift repair restores
and what a rollback returns to. Logs name revisions, files and outcomes, never a value.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

import structlog

from agent.config import AgentConfig
from agent.errors import CacheError, FileSetError, ReloadFailed
from agent.fileset import AppliedSet, FileSet, FileSpec, StagedSet
from agent.fileset import Outcome as FileOutcome
from agent.health import AgentStatus
from agent.layout import build_files
from agent.reload import Reloader, run_check, wait_healthy
from agent.report import Reporter
from agent.state import ConfigState
from shared.errors import InvalidInput

if TYPE_CHECKING:
    from agent.cache import Cache  # cryptography and sqlitedict load only when a cache is used

log = structlog.get_logger("agent.applier")


class Outcome(StrEnum):
    WRITTEN = "written"
    UNCHANGED = "unchanged"
    REPAIRED = "repaired"
    RENDER_FAILED = "render_failed"
    CHECK_FAILED = "check_failed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"

    @property
    def ok(self) -> bool:
        return self in (Outcome.WRITTEN, Outcome.UNCHANGED, Outcome.REPAIRED)


def make_fileset(cfg: AgentConfig) -> FileSet:
    return FileSet(
        cfg.config_dir, file_mode=cfg.file_mode, secret_mode=cfg.secret_file_mode, owner=cfg.file_owner
    )


@contextlib.asynccontextmanager
async def staged_set(fileset: FileSet, files: Sequence[FileSpec], revision: int) -> AsyncIterator[StagedSet]:
    """``FileSet.stage`` run in a thread, so checks between staging and commit can await."""
    manager = fileset.stage(files, revision)
    staged = await asyncio.to_thread(manager.__enter__)
    try:
        yield staged
    except BaseException as exc:
        await asyncio.to_thread(manager.__exit__, type(exc), exc, exc.__traceback__)
        raise
    else:
        await asyncio.to_thread(manager.__exit__, None, None, None)


class Applier:
    def __init__(
        self,
        cfg: AgentConfig,
        status: AgentStatus,
        reporter: Reporter,
        *,
        reloader: Reloader | None = None,
        cache: Cache | None = None,
        fileset: FileSet | None = None,
    ) -> None:
        self.cfg = cfg
        self.status = status
        self.reporter = reporter
        self.reloader = reloader
        self.cache = cache
        self.fileset = fileset or make_fileset(cfg)
        self.lock = asyncio.Lock()
        self.good_files: list[FileSpec] | None = None
        self.good_state: ConfigState | None = None  # values of the applied set, when known
        self.good_revision: int | None = None
        self._had_set = False  # a set was on disk before this apply (else no app can be using one)
        self._error = ""  # what went wrong with the applied set (a failed reload), reported with it

    # ---- start-up

    async def recover(self) -> None:
        """Clean what an interrupted write (a kill -9) left in the output directory."""
        await asyncio.to_thread(self.fileset.recover)

    async def adopt(self) -> AppliedSet | None:
        """Take the set already on disk (an init container wrote it) as the applied one.

        Nothing is written. A set someone edited since is not adopted: the first sync
        rewrites it.
        """
        async with self.lock:
            current = await asyncio.to_thread(self.fileset.current)
            if current is None:
                return None
            self._had_set = True
            if current.drifted:
                log.warning(
                    "adopt_refused_drifted", directory=current.directory, drifted=list(current.drifted)
                )
                return None
            recorded = current.meta.get("files")
            recorded = recorded if isinstance(recorded, dict) else {}
            self.good_files = [
                FileSpec(path, applied.content, secret=bool(recorded.get(path, {}).get("secret")))
                for path, applied in current.files.items()
            ]
            self.good_revision = current.revision
            written_at = _parse_time(current.meta.get("written_at"))
            self.status.record_apply(current.revision or 0, synced_at=written_at)
            log.info(
                "adopted", directory=current.directory, revision=current.revision, files=len(current.files)
            )
            return current

    # ---- applying

    async def apply(
        self, state: ConfigState, *, reload: bool = True, synced_at: float | None = None
    ) -> Outcome:
        """Make ``state`` the applied set (see the module docstring). ``synced_at``: when the
        server last confirmed ``state`` (None: it comes from the server just now)."""
        async with self.lock:
            return await self._apply(state, reload=reload, synced_at=synced_at)

    async def _apply(self, state: ConfigState, *, reload: bool, synced_at: float | None) -> Outcome:
        try:
            files = build_files(self.cfg, state)
        except InvalidInput as exc:  # RenderError is one
            log.error("render_failed", error=exc.detail, revision=state.revision)
            self.status.record_failure("render")
            self.reporter.submit("error", self.good_revision, f"render failed: {exc.detail}")
            return Outcome.RENDER_FAILED
        try:
            async with staged_set(self.fileset, files, state.revision) as staged:
                if not staged.unchanged and self.cfg.check_cmd:
                    check = await run_check(self.cfg.check_cmd, staged.path, self.cfg.check_timeout)
                    if not check.ok:
                        reason = "timed out" if check.returncode is None else f"exited {check.returncode}"
                        log.warning("set_refused_by_check", revision=state.revision, check=reason)
                        self.status.record_failure("check")
                        self.reporter.submit("check_failed", self.good_revision, f"check command {reason}")
                        return Outcome.CHECK_FAILED
                result = await asyncio.to_thread(staged.commit)
        except FileSetError as exc:
            log.error("apply_failed", error=exc.detail, revision=state.revision)
            self.status.record_failure("apply")
            self.reporter.submit("error", self.good_revision, exc.detail)
            return Outcome.FAILED
        previous = (self.good_files, self.good_state, self.good_revision)
        had_set, self._had_set = self._had_set, True
        self.good_files, self.good_state, self.good_revision = files, state.copy(), state.revision
        outcome = Outcome(result.outcome.value)
        error = ""
        if outcome is Outcome.WRITTEN:
            log.info("applied", revision=state.revision, files=len(files), directory=result.directory)
            if reload and self.reloader is not None:
                rolled_back, error = await self._reload(state, previous, had_set)
                if rolled_back:
                    return Outcome.ROLLED_BACK
        elif outcome is Outcome.REPAIRED:
            log.warning("links_repaired", revision=state.revision)
        if outcome is Outcome.WRITTEN or error:
            self._error = error
        self.status.record_apply(state.revision, synced_at=synced_at)
        if synced_at is None:
            await self._save_cache(state)
        self.reporter.submit("error" if self._error else "applied", state.revision, self._error)
        return outcome

    async def _reload(
        self,
        state: ConfigState,
        previous: tuple[list[FileSpec] | None, ConfigState | None, int | None],
        had_set: bool,
    ) -> tuple[bool, str]:
        """Reload, then check health; (rolled back, error to report)."""
        assert self.reloader is not None
        try:
            reloaded = await self.reloader.reload()
        except ReloadFailed as exc:
            if not had_set:  # the first set: the app may simply not be running yet
                log.info("app_not_reloaded", reason=exc.detail)
                return False, ""
            log.warning("reload_failed", error=exc.detail, revision=state.revision)
            self.status.record_failure("reload")
            return False, f"reload failed: {exc.detail}"
        self.status.record_reload()
        if not self.cfg.health_url:
            return False, ""
        health = await wait_healthy(
            self.cfg.health_url, self.cfg.health_timeout, processes=reloaded.processes
        )
        if health.ok:
            return False, ""
        log.error("app_unhealthy_after_reload", detail=health.detail, revision=state.revision)
        self.status.record_failure("health")
        good_files, good_state, good_revision = previous
        if good_files is None:
            return False, f"app unhealthy after reload and no earlier set to roll back to: {health.detail}"
        try:
            await asyncio.to_thread(self.fileset.write, good_files, good_revision)
        except FileSetError as exc:
            log.error("rollback_failed", error=exc.detail)
            self.status.record_failure("apply")
            return False, f"rollback failed: {exc.detail}"
        self.good_files, self.good_state, self.good_revision = good_files, good_state, good_revision
        log.warning("rolled_back", to_revision=good_revision, refused_revision=state.revision)
        try:
            await self.reloader.reload()
            self.status.record_reload()
        except ReloadFailed as exc:
            log.warning("reload_after_rollback_failed", error=exc.detail)
        self.reporter.submit("rolled_back", good_revision, health.detail)
        return True, ""

    async def _save_cache(self, state: ConfigState) -> None:
        if self.cache is None:
            return
        entries = state.to_cache(self.cfg.environment.value, self.cfg.namespaces)
        try:
            await asyncio.to_thread(self.cache.save_snapshot, entries, state.revision)
        except CacheError as exc:
            log.warning("cache_save_failed", error=exc.detail)
            self.status.record_failure("cache")

    # ---- while nothing changes

    def confirm(self, revision: int) -> None:
        """The server says the applied set is current as of ``revision`` (a progress mark)."""
        if self.good_state is None or revision < (self.good_revision or 0):
            return
        self.good_state.revision = revision
        self.good_revision = revision
        self.status.applied_revision = revision
        self.status.mark_synced()
        self.reporter.submit("error" if self._error else "applied", revision, self._error)

    async def repair(self) -> None:
        """Restore the last good set if someone edited, added or removed a managed file."""
        async with self.lock:
            if self.good_files is None:
                return
            try:
                current = await asyncio.to_thread(self.fileset.current)
                result = await asyncio.to_thread(self.fileset.write, self.good_files, self.good_revision)
            except FileSetError as exc:
                log.error("drift_repair_failed", error=exc.detail)
                self.status.record_failure("apply")
                return
            if result.outcome is not FileOutcome.UNCHANGED:
                drifted = list(current.drifted) if current is not None else []
                log.warning("drift_repaired", outcome=result.outcome.value, drifted=drifted)


def _parse_time(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None

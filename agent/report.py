"""Status reports to the server: after each apply the agent says what it runs and how it went.

``Reporter.submit`` never waits: it replaces the pending report, and one background task
sends the newest (a burst of applies costs one request, not one each). A report that
fails is kept and sent again later (unless a newer one replaced it, or the server refused it as
invalid); failures are logged once per streak, never with the token. ``flush`` sends what is pending before an
init container exits.

``last_error`` carries only the agent's own messages (they name files, settings and
lines, never a value); the server scrubs it once more.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from agent.health import AgentStatus
from shared.errors import LLMConfigError

log = structlog.get_logger("agent.report")

RETRY_DELAY = 5.0
SEND_TIMEOUT = 10.0
LAST_ERROR_MAX = 400

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Reporter:
    def __init__(
        self,
        send: Send | None,
        *,
        agent_id: str,
        namespaces: tuple[str, ...],
        environment: str,
        status: AgentStatus,
    ) -> None:
        self._send = send
        self.base = {"agent_id": agent_id, "namespaces": list(namespaces), "environment": environment}
        self.status = status
        self._pending: dict[str, Any] | None = None
        self._last_sent: dict[str, Any] | None = None
        self._wake = asyncio.Event()
        self._failing = False

    def submit(self, state: str, revision: int | None, last_error: str = "") -> None:
        """Queue a report (``state`` one of the server's states); the newest wins."""
        if self._send is None:
            return
        report = {
            **self.base,
            "applied_revision": max(0, revision or 0),
            "state": state,
            "last_error": last_error[:LAST_ERROR_MAX],
        }
        if report == self._last_sent and self._pending is None:
            return
        self._pending = report
        self._wake.set()

    async def run(self) -> None:
        """Send reports as they come, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not await self._send_pending():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), RETRY_DELAY)
                self._wake.set()

    async def flush(self, time_limit: float = SEND_TIMEOUT) -> bool:
        """Send the pending report now; whether it (or nothing) had to be sent and got through."""
        try:
            async with asyncio.timeout(time_limit):
                return await self._send_pending()
        except TimeoutError:
            return False

    async def _send_pending(self) -> bool:
        report = self._pending
        if report is None or self._send is None:
            return True
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await self._send(report)
        except (LLMConfigError, TimeoutError) as exc:
            self.status.record_failure("report")
            if not self._failing:
                detail = exc.detail if isinstance(exc, LLMConfigError) else "timed out"
                log.warning("status_report_failed", error=detail, state=report["state"])
            self._failing = True
            if isinstance(exc, LLMConfigError) and not exc.retriable:
                self._drop(report)  # sending it again would be refused again
                return True
            return False
        if self._failing:
            log.info("status_report_resumed")
        self._failing = False
        self._last_sent = report
        self._drop(report)
        return True

    def _drop(self, report: dict[str, Any]) -> None:
        if self._pending is report:
            self._pending = None

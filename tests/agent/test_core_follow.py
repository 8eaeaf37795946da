"""The follower's handling of a watch stream, with a scripted source and real files: the first
progress mark triggers a full sync, replays are not applied twice, a snapshot replaces the state,
changes referencing secrets are read resolved, other namespaces are ignored."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.applier import Applier
from agent.config import AgentConfig
from agent.follow import Follower
from agent.health import AgentStatus
from agent.report import Reporter
from agent.source import Source
from agent.state import ConfigState, Entry, EntryName
from shared.sdk import Change, Progress, SecretRef, Snapshot, WatchEvent


class ScriptedSource(Source):
    """A Source whose server is a dict and whose watch stream is a queue the test feeds."""

    def __init__(self, cfg: AgentConfig, entries: dict[EntryName, Entry]) -> None:
        super().__init__(cfg)
        self.server = dict(entries)
        self.events: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self.gets: list[EntryName] = []
        self.fetches = 0

    def watch(self) -> AsyncGenerator[WatchEvent, None]:
        return self._stream()

    async def _stream(self) -> AsyncGenerator[WatchEvent, None]:
        while True:
            yield await self.events.get()

    async def fetch(self, revision: int = 0) -> ConfigState:
        self.fetches += 1
        return ConfigState(dict(self.server), revision)

    async def get_entry(self, name: EntryName) -> Entry | None:
        self.gets.append(name)
        return self.server.get(name)

    async def report(self, report: dict[str, Any]) -> None:
        return None


class Rig:
    def __init__(self, tmp: Path, entries: dict[EntryName, Entry]) -> None:
        self.root = tmp / "config"
        self.cfg = AgentConfig.load(
            flags={"server": "http://127.0.0.1:9", "namespaces": "ns", "config_dir": str(self.root)},
            environ={"CONFIG_TOKEN": "lcm_test"},
        )
        self.status = AgentStatus()
        self.source = ScriptedSource(self.cfg, entries)
        reporter = Reporter(None, agent_id="t", namespaces=("ns",), environment="global", status=self.status)
        self.applier = Applier(self.cfg, self.status, reporter)
        self.follower = Follower(self.cfg, self.source, self.applier, self.status)

    def file(self, key: str) -> Any:
        return json.loads((self.root / "ns" / f"{key}.json").read_text())

    def keys(self) -> set[str]:
        folder = self.root / "ns"
        return {p.stem for p in folder.iterdir()} if folder.exists() else set()

    async def push(self, *events: WatchEvent) -> None:
        for event in events:
            self.source.events.put_nowait(event)
        for _ in range(200):  # let the follower take them and finish applying
            await asyncio.sleep(0.01)
            if self.source.events.empty() and not self.applier.lock.locked() and not self.follower._pending():
                return
        raise AssertionError("the follower did not settle")


async def until(check: Callable[[], bool]) -> None:
    for _ in range(300):
        with contextlib.suppress(OSError, ValueError):
            if check():
                return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


@contextlib.asynccontextmanager
async def following(rig: Rig) -> AsyncIterator[Rig]:
    task = asyncio.create_task(rig.follower.run())
    try:
        yield rig
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def put(
    key: str, value: dict[str, Any], revision: int, *, refs: tuple[SecretRef, ...] = (), ns: str = "ns"
) -> Change:
    return Change("put", revision, ns, key, "global", value, "", refs)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path, {("ns", "a"): Entry({"v": 2}, 6)})


async def test_first_progress_fetches_and_applies(rig: Rig) -> None:
    async with following(rig):
        await rig.push(Progress(6))
        assert rig.file("a") == {"v": 2}
        assert rig.source.fetches == 1
        assert rig.status.applied_revision == 6


async def test_replayed_changes_are_not_applied_twice(rig: Rig) -> None:
    async with following(rig):
        await rig.push(Progress(5))
        applies = rig.status.applies
        await rig.push(put("a", {"v": 1}, 4), put("a", {"v": 2}, 6))  # older than what was fetched
        assert rig.file("a") == {"v": 2}
        assert rig.status.applies == applies
        await rig.push(put("a", {"v": 3}, 7))
        assert rig.file("a") == {"v": 3}
        assert rig.status.applies == applies + 1


async def test_snapshot_replaces_the_state(rig: Rig) -> None:
    async with following(rig):
        await rig.push(Progress(6), put("b", {"w": 1}, 7))
        await until(lambda: rig.keys() == {"a", "b"})
        rig.source.server = {("ns", "c"): Entry({"x": 1}, 20)}
        await rig.push(Snapshot(20, (put("c", {"x": 1}, 20),)))
        await until(lambda: rig.keys() == {"c"})


async def test_secret_referencing_change_is_read_resolved(rig: Rig) -> None:
    """The event's value lacks the secret; the file gets the server's resolved value, 0600."""
    refs = (SecretRef("$.key", "keys/p", 1),)
    resolved = {"key": "sk-resolved", "secrets": [{"field_path": "$.key", "secret_ref": "keys/p"}]}
    async with following(rig):
        await rig.push(Progress(6))
        rig.source.server[("ns", "p")] = Entry(resolved, 8, secret=True)
        await rig.push(put("p", {"key": "", "secrets": resolved["secrets"]}, 8, refs=refs))
        await until(lambda: rig.file("p") == resolved)
        assert rig.source.gets == [("ns", "p")]
        mode = (rig.root / "ns" / "p.json").stat().st_mode
        assert stat.S_IMODE(mode) == 0o600


async def test_other_namespaces_are_ignored(rig: Rig) -> None:
    async with following(rig):
        await rig.push(Progress(6), put("z", {"v": 1}, 7, ns="ns/sub"), put("y", {"v": 1}, 8, ns="other"))
        assert rig.keys() == {"a"}
        assert not (rig.root / "other").exists()


async def test_progress_confirms_the_applied_set(rig: Rig) -> None:
    async with following(rig):
        await rig.push(Progress(6), Progress(30))
        assert rig.status.applied_revision == 30
        assert rig.applier.good_revision == 30


async def test_delete_removes_the_file(rig: Rig) -> None:
    async with following(rig):
        await rig.push(Progress(6), put("b", {"w": 1}, 7))
        await until(lambda: rig.keys() == {"a", "b"})
        await rig.push(Change("delete", 8, "ns", "b", "global", None, ""))
        await until(lambda: rig.keys() == {"a"})

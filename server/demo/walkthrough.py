"""The demo's seven steps, each printing what it did and the CLI command that does the same.

    1 start a server          4 change the primary model   7 break a config: the check refuses it
    2 load configuration      5 roll back
    3 start agent and app     6 rotate the API key

Steps 4 to 6 each measure the time from the write (just before the request) to the app's
finished reload (the time the app records in its state file after re-reading the files).
A step that does not come about in time fails the demo with a one-line error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from server.demo import scenario as sc
from server.demo.console import Console
from server.demo.sample_app import mask
from server.demo.stack import ServerInfo, Stack
from shared.client import RestClient
from shared.errors import ProtocolError

STEP_TIMEOUT = 20.0
_TITLES = (
    "Start a server on a temporary SQLite store",
    "Load LLM configuration",
    "Start the agent (watch mode) and the sample app",
    "Change the primary model",
    "Roll back",
    "Rotate the API key",
    "Break a config: the agent's check rejects it",
)


class Walkthrough:
    def __init__(self, console: Console, stack: Stack, keep: bool) -> None:
        self.console = console
        self.stack = stack
        self.keep = keep
        self.timings: list[tuple[str, float]] = []
        self.server: ServerInfo | None = None
        self.api_key = ""
        self.agent_token = ""
        self.versions: list[int] = []  # versions of the endpoint config, oldest first

    async def run(self) -> None:
        self.server = await self._step(1, self.start_server())
        async with RestClient(self.server.url, self.server.token) as client:
            steps: list[Callable[[RestClient], Awaitable[None]]] = [
                self.load_configuration,
                self.start_agent_and_app,
                self.change_model,
                self.roll_back,
                self.rotate_key,
                self.break_config,
            ]
            for number, step in enumerate(steps, start=2):
                await self._step(number, step(client))

    async def _step(self, number: int, work: Awaitable[Any]) -> Any:
        self.console.step(number, len(_TITLES), _TITLES[number - 1])
        return await work

    # ---- 1

    async def start_server(self) -> ServerInfo:
        started = time.monotonic()
        server = await self.stack.start_server()
        self.console.ok(
            f"server pid {server.child.pid}: REST {server.url}, gRPC 127.0.0.1:{server.grpc_port} "
            f"(ready in {time.monotonic() - started:.1f} s)"
        )
        self.console.info(f"store: {self.stack.work.server_data}/llmcm.db (SQLite, WAL)")
        return server

    # ---- 2

    async def load_configuration(self, client: RestClient) -> None:
        c = self.console
        for schema, key in sc.SCHEMA_BINDINGS:
            await client.bind_schema(schema, sc.NAMESPACE, key)
            c.cmd(f"llm-config schema bind {schema} --namespace {sc.NAMESPACE} --key {key}")
        c.ok("built-in schemas bound: values that break them are refused on write")

        self.api_key = sc.new_api_key()
        secret = await client.put_secret(
            sc.SECRET_NAMESPACE, sc.SECRET_KEY, self.api_key, message="provider key"
        )
        c.cmd(f"llm-config secret set {sc.SECRET_NAMESPACE} {sc.SECRET_KEY} < key.txt")
        c.ok(
            f"secret {sc.SECRET_REF} v{secret['version']}: {mask(self.api_key)} "
            "(encrypted at rest; masked here)"
        )

        value = sc.endpoint()
        answer = await client.put_config(
            sc.NAMESPACE, sc.ENDPOINT_KEY, value, env="global", message="initial"
        )
        self.versions.append(int(answer["version"]))
        c.cmd(f"llm-config set {sc.NAMESPACE} {sc.ENDPOINT_KEY} --env global --file endpoint.json")
        c.ok(f"{sc.NAMESPACE}/{sc.ENDPOINT_KEY} v{answer['version']}: {value['provider']}/{value['model']}")
        c.info(f"fallback chain: {sc.fallback_chain(value)}")
        c.info(f"api_key from secrets: [{{field_path: $.api_key, secret_ref: {sc.SECRET_REF}}}]")

        answer = await client.put_config(sc.NAMESPACE, sc.PROMPT_KEY, sc.PROMPT, env="global")
        c.ok(
            f"{sc.NAMESPACE}/{sc.PROMPT_KEY} v{answer['version']}: prompt template with variables "
            + ", ".join(sc.PROMPT["variables"])
        )

        await client.put_config(sc.NAMESPACE, sc.ROUTING_KEY, sc.ROUTING, env="global")
        await client.put_config(sc.NAMESPACE, sc.ROUTING_KEY, sc.ROUTING_PRODUCTION, env=sc.ENVIRONMENT)
        c.cmd(
            f"llm-config set {sc.NAMESPACE} {sc.ROUTING_KEY} --env production --file routing.production.json"
        )
        resolved = await client.get_config(
            sc.NAMESPACE, sc.ROUTING_KEY, env=sc.ENVIRONMENT, resolve=True, explain=True
        )
        c.ok(
            f"{sc.NAMESPACE}/{sc.ROUTING_KEY}: global settings plus a production override; "
            "production resolves to"
        )
        provenance = resolved.get("provenance", {})
        for pointer in sorted(provenance):
            c.info(
                f"  {pointer.lstrip('/').replace('/', '.')} = {_leaf(resolved['value'], pointer)}"
                f"  (from {provenance[pointer]})"
            )

        token = await client.create_token(
            sc.AGENT_ID, ["service-account"], namespaces=[sc.NAMESPACE, sc.SECRET_NAMESPACE]
        )
        self.agent_token = str(token["token"])
        c.cmd(
            f"llm-config token create --name {sc.AGENT_ID} --role service-account "
            f"--namespace {sc.NAMESPACE} --namespace {sc.SECRET_NAMESPACE}"
        )
        c.ok(
            f"a service-account token for the agent: it may read {sc.NAMESPACE} and "
            f"{sc.SECRET_NAMESPACE}, nothing else"
        )

    # ---- 3

    async def start_agent_and_app(self, client: RestClient) -> None:
        assert self.server is not None
        c, work = self.console, self.stack.work
        agent = await self.stack.start_agent(self.server, self.agent_token)
        c.cmd(
            f"llm-config-agent watch --namespaces {sc.NAMESPACE} --environment {sc.ENVIRONMENT} "
            f"--config-dir ./{work.config_dir.name} \\"
        )
        c.cmd("    --pid-file app.pid --check-cmd 'python check.py {staged}'", continued=True)
        c.ok(
            f"agent pid {agent.pid} follows {sc.NAMESPACE} ({sc.ENVIRONMENT}), "
            f"wrote ./{work.config_dir.name}:"
        )
        for path in sorted((work.config_dir / sc.NAMESPACE).iterdir()):
            c.info(f"  ./{work.config_dir.name}/{sc.NAMESPACE}/{path.name}")
        c.info("every new set is checked by server/demo/check.py before it goes live")
        app, state = await self.stack.start_app(self.keep)
        c.ok(f"app pid {app.pid} started: active model {state['model']}, key {state['key']}")
        c.info("the app reloads on SIGHUP, which the agent sends after each new set")

    # ---- 4 to 6: a write, then the app's reload, timed

    async def _timed(self, label: str, write: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        before = self.stack.app_state() or {}
        reloads = int(before.get("reloads", 0))
        wrote_at = time.time()
        answer = await write()
        revision = int(answer["revision"])

        async def reloaded() -> dict[str, Any] | None:
            state = self.stack.app_state()
            if state and int(state.get("reloads", 0)) > reloads and int(state.get("revision", 0)) >= revision:
                return state
            return None

        state = await self.stack.until("waiting for the app to reload", reloaded, STEP_TIMEOUT)
        millis = max(0.0, (float(state["loaded_at"]) - wrote_at) * 1000)
        self.timings.append((label, millis))
        return {"answer": answer, "state": state, "millis": millis}

    def _reloaded(self, result: dict[str, Any], what: str) -> None:
        self.console.ok(f"app reloaded {result['millis']:.0f} ms after the write: {what}")

    async def change_model(self, client: RestClient) -> None:
        value = sc.endpoint(sc.NEW_MODEL)
        result = await self._timed(
            "change model",
            lambda: client.put_config(sc.NAMESPACE, sc.ENDPOINT_KEY, value, env="global", message="try opus"),
        )
        answer = result["answer"]
        self.versions.append(int(answer["version"]))
        self.console.cmd(f"llm-config set {sc.NAMESPACE} {sc.ENDPOINT_KEY} --env global --file endpoint.json")
        self.console.ok(
            f"v{answer['version']} (revision {answer['revision']}): "
            f"model {sc.PRIMARY_MODEL} -> {sc.NEW_MODEL}"
        )
        self._expect(result["state"], "model", f"anthropic/{sc.NEW_MODEL}")
        self._reloaded(result, f"active model {result['state']['model']}")

    async def roll_back(self, client: RestClient) -> None:
        first = self.versions[0]
        result = await self._timed(
            "roll back",
            lambda: client.rollback(
                sc.NAMESPACE, sc.ENDPOINT_KEY, first, env="global", message="back to sonnet"
            ),
        )
        answer = result["answer"]
        self.versions.append(int(answer["version"]))
        self.console.cmd(f"llm-config rollback {sc.NAMESPACE} {sc.ENDPOINT_KEY} --version {first}")
        self.console.ok(
            f"v{answer['version']} (revision {answer['revision']}) is a copy of v{first}: history only grows"
        )
        self._expect(result["state"], "model", f"anthropic/{sc.PRIMARY_MODEL}")
        self._reloaded(result, f"active model {result['state']['model']}")

    async def rotate_key(self, client: RestClient) -> None:
        old, new = self.api_key, sc.new_api_key()
        result = await self._timed(
            "rotate key",
            lambda: client.put_secret(
                sc.SECRET_NAMESPACE, sc.SECRET_KEY, new, grace_period=3600, message="scheduled rotation"
            ),
        )
        self.api_key = new
        answer = result["answer"]
        self.console.cmd(
            f"llm-config secret rotate {sc.SECRET_NAMESPACE} {sc.SECRET_KEY} --grace 3600 < new-key.txt"
        )
        self.console.ok(
            f"secret v{answer['version']} (revision {answer['revision']}): {mask(new)}; "
            f"{mask(old)} stays valid for an hour"
        )
        self.console.info(
            "the endpoint config did not change, but what it resolves to did: the agent rewrote it"
        )
        self._expect(result["state"], "key", mask(new))
        self._reloaded(result, f"key {mask(old)} -> {result['state']['key']}")

    # ---- 7

    async def break_config(self, client: RestClient) -> None:
        c = self.console
        before = self.stack.app_state() or {}
        good_revision = int(before.get("revision", 0))
        answer = await client.put_config(
            sc.NAMESPACE, sc.ENDPOINT_KEY, sc.looping_endpoint(), env="global", message="add a fallback"
        )
        broken = int(answer["version"])
        c.cmd(f"llm-config set {sc.NAMESPACE} {sc.ENDPOINT_KEY} --env global --file endpoint.json")
        c.ok(f"the server accepted v{broken} (revision {answer['revision']}): the schema allows it")
        looping = sc.fallback_chain(sc.looping_endpoint())
        c.info(f"but its fallback chain now starts with the primary model: {looping}")
        report = await self.stack.until(
            "waiting for the agent's check", lambda: _agent_in_state(client, "check_failed"), STEP_TIMEOUT
        )
        for problem in self._check_problems():
            c.refused(f"check refused the set: {problem}")
        c.cmd("llm-config agents")
        c.info(
            f"{sc.AGENT_ID}  {sc.ENVIRONMENT}  "
            f"revision {report.get('applied_revision')}  {report.get('state')}"
        )
        after = self.stack.app_state() or {}
        if (
            int(after.get("reloads", -1)) != int(before.get("reloads", -2))
            or after.get("revision") != good_revision
        ):
            raise ProtocolError("the app was reloaded although the check refused the set")
        live = self.stack.work.config_dir / sc.NAMESPACE / f"{sc.ENDPOINT_KEY}.json"
        if json.loads(live.read_text(encoding="utf-8")).get("fallback") != sc.endpoint()["fallback"]:
            raise ProtocolError(f"{live} holds the refused value")
        c.ok(f"./{self.stack.work.config_dir.name} kept the last good set (revision {good_revision})")
        c.ok(f"the app was not signalled: still {after.get('model')}, key {after.get('key')}")

        good = self.versions[-1]
        repair = await client.rollback(
            sc.NAMESPACE, sc.ENDPOINT_KEY, good, env="global", message="undo the loop"
        )
        repaired_at = int(repair["revision"])
        await self.stack.until(
            "waiting for the agent to apply the repair",
            lambda: _agent_in_state(client, "applied", repaired_at),
            STEP_TIMEOUT,
        )
        c.cmd(f"llm-config rollback {sc.NAMESPACE} {sc.ENDPOINT_KEY} --version {good}")
        c.ok(f"repaired: v{repair['version']} is a copy of v{good}; the agent reports applied again")
        c.info("the files in place already hold that content: nothing rewritten, no reload")

    def _check_problems(self) -> list[str]:
        try:
            lines = self.stack.work.check_report.read_text(encoding="utf-8").splitlines()
            problems = json.loads(lines[-1]).get("problems", [])
        except (OSError, ValueError, IndexError, AttributeError):
            return ["(its report could not be read)"]
        return [str(p) for p in problems] or ["(no reason given)"]

    def _expect(self, state: dict[str, Any], field: str, wanted: str) -> None:
        if state.get(field) != wanted:
            raise ProtocolError(f"the app reloaded, but its {field} is {state.get(field)!r}, not {wanted!r}")


def _leaf(value: Any, pointer: str) -> Any:
    for part in pointer.strip("/").split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


async def _agent_in_state(client: RestClient, state: str, revision: int = 0) -> dict[str, Any] | None:
    answer = await client.request("GET", "/v1/agents")
    agents = answer.get("agents", []) if isinstance(answer, dict) else []
    for agent in agents:
        if (
            agent.get("agent_id") == sc.AGENT_ID
            and agent.get("state") == state
            and int(agent.get("applied_revision") or 0) >= revision
        ):
            return dict(agent)
    return None

"""The demo agent's --check-cmd: validates a staged set before the agent swaps it in.

    python check.py STAGED_DIR [--report FILE]

The server already checked each value against its JSON Schema; this check sees the whole
set as the app will, and refuses what a schema cannot express:

- the endpoint has a non-empty ``api_key`` (the secret reference was injected);
- its fallback chain neither repeats the primary model nor lists a model twice
  (a loop would retry the failing model forever);
- every ``{placeholder}`` of the prompt template is a declared variable, and back;
- routing's ``max_fallback_attempts`` does not exceed the fallback chain.

Exit 0 when the set is fine, 1 with one line per problem on stderr otherwise. With
--report it also appends ``{"ok": …, "problems": […]}`` as one JSON line to FILE, which
is how the demo shows why a set was refused. No value is printed (the set holds a key).
Only the standard library is used.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

NAMESPACE = "llm-gateway"
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _load(staged: Path, name: str, problems: list[str]) -> dict[str, Any]:
    path = staged / NAMESPACE / f"{name}.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{NAMESPACE}/{name}.json is missing")
        return {}
    except (OSError, ValueError) as exc:
        problems.append(f"{NAMESPACE}/{name}.json is not readable JSON ({type(exc).__name__})")
        return {}
    if not isinstance(value, dict):
        problems.append(f"{NAMESPACE}/{name}.json does not hold an object")
        return {}
    return value


def check_endpoint(endpoint: dict[str, Any], problems: list[str]) -> None:
    if not endpoint:
        return
    key = endpoint.get("api_key")
    if not isinstance(key, str) or not key:
        problems.append("primary-model: api_key is empty (was the secret reference injected?)")
    primary = (endpoint.get("provider"), endpoint.get("model"))
    seen: set[tuple[Any, Any]] = set()
    for item in endpoint.get("fallback", []):
        pair = (item.get("provider"), item.get("model")) if isinstance(item, dict) else (None, None)
        if pair == primary:
            problems.append(f"primary-model: fallback chain repeats the primary model {pair[0]}/{pair[1]}")
        elif pair in seen:
            problems.append(f"primary-model: fallback chain lists {pair[0]}/{pair[1]} twice")
        seen.add(pair)


def check_prompt(prompt: dict[str, Any], problems: list[str]) -> None:
    if not prompt:
        return
    used = set(PLACEHOLDER.findall(str(prompt.get("template", ""))))
    declared = {str(v) for v in prompt.get("variables", [])}
    for name in sorted(used - declared):
        problems.append(f"support-prompt: the template uses {{{name}}}, which is not a declared variable")
    for name in sorted(declared - used):
        problems.append(f"support-prompt: variable {name!r} is declared but the template never uses it")


def check_routing(routing: dict[str, Any], endpoint: dict[str, Any], problems: list[str]) -> None:
    attempts = routing.get("max_fallback_attempts")
    chain = endpoint.get("fallback", [])
    if isinstance(attempts, int) and isinstance(chain, list) and attempts > len(chain):
        problems.append(
            f"routing: max_fallback_attempts is {attempts} but the fallback chain has {len(chain)} models"
        )


def check(staged: Path) -> list[str]:
    """Every problem of the staged set (empty when it may go live)."""
    problems: list[str] = []
    endpoint = _load(staged, "primary-model", problems)
    prompt = _load(staged, "support-prompt", problems)
    routing = _load(staged, "routing", problems)
    check_endpoint(endpoint, problems)
    check_prompt(prompt, problems)
    check_routing(routing, endpoint, problems)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("staged", type=Path)
    parser.add_argument("--report", type=Path)
    args = parser.parse_args(argv)
    problems = check(args.staged)
    if args.report is not None:
        with args.report.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"ok": not problems, "problems": problems}) + "\n")
    for problem in problems:
        print(f"check: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

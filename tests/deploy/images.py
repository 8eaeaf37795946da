"""The two Dockerfiles, parsed with ``dockerfile-parse`` into what the tests check.

``Image`` holds one Dockerfile's stages and, for its final stage, the user, exposed ports,
entrypoint, default command and health check (exec form, as JSON arrays). ``IMAGES`` maps
the image names the Kubernetes manifests use to their Dockerfiles.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from dockerfile_parse import DockerfileParser

from tests.support import REPO

IMAGES = {"llm-config-server": "Dockerfile.server", "llm-config-agent": "Dockerfile.agent"}
_HEALTHCHECK = re.compile(r"^(?P<options>(?:--[a-z-]+=\S+\s+)*)CMD\s+(?P<cmd>\[.*\])\s*$", re.DOTALL)


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [value for name, value in self.instructions if name == instruction]


@dataclass
class Image:
    path: Path
    stages: list[Stage]

    @classmethod
    def parse(cls, filename: str) -> Image:
        path = REPO / filename
        with path.open("rb") as fh:
            structure = DockerfileParser(fileobj=fh).structure
        stages: list[Stage] = []
        for item in structure:
            instruction, value = item["instruction"], item["value"]
            if instruction == "FROM":
                base, _, name = value.partition(" AS ")
                stages.append(Stage(base.strip(), name.strip()))
            elif instruction != "COMMENT":
                if not stages:
                    raise AssertionError(f"{filename}: {instruction} before the first FROM")
                stages[-1].instructions.append((instruction, value))
        return cls(path, stages)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def _last(self, instruction: str) -> str | None:
        values = self.final.values(instruction)
        return values[-1] if values else None

    @property
    def user(self) -> str | None:
        return self._last("USER")

    @property
    def exposed(self) -> set[int]:
        return {int(p.split("/")[0]) for value in self.final.values("EXPOSE") for p in value.split()}

    def exec_form(self, instruction: str) -> list[str]:
        value = self._last(instruction)
        if value is None:
            return []
        parsed = json.loads(value)  # shell form is not JSON: the exec form is required
        if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
            raise AssertionError(f"{self.path.name}: {instruction} is not a JSON array of strings")
        return parsed

    @property
    def entrypoint(self) -> list[str]:
        return self.exec_form("ENTRYPOINT")

    @property
    def cmd(self) -> list[str]:
        return self.exec_form("CMD")

    @property
    def healthcheck(self) -> tuple[dict[str, str], list[str]]:
        """(options, exec-form command) of the final stage's HEALTHCHECK."""
        value = self._last("HEALTHCHECK")
        if value is None:
            raise AssertionError(f"{self.path.name} has no HEALTHCHECK")
        match = _HEALTHCHECK.match(value.strip())
        if match is None:
            raise AssertionError(f"{self.path.name}: HEALTHCHECK is not 'HEALTHCHECK [--options] CMD [...]'")
        options = dict(opt.removeprefix("--").split("=", 1) for opt in match["options"].split())
        return options, json.loads(match["cmd"])

    def copies(self) -> list[tuple[dict[str, str], list[str], str]]:
        """Every COPY of every stage: (flags such as from=, sources, destination)."""
        out = []
        for stage in self.stages:
            for value in stage.values("COPY"):
                words = shlex.split(value)
                flags = dict(w.removeprefix("--").split("=", 1) for w in words if w.startswith("--"))
                paths = [w for w in words if not w.startswith("--")]
                out.append((flags, paths[:-1], paths[-1]))
        return out

    def runs(self, stage: Stage | None = None) -> list[str]:
        stages = [stage] if stage is not None else self.stages
        return [value for s in stages for value in s.values("RUN")]


def dockerignore_patterns() -> list[tuple[bool, str]]:
    """(exception?, pattern) of .dockerignore, in order."""
    patterns = []
    for raw in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        patterns.append((negate, line.removeprefix("!").strip().strip("/")))
    return patterns


def ignored(relative: str, patterns: list[tuple[bool, str]]) -> bool:
    """Whether Docker leaves ``relative`` out of the build context: the last pattern matching the
    path or one of its parent directories decides (Docker's rule, ``**`` as any depth)."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for negate, pattern in patterns:
        regex = fnmatch.translate(pattern).replace(".*.*", ".*")
        if any(re.match(regex, c) for c in candidates):
            verdict = not negate
    return verdict


def context_files(patterns: list[tuple[bool, str]]) -> list[str]:
    """The repository's files that reach the build context (``.git`` aside). A directory that is
    left out and that no exception pattern reaches into is not walked (``.venv`` is large)."""
    exceptions = [pattern for negate, pattern in patterns if negate]
    out = []
    for root, dirs, files in os.walk(REPO):
        base = Path(root).relative_to(REPO).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = [
            d
            for d in sorted(dirs)
            if d != ".git"
            and (
                not ignored(prefix + d, patterns)
                or any(e.startswith(prefix + d + "/") or "*" in e for e in exceptions)
            )
        ]
        out.extend(prefix + f for f in sorted(files) if not ignored(prefix + f, patterns))
    return sorted(out)


def healthcheck_code(image: Image) -> str:
    """The Python source of an exec-form ``python -c CODE`` health check."""
    _, command = image.healthcheck
    if command[:2] != ["python", "-c"] or len(command) != 3:
        raise AssertionError(f"{image.path.name}: the health check is not ['python', '-c', CODE]")
    return command[2]

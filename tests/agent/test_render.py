"""Rendering: canonical JSON, YAML, dotenv read back by a real shell, and the template sandbox."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.errors import RenderError
from agent.render import Format, Template, parse_format, render_dotenv, render_entry, render_value
from shared.errors import InvalidInput

VALUE = {"model": "claude", "limits": {"rpm": 60, "burst": 1.5}, "fallback": ["a", "b"], "on": True}


class TestStructuredFormats:
    def test_json_is_canonical_and_newline_terminated(self) -> None:
        """JSON output: sorted keys, no spaces, UTF-8, one trailing newline."""
        out = render_value({"b": 1, "a": "é"}, Format.JSON)
        assert out == '{"a":"é","b":1}\n'.encode()

    def test_json_same_value_same_bytes(self) -> None:
        """Key order of the input does not change the bytes (so unchanged content is detected)."""
        assert render_value({"a": 1, "b": 2}, Format.JSON) == render_value({"b": 2, "a": 1}, Format.JSON)

    def test_yaml_round_trips(self) -> None:
        """YAML output parses back to the same value, with sorted block-style keys."""
        out = render_value(VALUE, Format.YAML)
        assert yaml.safe_load(out) == VALUE
        assert out.decode().splitlines()[0] == "fallback:"

    def test_entry_paths_and_suffixes(self) -> None:
        """Each format has its suffix under <namespace>/<key>."""
        assert render_entry("llm/routing", "primary", VALUE).path == "llm/routing/primary.json"
        assert render_entry("llm", "primary", VALUE, Format.YAML).path == "llm/primary.yaml"
        assert render_entry("llm", "primary", VALUE, Format.DOTENV, secret=True).path == "llm/primary.env"
        assert render_entry("llm", "primary", VALUE, Format.DOTENV, secret=True).secret

    def test_entry_names_are_validated(self) -> None:
        """A namespace or key that fails validation never becomes a file."""
        with pytest.raises(InvalidInput):
            render_entry("../etc", "passwd", VALUE)

    def test_parse_format(self) -> None:
        """Formats are parsed case-insensitively; an unknown one names the choices."""
        assert parse_format(" YAML ") is Format.YAML
        with pytest.raises(InvalidInput, match="json, yaml, dotenv"):
            parse_format("toml")


def source_env(tmp_path: Path, content: bytes) -> dict[str, str]:
    """Load a dotenv file with /bin/sh (set -a; .) and return the variables it set."""
    env_file = tmp_path / "x.env"
    env_file.write_bytes(content)
    out = subprocess.run(
        ["/bin/sh", "-c", '. "$1" && python3 -c "import json,os; print(json.dumps(dict(os.environ)))"', "sh",
         str(env_file)],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=True,
    ).stdout
    environ: dict[str, str] = json.loads(out)
    return environ


class TestDotenv:
    def test_flattening(self, tmp_path: Path) -> None:
        """Nested keys are joined with '_' and upper-cased; lists by index; scalars as text."""
        value = {"db": {"host": "h", "max-conns": 5}, "tags": ["x", "y"], "debug": False, "n": None}
        text = render_dotenv(value)
        assert text.decode().splitlines() == [
            "DB_HOST=h",
            "DB_MAX_CONNS=5",
            "DEBUG=false",
            "N=''",
            "TAGS_0=x",
            "TAGS_1=y",
        ]

    def test_tricky_values_survive_a_real_shell(self, tmp_path: Path) -> None:
        """Values with quotes, $, backticks, spaces, newlines and unicode read back exactly in sh."""
        tricky = {
            "a": "it's $HOME `id` $(id) \\n \"q\"",
            "b": "line1\nline2",
            "c": "  spaced  ",
            "d": "ümlaut ✓",
            "e": "",
            "f": "~/x",
            "g": "a;b|c&d>e<f",
            "h": "'",
            "i": "x=y",
        }
        got = source_env(tmp_path, b"set -a\n" + render_dotenv({"vals": tricky}))
        assert {k: v for k, v in got.items() if k.startswith("VALS_")} == {
            f"VALS_{k.upper()}": v for k, v in tricky.items()
        }

    def test_empty_containers_and_digits(self) -> None:
        """Empty objects and lists are kept as JSON text; a name starting with a digit gets '_'."""
        lines = render_dotenv({"o": {}, "l": [], "1st": 1}).decode().splitlines()
        assert lines == ["L='[]'", "O='{}'", "_1ST=1"]

    def test_collision_is_an_error(self) -> None:
        """Two keys that flatten to the same variable are refused, naming both."""
        with pytest.raises(RenderError, match="A_B"):
            render_dotenv({"a": {"b": 1}, "a_b": 2})

    def test_nul_refused_and_top_level_object_required(self) -> None:
        """A NUL cannot be in an environment variable; the top level must be an object."""
        with pytest.raises(RenderError, match="NUL"):
            render_dotenv({"a": "x\x00y"})
        with pytest.raises(RenderError, match="JSON object"):
            render_dotenv([1, 2])

    def test_entry_error_names_the_entry_not_the_value(self) -> None:
        """The error names namespace/key but never the value."""
        with pytest.raises(RenderError, match="ns/k") as caught:
            render_entry("ns", "k", {"a": "sk-SECRET\x00"}, Format.DOTENV)
        assert "sk-SECRET" not in caught.value.detail


CONTEXT: dict[str, Any] = {
    "configs": {"web": {"upstream": {"host": "10.0.0.1", "port": 8080, "token": "sk-SECRET"}}},
    "revision": 12,
}


class TestTemplates:
    def test_renders_values(self) -> None:
        """A template sees the values it is given and renders them, keeping the trailing newline."""
        tmpl = Template(
            "nginx.conf",
            "# rev {{ revision }}\nupstream app { server {{ configs.web.upstream.host }}:"
            "{{ configs['web']['upstream'].port }}; }\n{{ configs.web | tojson }}\n",
        )
        spec = tmpl.render(CONTEXT)
        assert spec.path == "nginx.conf"
        lines = spec.content.decode().splitlines()
        assert lines[:2] == ["# rev 12", "upstream app { server 10.0.0.1:8080; }"]
        assert json.loads(lines[2]) == CONTEXT["configs"]["web"]
        assert spec.content.endswith(b"\n")

    def test_safe_filters_available(self) -> None:
        """A few pure filters work: toyaml, default, join, upper, sort, dictsort."""
        tmpl = Template("x", "{{ v | toyaml }}{{ m | default('d') }} {{ l | sort | join(',') | upper }}")
        out = tmpl.render({"v": {"b": 1}, "m": None, "l": ["b", "a"]}).content.decode()
        assert out == "b: 1\nNone A,B"

    def test_undefined_is_an_error_with_line(self) -> None:
        """StrictUndefined: a missing value fails, naming template and line."""
        with pytest.raises(RenderError, match=r"template t.conf line 3: undefined: 'nope' is undefined"):
            Template("t.conf", "a\nb\n{{ nope }}\n").render(CONTEXT)

    def test_missing_attribute_is_an_error(self) -> None:
        """A missing attribute is an error too, not an empty string."""
        with pytest.raises(RenderError, match="has no attribute 'missing'"):
            Template("t", "{{ configs.web.missing }}").render(CONTEXT)

    def test_syntax_error_at_compile_time(self) -> None:
        """Templates are compiled once, up front; a syntax error names the line."""
        with pytest.raises(RenderError, match=r"template t line 2: syntax error"):
            Template("t", "ok\n{% if %}\n")

    def test_output_name_validated(self) -> None:
        """A template's output name follows the same path rules as every managed file."""
        with pytest.raises(InvalidInput, match="template output name"):
            Template("../../etc/cron.d/x", "")

    def test_deterministic(self) -> None:
        """Rendering the same context twice gives the same bytes (no random filter)."""
        tmpl = Template("t", "{{ configs | tojson }}{{ configs | dictsort }}")
        assert tmpl.render(CONTEXT).content == tmpl.render(CONTEXT).content
        with pytest.raises(RenderError, match="No filter named 'random'"):
            Template("t", "{{ [1, 2] | random }}")


MALICIOUS = [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "not allowed in the sandbox"),
    ("{{ configs.__class__ }}", "not allowed in the sandbox"),
    ("{{ cycler.__init__.__globals__.os.environ }}", "not allowed|undefined"),
    ("{{ cycler }}", "'cycler' is undefined"),
    ("{{ lipsum.__globals__['os'] }}", "undefined"),
    ("{{ joiner() }}{{ namespace() }}", "undefined"),
    ("{{ range(10) | list }}", "'range' is undefined"),
    ("{{ self.__init__.__globals__ }}", "not allowed in the sandbox"),
    ("{{ self._TemplateReference__context }}", "not allowed in the sandbox"),
    ("{{ open('/etc/passwd').read() }}", "'open' is undefined"),
    ("{{ os.environ }}", "'os' is undefined"),
    ("{{ environ['HOME'] }}", "'environ' is undefined"),
    ("{{ config.__class__ }}", "not allowed in the sandbox"),
    ("{% include '/etc/passwd' %}", "no loader"),
    ("{% import '/etc/passwd' as p %}", "no loader"),
    ("{% extends '/etc/passwd' %}", "no loader"),
    ("{{ configs.update({'x': 1}) }}", "not allowed in the sandbox"),
    ("{{ configs.web.upstream.pop('host') }}", "not allowed in the sandbox"),
    ("{{ '{0.__class__.__mro__}'.format(configs) }}", "not allowed in the sandbox"),
    ("{{ configs | attr('__class__') }}", "No filter named 'attr'"),
    ("{{ 'x' * 100000000 }}", r"'\*' would build"),
    ("{{ 9 ** 9999999 }}", "exponent"),
    ("{{ configs.web.upstream.token.__len__() }}", "not allowed in the sandbox"),
]


class TestSandbox:
    @pytest.mark.parametrize(("source", "expected"), MALICIOUS)
    def test_escape_attempt_fails_clearly(self, source: str, expected: str) -> None:
        """Each known escape or resource trick fails with a RenderError that says why."""
        with pytest.raises(RenderError, match=expected) as caught:
            Template("evil.conf", source).render(CONTEXT)
        assert caught.value.detail.startswith("template evil.conf")

    def test_host_environment_is_not_visible(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A variable set in the agent's environment cannot be reached by name from a template."""
        monkeypatch.setenv("LLMCM_SANDBOX_PROBE", "leaked")
        for source in ("{{ LLMCM_SANDBOX_PROBE }}", "{{ env.LLMCM_SANDBOX_PROBE }}"):
            with pytest.raises(RenderError, match="undefined"):
                Template("t", source).render(CONTEXT)

    def test_errors_never_quote_a_value(self) -> None:
        """An error whose message would quote a value (a secret used as a key) is withheld."""
        with pytest.raises(RenderError) as caught:
            Template("t", "{{ configs.web[configs.web.upstream.token] }}").render(CONTEXT)
        assert "sk-SECRET" not in caught.value.detail
        assert "withheld" in caught.value.detail
        for source in (
            "{{ configs.web.upstream.token | int + 'x' }}",
            "{{ (configs.web.upstream.token)() }}",
            "{{ configs.web.upstream.token - 1 }}",
            "{{ configs.web.upstream[configs.web.upstream.token] }}",
        ):
            with pytest.raises(RenderError) as caught:
                Template("t", source).render(CONTEXT)
            assert "sk-SECRET" not in caught.value.detail

    def test_values_are_not_mutated(self) -> None:
        """The sandbox is immutable: after rendering, the context is unchanged."""
        context = {"v": {"a": [1]}}
        with pytest.raises(RenderError):
            Template("t", "{{ v.a.append(2) }}").render(context)
        assert context == {"v": {"a": [1]}}

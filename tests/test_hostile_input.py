"""Issue 8, test 1: hostile values for every provision flag and every spec key are refused with
exit 2 and a message naming the value (or the flag/key), and nothing under the state dir changes.

Flags and keys are found from the CLI and the spec schema (provision's Click parameters,
spec.SECTIONS, spec.KERNEL_KEYS), so a new flag or key is covered without editing this file.
Most runs are in-process (click.testing.CliRunner) for speed; with two tripwires on the first
write (provision's prepare_state_dir, the deployment lock) so that a value wrongly accepted
fails the test instead of provisioning. The state dir comparison is a real snapshot of the
files either way. A few runs go through the real `python -m deploykit` for the one-line output.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import dk, free_ports, tree_snapshot

from deploykit import provision as provision_mod
from deploykit import spec as spec_mod
from deploykit.cli import AbsPath, Checked, cli

pytestmark = pytest.mark.real

PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Refused by every flag and every key that is not free text: each ends or escapes something in
# nginx, supervisor or Python config or in a shell, hides itself, or cannot be a single line.
BREAKERS = [";", "{", "}", "$", "${x}", "'", '"', "`", "#", "\\", "\n", "\r", "\t", "\x00", " ",
            "\u202e", "\u200b", "\u00ad", "\u2028", "\x1b[2J"]
UNIVERSAL = [f"a{b}b" for b in BREAKERS] + [
    "a;b}", "x; include /etc/shadow;", "$(id)", "`id`", "'; DROP TABLE x; --", '"}\nserver {', "a" * 5000 + ";",
    "exаmple .test", "\u202etset.retypuj", "jupy\u200bter.test ", "\x00", "--help;",
]
# Extras refused by one kind of value: look-alikes, traversal, ranges, leading dashes.
BY_KIND = {
    "domain": ["-rf", "--help", "-a.test", "a-.test", "a" * 64 + ".test", ("a" * 60 + ".") * 5 + "test",
               "exаmple.test", "аррӏе.test", "jupy\u00adter.test", "fe80::1%eth0", "fe80::1%;}", "../etc", "[::1]",
               "a..b", "127.1", "☃.net", "xn--zz.test", "*.example.com"],
    "port": ["0", "65536", "-1", "²", "٣", "80.0", "1e3", "0x50", "99999999999999999999", "-rf"],
    "base URL": ["jupyter/", "/a/../b/", "../", "/./", "/%2e%2e/", "-rf", "/a/%0a/"],
    "user": ["-rf", "Root", "a" * 33, "../x", "0day", "a:b"],
    "email": ["-x@example.org", "a@localhost", "a@b@example.org", "a.@example.org", "@example.org", "a@../x"],
    "size": ["-1", "1t", "1e3", "1g;", "nan", "１g"],
    "seconds": ["-1", "1e9", "99999999999", "nan", "²"],
    "rate": ["0r/s", "10r/h", "-1r/s", "10 r/s"],
    "url": ["http://evil.example/", "https://x.org:99999/", "https://-x.org/", "file:///etc/passwd", "../", "-rf"],
    "memory": ["-1G", "2GB", "0G", "nan", "1e9G"],
    "cpus": ["-1", "nan", "inf", "1e999", "2000", "1,5"],
    "path": ["/srv/../etc", "/a:b", "/a b", "/a/~root", "/" + "a" * 1100],
    "choice": ["-rf", "--help", "NOTEBOOK", "notebook;", "../", "hub "],
    "filename": [],
}


def kind(param: click.Parameter) -> str:
    t = param.type
    if isinstance(t, Checked):
        return t.name
    if isinstance(t, AbsPath):
        return "path"
    if isinstance(t, click.Choice):
        return "choice"
    if isinstance(t, click.File):
        return "filename"
    raise AssertionError(f"{param.opts[0]}: no hostile corpus for a {type(t).__name__} flag; add one here")


def value_flags() -> list[click.Option]:
    """Every provision flag that takes a value (on/off flags have none to make hostile)."""
    return [p for p in cli.commands["provision"].params
            if isinstance(p, click.Option) and not p.is_flag and not p.count]


def flag_cases() -> list[tuple[str, str, str]]:
    out = []
    for p in value_flags():
        for value in UNIVERSAL + BY_KIND[kind(p)]:
            out.append((p.opts[0], kind(p), value))
    return out


class Tripwire(AssertionError):
    pass


@pytest.fixture(autouse=True)
def tripwires(monkeypatch):
    """A value that got past validation must fail the test before anything is written."""

    def refuse(*args, **kwargs):
        raise Tripwire("a hostile value got past validation: provision/reload went on to write")

    monkeypatch.setattr(provision_mod, "prepare_state_dir", refuse)
    monkeypatch.setattr(provision_mod, "deployment_lock", refuse)


def run(args: list, input: str = "", env: dict | None = None):
    """The CLI in-process, the way `deploykit` runs it (DEPLOYKIT_* variables cleared)."""
    clean = {k: None for k in os.environ if k.startswith("DEPLOYKIT_")}
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, env={**clean, **(env or {})})


def assert_refused(res, value: str, *names: str) -> None:
    out = res.output
    assert not isinstance(res.exception, Tripwire), f"{value!r} was accepted:\n{out}"
    assert res.exit_code == 2, f"{value!r}: exit {res.exit_code}, {res.exception!r}\n{out}"
    shown = [repr(value)[1:-1][:30], value[:30]]
    assert any(s in out for s in shown) or any(n in out for n in names), (
        f"message names neither {value!r} nor {names}:\n{out}")


# Only paths the daemons write while running; everything deploykit writes must stay as it was.
VOLATILE = ("logs", "run", "nginx/tmp", "notebooks")


def snapshot(state_dir: Path) -> dict:
    skip = tuple(str(state_dir / v) for v in VOLATILE)
    return {p: s for p, s in tree_snapshot(state_dir).items() if not p.startswith(skip)}


# -- flags: a fresh state dir is never created --------------------------------------------------

@pytest.fixture(scope="module")
def fresh_args(tmp_path_factory):
    state = tmp_path_factory.mktemp("fresh") / "state"
    http_port, https_port = free_ports(2)
    return state, ["provision", "--target", "local", "--state-dir", state, "--domain", "jupyter.test",
                   "--http-port", http_port, "--https-port", https_port]


def _flag_args(base: list, flag: str, value: str) -> list:
    # Later occurrences of a flag win in Click, so the hostile one goes last.
    return [*base, flag, value]


@pytest.mark.parametrize("flag,kind_,value", flag_cases(), ids=[f"{f}-{k}-{i}" for i, (f, k, _) in enumerate(flag_cases())])
def test_hostile_flag_value_is_refused_and_creates_nothing(fresh_args, flag, kind_, value):
    state, base = fresh_args
    # A hostile --state-dir or --root is itself a place that must not be created.
    existed = _exists(value) if flag in ("--state-dir", "--root") else None
    res = run(_flag_args(base, flag, value))
    assert_refused(res, value, flag)
    assert not state.exists()
    assert existed is None or _exists(value) == existed


def _exists(value: str) -> bool:
    try:
        return Path(os.path.abspath(value)).exists()
    except (OSError, ValueError):  # too long, or a NUL: nothing can be there
        return False


@PROPERTY
@given(data=st.data())
def test_property_any_flag_with_a_breaking_character_is_refused(fresh_args, data):
    state, base = fresh_args
    p = data.draw(st.sampled_from(value_flags()), label="flag")
    breaker = data.draw(st.sampled_from(BREAKERS), label="breaker")
    prefix = data.draw(st.sampled_from(["jupyter.test", "/srv/x", "8443", "a@example.org", "10r/m", "1g",
                                        "notebook", "2G", "1.5", ""]), label="prefix")
    suffix = data.draw(st.text(alphabet="abc./-_0123456789", max_size=10), label="suffix")
    value = data.draw(st.sampled_from([prefix + breaker + suffix, breaker + prefix, prefix + suffix + breaker]))
    res = run(_flag_args(base, p.opts[0], value))
    assert_refused(res, value, p.opts[0])
    assert not state.exists()


def test_hostile_state_dir_from_the_environment_is_refused(tmp_path):
    target = tmp_path / "a;b"
    res = run(["provision", "--target", "local", "--domain", "jupyter.test"],
              env={"DEPLOYKIT_STATE_DIR": str(target)})
    assert_refused(res, str(target), "--state-dir")
    assert not target.exists()


# -- flags: an existing deployment is left as it was --------------------------------------------

def test_hostile_flags_leave_an_existing_deployment_unchanged(notebook):
    before = snapshot(notebook.state_dir)
    failures = []
    for flag, kind_, value in flag_cases():
        if flag in ("--state-dir",):
            continue
        res = run(["provision", "--state-dir", notebook.state_dir, flag, value])
        try:
            assert_refused(res, value, flag)
        except AssertionError as exc:
            failures.append(str(exc)[:300])
    assert not failures, "\n".join(failures[:10])
    assert snapshot(notebook.state_dir) == before


# -- spec keys: deploykit.toml edited by hand, then `deploykit reload` ---------------------------

# Keys whose values are shown to people and written only as JSON strings: ';', quotes and braces
# are fine there; invisible, control and line-breaking characters are not. A new free-text key
# must be listed here on purpose.
FREE_TEXT = {"kernels.display_name", "deployment.default_kernel_display_name"}
FREE_TEXT_HOSTILE = ["a\nb", "a\rb", "a\x00b", "\u202eabc", "a\u200bb", "a\u2028b", "\x1b[2Jx", "x" * 101]


def spec_keys() -> list[tuple[str, str, spec_mod.Key]]:
    out = [(section, name, key) for section, keys in spec_mod.SECTIONS.items() for name, key in keys.items()]
    out += [("kernels", name, key) for name, key in spec_mod.KERNEL_KEYS.items()]
    return out


def hostile_spec_values(section: str, name: str, key: spec_mod.Key) -> list:
    if f"{section}.{name}" in FREE_TEXT:
        values = list(FREE_TEXT_HOSTILE)
    else:
        values = UNIVERSAL[:24] + ["-rf", "../../etc/passwd", "/srv/../etc", "exаmple.test"]
    values += [{"a": 1}, [[1]]]
    if isinstance(key.default, tuple):          # lists of values: the hostile one inside the list
        values += [[v] for v in values if isinstance(v, str)]
    elif not isinstance(key.default, bool):
        values += [True]
    if isinstance(key.default, (int, float)) and not isinstance(key.default, bool):
        values += [-1, 2**62, "8O", "1e3"] + ([1.5] if isinstance(key.default, int) else [])
    return values


def toml_value(value) -> str:
    """Any value as TOML, hostile characters escaped the way an editor would have to write them."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_value(k)} = {toml_value(x)}" for k, x in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(x) for x in value) + "]"
    if isinstance(value, str):
        # TOML basic strings: controls (DEL too) only as \uXXXX escapes.
        return '"' + "".join("\\" + c if c in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F
                             else c for c in value) + '"'
    return spec_mod._toml_value(value)


def write_spec_with(path: Path, original: str, section: str, name: str, value) -> None:
    """The deployment's own spec with one key set to value, written as valid TOML."""
    data = tomllib.loads(original)
    lines = []
    for sec, keys in data.items():
        if sec == "kernels":
            continue
        lines.append(f"[{sec}]")
        for k, x in keys.items():
            if not (sec == section and k == name):
                lines.append(f"{k} = {toml_value(x)}")
        if sec == section:
            lines.append(f"{name} = {toml_value(value)}")
    if section not in data and section != "kernels":
        lines += [f"[{section}]", f"{name} = {toml_value(value)}"]
    if section == "kernels":
        kernel = {"name": "other", "python": sys.executable, "display_name": "Other"}
        kernel[name] = value
        lines.append("[[kernels]]")
        lines += [f"{k} = {toml_value(x)}" for k, x in kernel.items()]
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # the test writes valid TOML: the refusal must come from validation
    path.write_text(text)


def spec_cases():
    return [(s, n, v) for s, n, k in spec_keys() for v in hostile_spec_values(s, n, k)]


def _named(section: str, name: str) -> str:
    return f"kernels[0].{name}" if section == "kernels" else f"{section}.{name}"


@pytest.fixture
def spec_file(notebook):
    path = notebook.state_dir / "deploykit.toml"
    original = path.read_text()
    yield path, original
    path.write_text(original)


def test_every_spec_key_refuses_hostile_values_on_reload(notebook, spec_file):
    path, original = spec_file
    failures = []
    # One snapshot around the whole sweep (the spec file put back first): a file changed by any
    # case stays changed. The property test below compares around every single run.
    before = snapshot(notebook.state_dir)
    for section, name, value in spec_cases():
        write_spec_with(path, original, section, name, value)
        res = run(["reload", "--state-dir", notebook.state_dir])
        try:
            assert_refused(res, value if isinstance(value, str) else "\x00unused", _named(section, name))
        except AssertionError as exc:
            failures.append(f"{section}.{name} = {value!r}: {str(exc)[:300]}")
    path.write_text(original)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:15])
    assert snapshot(notebook.state_dir) == before


@PROPERTY
@given(data=st.data())
def test_property_spec_keys_refuse_breaking_characters(notebook, spec_file, data):
    path, original = spec_file
    section, name, key = data.draw(st.sampled_from(spec_keys()), label="key")
    breakers = [b for b in BREAKERS if not b.isprintable()] if f"{section}.{name}" in FREE_TEXT else BREAKERS
    value = data.draw(st.builds(lambda a, b, c: a + b + c, st.text(alphabet="abc/.-_01", max_size=8),
                                st.sampled_from(breakers), st.text(max_size=8)), label="value")
    if isinstance(key.default, tuple):
        value = [value]
    write_spec_with(path, original, section, name, value)
    before = snapshot(notebook.state_dir)
    res = run(["reload", "--state-dir", notebook.state_dir])
    assert_refused(res, value if isinstance(value, str) else value[0], _named(section, name))
    assert snapshot(notebook.state_dir) == before


def test_unknown_sections_and_keys_are_refused(notebook, spec_file):
    path, original = spec_file
    for text, named in ((original + '\n["evil;{}"]\nx = 1\n', "[evil;{}]"),
                        (original.replace("[http]\n", '[http]\n"a;b" = 1\n', 1), "http.a;b")):
        path.write_text(text)
        before = snapshot(notebook.state_dir)
        res = run(["reload", "--state-dir", notebook.state_dir])
        assert res.exit_code == 2, res.output
        assert named in res.output
        assert snapshot(notebook.state_dir) == before


# -- the real command line: one line on stderr, exit 2 -------------------------------------------

def test_real_cli_prints_one_line_naming_the_flag(tmp_path):
    state = tmp_path / "state"
    for flag, value in (("--domain", "a;b.test"), ("--base-url", "/a/../b/"), ("--notebook-dir", "/srv/x;y"),
                        ("--mode", "hub;"), ("--password-file", "no\nsuch"), ("--login-rate-limit", "1r/h"),
                        ("--mem-limit", "2G;"), ("--cpu-limit", "nan"), ("--email", "-x@example.org")):
        res = dk("provision", "--target", "local", "--state-dir", state, "--domain", "jupyter.test", flag, value)
        assert res.returncode == 2, (flag, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert flag in res.stderr
    assert not state.exists()


def test_real_cli_refuses_undecodable_bytes_in_argv(tmp_path):
    state = tmp_path / "state"
    res = subprocess.run([sys.executable, "-m", "deploykit", "provision", "--target", "local", "--state-dir",
                          str(state), "--domain", b"jup\xffyter.test"], capture_output=True, text=True, input="")
    assert res.returncode == 2, res.stderr
    assert "--domain" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not state.exists()


def test_real_reload_names_the_spec_key_in_one_line(notebook, spec_file):
    path, original = spec_file
    write_spec_with(path, original, "http", "base_url", '/a";\n}\nserver {\n')
    before = snapshot(notebook.state_dir)
    res = notebook.dk("reload")
    assert res.returncode == 2, res.stderr
    assert "http.base_url" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert snapshot(notebook.state_dir) == before

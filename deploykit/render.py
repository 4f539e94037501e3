"""Render configuration files from templates. Pure: values in, text out.

Jinja2 runs with StrictUndefined so a missing value is an error, not an empty string. Values
have been validated before they get here; the filters below only serialise (Python literals)
or assert that a value is safe where it lands, they never escape after the fact.
"""

from __future__ import annotations

import functools
import re

import jinja2

_SUPERVISOR_SAFE = re.compile(r'^[^"%,\n\r\x00;]*$')


class UnsafeValue(AssertionError):
    """A value reached a template without having been validated: a bug, not bad input."""


def _py(value: object) -> str:
    if isinstance(value, (str, int, float, bool, type(None))):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_py(x) for x in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_py(k)}: {_py(x)}" for k, x in value.items()) + "}"
    raise UnsafeValue(f"cannot write {type(value).__name__} as a Python literal")


def _supervisor(value: object) -> str:
    text = str(value)
    if not _SUPERVISOR_SAFE.match(text):
        raise UnsafeValue(f"unsafe value for a supervisor config: {text!r}")
    return text


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("deploykit", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["py"] = _py
    env.filters["supervisor"] = _supervisor
    return env


def render_template(template: str, /, **values: object) -> str:
    return environment().get_template(template).render(**values)


def render_program(name: str, description: str, command: list[str], directory: str,
                   environment_vars: dict[str, str], log: str, user: str = "",
                   startsecs: int = 5, stopwaitsecs: int = 30) -> str:
    """A supervisor [program:x] section. The command is a list, joined only after each part is checked."""
    for part in [name, *command, directory, log, user, *environment_vars, *environment_vars.values()]:
        _supervisor(part)
        if " " in part and part not in environment_vars.values():
            raise UnsafeValue(f"space in a supervisor command part: {part!r}")
    return render_template(
        "supervisor/program.conf.j2", name=name, description=description, command=" ".join(command),
        directory=directory, environment=sorted(environment_vars.items()), log=log, user=user,
        startsecs=startsecs, stopwaitsecs=stopwaitsecs,
    )

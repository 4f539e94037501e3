"""The deployment's spec (deploykit.toml): schema, defaults, loading, merging and writing.

Pure: parsing and dumping take and return text and plain values. The schema is declared once
(SECTIONS) and used for validation, for the defaults and for the writer, the way TLJH keeps
literal defaults and lays the operator's choices over them without mutation.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tomllib
from typing import Any, Callable

from deploykit import validate as v
from deploykit.errors import BadInput


@dataclasses.dataclass(frozen=True)
class Key:
    check: Callable[[object], object]
    default: object
    help: str = ""


# A spec key that has no default must be given (only deployment.domain).
REQUIRED = object()

SECTIONS: dict[str, dict[str, Key]] = {
    "deployment": {
        "domain": Key(v.domain, REQUIRED, "public DNS name (or IP) the deployment is served at"),
        "mode": Key(v.one_of("notebook", "hub"), "notebook", "single-user Notebook or multi-user JupyterHub"),
        "target": Key(v.one_of("local", "system"), "local", "local: all under the state dir; system: /etc layout"),
        "user": Key(v.username, "jupyter", "system target: the service user Jupyter runs as (notebook mode)"),
        "python": Key(v.optional_path, "", "Python of the Jupyter environment ('' = deploykit's own)"),
        "default_kernel_display_name": Key(v.optional_display_name, "",
                                           "name shown for that environment's own kernel, python3 ('' = Jupyter's)"),
    },
    "http": {
        "http_port": Key(v.port, 80, "plain HTTP port (ACME challenges and the redirect to HTTPS)"),
        "https_port": Key(v.port, 443, "HTTPS port"),
        "base_url": Key(v.base_url, "/", "URL prefix Jupyter is served under"),
        "upload_limit": Key(v.size, "1g", "largest request body (notebook uploads), nginx size syntax"),
        "login_rate_limit": Key(v.rate, "", "login attempts per client, e.g. 10r/m ('' = unlimited)"),
        "static_assets": Key(v.boolean, True, "let nginx serve JupyterLab's static files itself"),
        "extra_directives": Key(v.list_of(v.nginx_directive), (), "extra simple nginx directives for the HTTPS server"),
    },
    "tls": {
        "mode": Key(v.one_of("self-signed", "letsencrypt", "manual", "off"), "self-signed", "where the certificate comes from"),
        "email": Key(lambda x: "" if x == "" else v.email(x), "", "ACME account contact"),
        "staging": Key(v.boolean, False, "use Let's Encrypt's staging server"),
        "acme_server": Key(v.url, "", "ACME directory URL ('' = Let's Encrypt)"),
        "acme_ca_bundle": Key(v.optional_path, "", "CA bundle to trust the ACME server with"),
        "cert": Key(v.optional_path, "", "manual: certificate chain file"),
        "key": Key(v.optional_path, "", "manual: private key file"),
    },
    "notebook": {
        "notebook_dir": Key(v.optional_path, "", "directory Jupyter serves ('' = <state dir>/notebooks)"),
        "default_url": Key(v.one_of("/lab", "/tree"), "/lab", "page opened after login"),
    },
    "hub": {
        "authenticator": Key(v.one_of("pam", "native", "shared-password"), "pam", "how users log in"),
        "admins": Key(v.list_of(v.username), (), "admin user names"),
        "allowed_users": Key(v.list_of(v.username), (), "user names allowed to log in"),
        "allow_all": Key(v.boolean, False, "allow every user the authenticator accepts"),
        "idle_timeout": Key(v.duration, 3600, "seconds before an idle server is culled (0 = never)"),
        "default_url": Key(v.one_of("/lab", "/tree"), "/lab", "page opened after spawn"),
        "spawner": Key(v.one_of("localprocess", "systemd", "docker"), "localprocess", "how user servers are started"),
        "mem_limit": Key(v.memory, "", "per-user memory limit, e.g. 2G"),
        "cpu_limit": Key(v.cpu, 0.0, "per-user CPU limit (0 = none)"),
        "docker_image": Key(v.docker_image, "quay.io/jupyter/base-notebook:latest", "docker spawner: user image"),
        "docker_network": Key(v.identifier, "jupyterhub", "docker spawner: network name"),
    },
    "internal": {
        "jupyter_port": Key(v.internal_port, 0, "loopback port of Jupyter Server (0 = pick)"),
        "hub_port": Key(v.internal_port, 0, "loopback port of the hub (0 = pick)"),
        "proxy_port": Key(v.internal_port, 0, "loopback port of configurable-http-proxy (0 = pick)"),
        "proxy_api_port": Key(v.internal_port, 0, "loopback port of the proxy's REST API (0 = pick)"),
    },
}

KERNEL_KEYS: dict[str, Key] = {
    "name": Key(v.kernel_name, REQUIRED),
    "python": Key(v.abs_path, REQUIRED),
    "display_name": Key(v.display_name, REQUIRED),
    # Web interfaces list kernels by display name; an order becomes a "N. " prefix there.
    "order": Key(v.kernel_order, 0),
}

LOCAL_DEFAULTS = {"http": {"http_port": 8080, "https_port": 8443}}


def _freeze(value):
    return tuple(value) if isinstance(value, list) else value


class Spec:
    """A validated spec: read-only attribute access by section, e.g. spec.http.base_url."""

    def __init__(self, data: dict[str, Any]):
        object.__setattr__(self, "_data", data)
        for section, values in data.items():
            if section != "kernels":
                object.__setattr__(self, section, _Section(values))
        object.__setattr__(self, "kernels", tuple(_Section(k) for k in data.get("kernels", ())))

    def __setattr__(self, name, value):
        raise AttributeError("Spec is read-only; use with_values()")

    def as_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def with_values(self, changes: dict[str, dict[str, Any]]) -> "Spec":
        return build_spec(merge(self.as_dict(), changes), source="spec")

    def __eq__(self, other):
        return isinstance(other, Spec) and self._data == other._data


class _Section:
    def __init__(self, values: dict[str, Any]):
        self.__dict__.update(values)

    def __setattr__(self, name, value):
        raise AttributeError("read-only")


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A new dict: over's sections laid key by key over base's. Neither input is changed."""
    out = copy.deepcopy(base)
    for section, values in over.items():
        if section == "kernels":
            out["kernels"] = copy.deepcopy(values)
            continue
        target = out.setdefault(section, {})
        if not isinstance(values, dict) or not isinstance(target, dict):
            out[section] = copy.deepcopy(values)
            continue
        for key, value in values.items():
            target[key] = copy.deepcopy(value)
    return out


def _check(where: str, key: Key, value: object) -> object:
    try:
        return _freeze(key.check(value))
    except v.Invalid as exc:
        raise BadInput(where, value, str(exc)) from None


def build_spec(raw: dict[str, Any], source: str = "deploykit.toml") -> Spec:
    """Validate raw values (as parsed from TOML or given by flags) over the defaults."""
    if not isinstance(raw, dict):
        raise BadInput(source, raw, "expected a table")
    for section in raw:
        if section not in SECTIONS and section != "kernels":
            raise BadInput(f"{source}: [{section}]", section,
                           "unknown section; expected one of: " + ", ".join([*SECTIONS, "kernels"]))
    target = raw.get("deployment", {}).get("target", "local") if isinstance(raw.get("deployment"), dict) else "local"
    data: dict[str, Any] = {}
    for section, keys in SECTIONS.items():
        given = raw.get(section, {})
        if not isinstance(given, dict):
            raise BadInput(f"{source}: [{section}]", given, "expected a table")
        for name in given:
            if name not in keys:
                raise BadInput(f"{source}: {section}.{name}", name,
                               "unknown key; expected one of: " + ", ".join(keys))
        values = {}
        for name, key in keys.items():
            if name in given:
                values[name] = _check(f"{source}: {section}.{name}", key, given[name])
            elif key.default is REQUIRED:
                raise BadInput(f"{source}: {section}.{name}", "", "required")
            else:
                default = LOCAL_DEFAULTS.get(section, {}).get(name, key.default) if target == "local" else key.default
                values[name] = _freeze(default)
        data[section] = values
    kernels = raw.get("kernels", [])
    if not isinstance(kernels, list):
        raise BadInput(f"{source}: kernels", kernels, "expected an array of tables ([[kernels]])")
    data["kernels"] = [_build_kernel(source, i, k) for i, k in enumerate(kernels)]
    names = [k["name"] for k in data["kernels"]]
    for name in names:
        if names.count(name) > 1:
            raise BadInput(f"{source}: kernels.name", name, "used by more than one kernel; names must be unique")
    _check_consistency(source, data)
    return Spec(data)


def _build_kernel(source: str, index: int, raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadInput(f"{source}: kernels[{index}]", raw, "expected a table")
    for name in raw:
        if name not in KERNEL_KEYS:
            raise BadInput(f"{source}: kernels[{index}].{name}", name,
                           "unknown key; expected one of: " + ", ".join(KERNEL_KEYS))
    out = {}
    for name, key in KERNEL_KEYS.items():
        if name not in raw:
            if key.default is REQUIRED:
                raise BadInput(f"{source}: kernels[{index}].{name}", "", "required")
            out[name] = key.default
            continue
        out[name] = _check(f"{source}: kernels[{index}].{name}", key, raw[name])
    if out["name"] == "python3":
        raise BadInput(f"{source}: kernels[{index}].name", "python3", "is the deployment's own Python kernel; "
                       "pick another name (rename that one with deployment.default_kernel_display_name)")
    return out


def _check_consistency(source: str, data: dict[str, Any]) -> None:
    """Rules that involve more than one key."""
    http, tls, dep = data["http"], data["tls"], data["deployment"]
    if http["http_port"] == http["https_port"]:
        raise BadInput(f"{source}: http.https_port", http["https_port"], "must differ from http.http_port")
    if tls["mode"] == "off" and not v.is_local_name(dep["domain"]):
        raise BadInput(f"{source}: tls.mode", "off",
                       f"plain HTTP is allowed only for local names such as localhost or *.test, not {dep['domain']!r}")
    if tls["mode"] == "manual" and not (tls["cert"] and tls["key"]):
        raise BadInput(f"{source}: tls.cert", tls["cert"], "tls.mode 'manual' needs both tls.cert and tls.key")
    if tls["mode"] == "letsencrypt":
        if not tls["email"]:
            raise BadInput(f"{source}: tls.email", "", "tls.mode 'letsencrypt' needs an e-mail address (--email)")
        if v.is_ip(dep["domain"]):
            raise BadInput(f"{source}: deployment.domain", dep["domain"],
                           "Let's Encrypt does not certify IP addresses here; use a DNS name or --tls self-signed")


def parse_spec(text: str, source: str = "deploykit.toml") -> Spec:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(source, "", f"not valid TOML: {exc}") from None
    return build_spec(raw, source)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are a subset of TOML basic-string escapes.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_spec(spec: Spec) -> str:
    """TOML text for the spec, every key written with a comment saying what it does."""
    data = spec.as_dict()
    lines = [
        "# deploykit deployment spec. Edit, then run `deploykit plan` to see the effect",
        "# and `deploykit reload` to apply it. Unknown keys and bad values are refused.",
    ]
    for section, keys in SECTIONS.items():
        lines += ["", f"[{section}]"]
        for name, key in keys.items():
            if key.help:
                lines.append(f"# {key.help}")
            lines.append(f"{name} = {_toml_value(data[section][name])}")
    for kernel in data.get("kernels", []):
        lines += ["", "[[kernels]]"]
        lines += [f"{name} = {_toml_value(kernel[name])}" for name, key in KERNEL_KEYS.items()
                  if key.default is REQUIRED or kernel[name] != key.default]
    return "\n".join(lines) + "\n"

"""`deploykit export z2jh`: Helm values for Zero to JupyterHub equivalent to the spec.

Pure tests on the mapping (no daemons): the values, merged over the chart's own defaults, must
validate against the chart's own schema (../shared/data/z2jh); each setting with an equivalent
lands where the chart reads it; the rest is reported. The CLI runs for real in a subprocess.
"""

from __future__ import annotations

import itertools
import stat

import jsonschema
import pytest
import yaml

from deploykit import certs, hub
from deploykit.errors import BadInput
from deploykit.export import (AUTHENTICATOR_CLASSES, LETSENCRYPT_STAGING, MAPPING, ExportSecrets,
                              build_z2jh_values, render_z2jh_values)
from deploykit.materials import self_signed_paths
from deploykit.paths import local_paths
from deploykit.spec import SECTIONS, build_spec, dump_spec, merge
from support import SHARED, dk

Z2JH = SHARED / "data" / "z2jh"
CHART_DEFAULTS = yaml.safe_load((Z2JH / "values.yaml").read_text())
VALIDATOR = jsonschema.Draft7Validator(yaml.safe_load((Z2JH / "values.schema.yaml").read_text()))

PUBLIC, LOCAL = "jupyter.example.org", "jupyter.test"
CERT, KEY = (pem.decode() for pem in certs.make_self_signed(PUBLIC))
USER_PASSWORD, ADMIN_PASSWORD = "shared-secret-1", "a" * 40
SECRETS = ExportSecrets(CERT, KEY, USER_PASSWORD, ADMIN_PASSWORD)

TLS = {
    "off": {"deployment": {"domain": LOCAL}, "tls": {"mode": "off"}},
    "self-signed": {"tls": {"mode": "self-signed"}},
    "letsencrypt": {"tls": {"mode": "letsencrypt", "email": "ops@example.org"}},
    "manual": {"tls": {"mode": "manual", "cert": "/etc/ssl/jupyter.pem", "key": "/etc/ssl/jupyter.key"}},
}
# (spec's authenticator, --authenticator): PAM cannot be carried over without a replacement.
HUB_LOGINS = [("pam", "native"), ("pam", "shared-password"), ("native", None), ("shared-password", None)]


def make_spec(*changes: dict):
    raw = {"deployment": {"domain": PUBLIC, "target": "system"}}
    for change in changes:
        raw = merge(raw, change)
    return build_spec(raw)


def hub_spec(authenticator: str, *changes: dict):
    return make_spec({"deployment": {"mode": "hub"},
                      "hub": {"authenticator": authenticator, "admins": ["alice"], "allowed_users": ["bob"]}},
                     *changes)


def helm_merge(defaults: dict, given: dict) -> dict:
    """Helm's rule: maps merge key by key, anything else (lists too) replaces, null deletes."""
    out = dict(defaults)
    for key, value in given.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = helm_merge(out[key], value)
        else:
            out[key] = value
    return out


def get(values: dict, dotted: str):
    for part in dotted.split("."):
        values = values[part]
    return values


def exported(spec, authenticator=None, secrets=SECRETS):
    """Values as a chart would read them: rendered to YAML text and parsed back."""
    values, notes = build_z2jh_values(spec, secrets, authenticator)
    text = render_z2jh_values(values, notes, spec.deployment.domain)
    parsed = yaml.safe_load(text)
    assert parsed == values
    return parsed, notes, text


# -- 1. valid for the chart -------------------------------------------------------------------

CASES = [pytest.param(make_spec({"deployment": {"mode": "notebook"}}, TLS[tls]), login,
                      id=f"notebook-{tls}-{login}")
         for tls, login in itertools.product(TLS, ["native", "shared-password"])]
CASES += [pytest.param(hub_spec(auth, TLS[tls]), override,
                       id=f"hub-{tls}-{auth}" + (f"-as-{override}" if override else ""))
          for tls, (auth, override) in itertools.product(TLS, HUB_LOGINS)]
CASES += [pytest.param(hub_spec("native", {"hub": {"spawner": spawner, "mem_limit": "512M", "cpu_limit": 2,
                                                   "idle_timeout": 40}}), None, id=f"hub-{spawner}-limits")
          for spawner in ("localprocess", "systemd", "docker")]


@pytest.mark.parametrize("spec,authenticator", CASES)
def test_values_merged_over_chart_defaults_validate_against_its_schema(spec, authenticator):
    values, _, _ = exported(spec, authenticator)
    merged = helm_merge(CHART_DEFAULTS, values)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(merged)]
    assert not errors, "\n".join(errors)
    # The chart's own default would let anybody in with any password.
    assert get(merged, "hub.config.JupyterHub.authenticator_class") in AUTHENTICATOR_CLASSES.values()


# -- 2. each setting with an equivalent lands where the chart reads it ------------------------

BASE = [{"deployment": {"mode": "hub"}, "tls": {"mode": "letsencrypt", "email": "ops@example.org"},
         "hub": {"authenticator": "native", "admins": ["alice"]}}]
EQUIVALENTS = [
    # (spec changes, --authenticator, values path, expected value)
    ({"http": {"base_url": "/jhub/"}}, None, "hub.baseUrl", "/jhub/"),
    ({"hub": {"admins": ["alice", "bob"]}}, None, "hub.config.Authenticator.admin_users", ["alice", "bob"]),
    ({"hub": {"allowed_users": ["carol"]}}, None, "hub.config.Authenticator.allowed_users", ["carol"]),
    ({"hub": {"authenticator": "shared-password", "allowed_users": ["carol"], "allow_all": False}}, None,
     "hub.config.Authenticator.allow_all", False),
    ({"hub": {"authenticator": "shared-password", "allow_all": True}}, None,
     "hub.config.Authenticator.allow_all", True),
    ({}, None, "hub.config.JupyterHub.authenticator_class", "nativeauthenticator.NativeAuthenticator"),
    ({}, None, "hub.config.NativeAuthenticator.open_signup", False),
    ({}, None, "hub.config.NativeAuthenticator.minimum_password_length", hub.NATIVE_MIN_PASSWORD),
    ({"hub": {"authenticator": "shared-password", "allow_all": True}}, None,
     "hub.config.JupyterHub.authenticator_class", AUTHENTICATOR_CLASSES["shared-password"]),
    ({"hub": {"authenticator": "shared-password", "allow_all": True}}, None,
     "hub.config.SharedPasswordAuthenticator.user_password", USER_PASSWORD),
    ({"hub": {"authenticator": "shared-password", "allow_all": True}}, None,
     "hub.config.SharedPasswordAuthenticator.admin_password", ADMIN_PASSWORD),
    ({"hub": {"authenticator": "pam", "allow_all": True}}, "shared-password",
     "hub.config.JupyterHub.authenticator_class", AUTHENTICATOR_CLASSES["shared-password"]),
    ({"hub": {"idle_timeout": 7200}}, None, "cull.enabled", True),
    ({"hub": {"idle_timeout": 7200}}, None, "cull.timeout", 7200),
    ({"hub": {"idle_timeout": 7200}}, None, "cull.every", lambda spec: hub.cull_every(spec)),
    ({"hub": {"idle_timeout": 40}}, None, "cull.every", lambda spec: hub.cull_every(spec)),
    ({"hub": {"idle_timeout": 40}}, None, "hub.config.JupyterHub.last_activity_interval",
     lambda spec: hub.activity_interval(spec)),
    ({"hub": {"idle_timeout": 0}}, None, "cull.enabled", False),
    ({"hub": {"default_url": "/tree"}}, None, "singleuser.defaultUrl", "/tree"),
    ({"deployment": {"mode": "notebook"}, "notebook": {"default_url": "/tree"}}, "native",
     "singleuser.defaultUrl", "/tree"),
    ({"deployment": {"mode": "notebook", "user": "ada"}}, "native", "hub.config.Authenticator.allowed_users", ["ada"]),
    ({"deployment": {"mode": "notebook"}}, "native", "cull.enabled", False),
    ({"hub": {"spawner": "docker", "mem_limit": "2G"}}, None, "singleuser.memory.limit", "2G"),
    ({"hub": {"spawner": "docker", "mem_limit": "512M"}}, None, "singleuser.memory.guarantee", "512M"),
    ({"hub": {"spawner": "systemd", "cpu_limit": 1.5}}, None, "singleuser.cpu.limit", 1.5),
    ({"hub": {"spawner": "docker", "docker_image": "quay.io/jupyter/scipy-notebook:2024-05-27"}}, None,
     "singleuser.image", {"name": "quay.io/jupyter/scipy-notebook", "tag": "2024-05-27"}),
    ({"hub": {"spawner": "docker", "docker_image": "jupyter/base-notebook"}}, None,
     "singleuser.image", {"name": "jupyter/base-notebook", "tag": "latest"}),
    ({}, None, "proxy.https.enabled", True),
    ({}, None, "proxy.https.type", "letsencrypt"),
    ({}, None, "proxy.https.hosts", [PUBLIC]),
    ({}, None, "proxy.https.letsencrypt.contactEmail", "ops@example.org"),
    ({"tls": {"staging": True}}, None, "proxy.https.letsencrypt.acmeServer", LETSENCRYPT_STAGING),
    ({"tls": {"acme_server": "https://acme.example.org/directory"}}, None,
     "proxy.https.letsencrypt.acmeServer", "https://acme.example.org/directory"),
    (TLS["manual"], None, "proxy.https.type", "manual"),
    (TLS["manual"], None, "proxy.https.manual.cert", CERT),
    (TLS["manual"], None, "proxy.https.manual.key", KEY),
    (TLS["self-signed"], None, "proxy.https.manual.cert", CERT),
    (TLS["off"], None, "proxy.https.enabled", False),
]


@pytest.mark.parametrize("changes,authenticator,path,expected", EQUIVALENTS,
                         ids=[f"{row[2]}={i}" for i, row in enumerate(EQUIVALENTS)])
def test_each_setting_with_an_equivalent_appears_with_its_value(changes, authenticator, path, expected):
    spec = make_spec(*BASE, changes)
    values, _, _ = exported(spec, authenticator)
    assert get(values, path) == (expected(spec) if callable(expected) else expected)


KERNEL = {"name": "ds", "python": "/opt/ds/bin/python", "display_name": "Data science"}
NOT_CARRIED = [
    # (spec changes, --authenticator, the setting reported, text the report must name)
    ({"http": {"login_rate_limit": "10r/m"}}, None, "http.login_rate_limit", "10r/m"),
    ({"http": {"extra_directives": ["server_tokens off;"]}}, None, "http.extra_directives", "server_tokens off;"),
    ({"http": {"http_port": 8080}}, None, "http.http_port", "8080"),
    ({"http": {"https_port": 8443}}, None, "http.https_port", "8443"),
    ({"http": {"upload_limit": "2g"}}, None, "http.upload_limit", "2g"),
    ({"tls": {"acme_ca_bundle": "/etc/ssl/pebble.pem"}}, None, "tls.acme_ca_bundle", "/etc/ssl/pebble.pem"),
    ({"kernels": [KERNEL]}, None, "kernels", "/opt/ds/bin/python"),
    ({"hub": {"spawner": "docker", "docker_network": "jhub-net"}}, None, "hub.docker_network", "jhub-net"),
    ({"hub": {"spawner": "systemd"}}, None, "hub.spawner", "singleuser.image"),
    ({"deployment": {"python": "/opt/jupyter/bin/python"}}, None, "hub.spawner", "/opt/jupyter/bin/python"),
    ({"deployment": {"default_kernel_display_name": "Python (team)"}}, None,
     "deployment.default_kernel_display_name", "Python (team)"),
    ({"deployment": {"mode": "notebook", "python": "/opt/jupyter/bin/python"}}, "native", "deployment.python",
     "/opt/jupyter/bin/python"),
    ({"deployment": {"mode": "notebook"}, "notebook": {"notebook_dir": "/srv/notebooks"}}, "native",
     "notebook.notebook_dir", "/srv/notebooks"),
]


@pytest.mark.parametrize("changes,authenticator,setting,named", NOT_CARRIED, ids=[row[2] for row in NOT_CARRIED])
def test_each_setting_without_an_equivalent_is_reported(changes, authenticator, setting, named):
    _, notes, text = exported(make_spec(*BASE, changes), authenticator)
    reports = [n.text for n in notes if not n.carried and n.setting == setting]
    assert any(named in r for r in reports), reports
    header = text.split("\n\n", 1)[0]
    assert f"- {setting}:" in header and named in " ".join(line.lstrip("# ") for line in header.splitlines())


def test_nothing_else_is_reported_for_a_plain_hub():
    _, notes, _ = exported(make_spec(*BASE))
    # Users' servers ran on this machine; the upload limit is nginx's. Nothing more stays behind.
    assert {n.setting for n in notes if not n.carried} == {"hub.spawner", "http.upload_limit"}


def test_every_spec_setting_has_a_decision():
    keys = {f"{section}.{key}" for section, keys in SECTIONS.items() for key in keys} | {"kernels"}
    assert set(MAPPING) == keys


# -- refused: nothing honest to emit ----------------------------------------------------------

REFUSED = [
    (hub_spec("pam"), None, ExportSecrets(), "hub.authenticator", "--authenticator native"),
    (make_spec({"deployment": {"mode": "notebook"}}), None, SECRETS, "deployment.mode", "--authenticator"),
    (hub_spec("shared-password"), None, ExportSecrets(CERT, KEY), "--shared-password-stdin", "password"),
    (hub_spec("shared-password"), None, ExportSecrets(CERT, KEY, USER_PASSWORD), "hub.admins", "admin password"),
    (make_spec({"deployment": {"mode": "hub"}, "hub": {"allow_all": True}}), "native", SECRETS, "--authenticator",
     "approve"),
    (hub_spec("native", {"hub": {"spawner": "docker", "docker_image": "quay.io/jupyter/base-notebook@sha256:"
                                                                      + "a" * 64}}), None, SECRETS,
     "hub.docker_image", "tag"),
    (hub_spec("native"), None, ExportSecrets(), "tls.mode", "certificate"),
]


@pytest.mark.parametrize("spec,authenticator,secrets,where,why", REFUSED, ids=[row[3] for row in REFUSED])
def test_refuses_what_has_no_honest_equivalent(spec, authenticator, secrets, where, why):
    with pytest.raises(BadInput) as exc:
        build_z2jh_values(spec, secrets, authenticator)
    assert exc.value.where == where and why in exc.value.why


# -- the command ------------------------------------------------------------------------------

def write_deployment(state, *changes, self_signed=True):
    spec = make_spec({"deployment": {"target": "local"}}, *changes)
    state.mkdir(parents=True)
    (state / "deploykit.toml").write_text(dump_spec(spec))
    if self_signed:
        cert_path, key_path = self_signed_paths(local_paths(state))
        cert_path.parent.mkdir(parents=True)
        cert_path.write_text(CERT)
        key_path.write_text(KEY)
    return spec


def test_cli_writes_private_values_file(tmp_path):
    state, out = tmp_path / "state", tmp_path / "values.yaml"
    write_deployment(state, {"deployment": {"mode": "notebook"}})
    res = dk("export", "z2jh", "--state-dir", state, "--output", out, "--authenticator", "native")
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # it holds the TLS key
    values = yaml.safe_load(out.read_text())
    assert get(values, "proxy.https.manual.key") == KEY
    assert "not carried over" in res.stderr


def test_cli_prints_values_without_secrets(tmp_path):
    state = tmp_path / "state"
    write_deployment(state, {"deployment": {"mode": "hub"}, "hub": {"authenticator": "native", "admins": ["alice"]}},
                     TLS["off"], self_signed=False)
    res = dk("export", "z2jh", "--state-dir", state)
    assert res.returncode == 0, res.stderr
    assert get(yaml.safe_load(res.stdout), "hub.config.Authenticator.admin_users") == ["alice"]


def test_cli_shared_password_from_stdin(tmp_path):
    state, out = tmp_path / "state", tmp_path / "values.yaml"
    write_deployment(state, {"deployment": {"mode": "hub"}, "hub": {"allowed_users": ["bob"]}})
    res = dk("export", "z2jh", "--state-dir", state, "-o", out, "--authenticator", "shared-password",
             "--shared-password-stdin", input=USER_PASSWORD + "\n")
    assert res.returncode == 0, res.stderr
    assert get(yaml.safe_load(out.read_text()), "hub.config.SharedPasswordAuthenticator.user_password") == USER_PASSWORD
    assert USER_PASSWORD not in res.stderr + res.stdout


@pytest.mark.parametrize("args,named", [
    ((), "--authenticator native"),  # PAM users do not exist in the cluster
    (("--authenticator", "shared-password"), "--shared-password-stdin"),
    (("--shared-password-stdin",), "--shared-password-stdin"),
])
def test_cli_refusal_exits_2_and_writes_nothing(tmp_path, args, named):
    state, out = tmp_path / "state", tmp_path / "values.yaml"
    write_deployment(state, {"deployment": {"mode": "hub"}, "hub": {"allowed_users": ["bob"]}})
    res = dk("export", "z2jh", "--state-dir", state, "--output", out, *args)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and named in res.stderr
    assert not out.exists()

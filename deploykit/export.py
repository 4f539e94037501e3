"""Zero to JupyterHub (the Kubernetes Helm chart): a values file equivalent to a deployment's spec.

Pure: build_z2jh_values maps a spec, and the secrets the CLI read for it, to chart values plus
notes; render_z2jh_values writes them as YAML with the notes as comments. Each spec setting is
carried over (MAPPING says where), reported in a note when it has no equivalent, or refused
(BadInput) when the only possible output would be wrong: a hub nobody can log into, or users
who do not exist in the cluster.
"""

from __future__ import annotations

import dataclasses
import textwrap

import yaml

from deploykit import certs
from deploykit.errors import BadInput
from deploykit.spec import Spec

LETSENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
AUTHENTICATOR_CLASSES = {
    "native": "nativeauthenticator.NativeAuthenticator",
    "shared-password": "jupyterhub.authenticators.shared.SharedPasswordAuthenticator",
}
# singleuser.memory.guarantee in the chart's defaults: what the scheduler reserves per user.
CHART_MEMORY_GUARANTEE = "1G"
# The chart's proxy-public service.
CHART_PORTS = (80, 443)

# Where each spec setting goes: a values path, or why it stays behind. tests/test_export.py
# checks that this covers every key of the schema, so a new key needs a decision here.
MAPPING: dict[str, str] = {
    "deployment.domain": "proxy.https.hosts (letsencrypt); the certificate's name (manual)",
    "deployment.mode": "notebook: a hub with one user; hub: the same hub",
    "deployment.target": "none needed: the layout of this machine",
    "deployment.user": "notebook mode: the one hub user's name; hub mode: none needed",
    "deployment.python": "noted: user servers run from singleuser.image in the cluster",
    "deployment.default_kernel_display_name": "noted: belongs in the single-user image",
    "http.http_port": "noted unless 80: the proxy-public service listens on 80 and 443",
    "http.https_port": "noted unless 443: the proxy-public service listens on 80 and 443",
    "http.base_url": "hub.baseUrl",
    "http.upload_limit": "noted: the chart's proxy sets no request size limit",
    "http.login_rate_limit": "noted when set: the chart has no login rate limit",
    "http.static_assets": "none needed: an nginx optimisation; the single-user server serves its files",
    "http.extra_directives": "noted when set: nginx directives",
    "tls.mode": "proxy.https.enabled and proxy.https.type",
    "tls.email": "proxy.https.letsencrypt.contactEmail",
    "tls.staging": "proxy.https.letsencrypt.acmeServer",
    "tls.acme_server": "proxy.https.letsencrypt.acmeServer",
    "tls.acme_ca_bundle": "noted when set: the chart's Traefik trusts public CAs only",
    "tls.cert": "proxy.https.manual.cert (the file's content)",
    "tls.key": "proxy.https.manual.key (the file's content)",
    "notebook.notebook_dir": "noted (notebook mode): files are not copied",
    "notebook.default_url": "singleuser.defaultUrl (notebook mode)",
    "hub.authenticator": "hub.config.JupyterHub.authenticator_class; pam is refused without --authenticator",
    "hub.admins": "hub.config.Authenticator.admin_users",
    "hub.allowed_users": "hub.config.Authenticator.allowed_users",
    "hub.allow_all": "hub.config.Authenticator.allow_all",
    "hub.idle_timeout": "cull.enabled, cull.timeout, cull.every",
    "hub.default_url": "singleuser.defaultUrl (hub mode)",
    "hub.spawner": "noted: KubeSpawner starts a pod per user",
    "hub.mem_limit": "singleuser.memory.limit (and guarantee)",
    "hub.cpu_limit": "singleuser.cpu.limit",
    "hub.docker_image": "singleuser.image (docker spawner)",
    "hub.docker_network": "noted (docker spawner): pods share the cluster's network",
    "internal.jupyter_port": "none needed: loopback ports of this machine",
    "internal.hub_port": "none needed: loopback ports of this machine",
    "internal.proxy_port": "none needed: loopback ports of this machine",
    "internal.proxy_api_port": "none needed: loopback ports of this machine",
    "kernels": "noted: host Pythons have no meaning in a pod; install them in the single-user image",
}


@dataclasses.dataclass(frozen=True)
class ExportSecrets:
    """What the values need beyond the spec, read by the CLI (PEM text and passwords)."""

    tls_cert: str = ""        # manual: the operator's chain; self-signed: the deployment's certificate
    tls_key: str = ""
    user_password: str = ""   # shared-password authenticator
    admin_password: str = ""


@dataclasses.dataclass(frozen=True)
class Note:
    setting: str      # the spec setting it is about, e.g. "http.login_rate_limit"
    text: str
    carried: bool     # False: not carried over; True: carried, with something to know
    near: str = ""    # the top-level values key the comment sits above ("" = the file's header)


def build_z2jh_values(spec: Spec, secrets: ExportSecrets = ExportSecrets(),
                      authenticator: str | None = None) -> tuple[dict, list[Note]]:
    """Chart values equivalent to spec, and notes on what is not (BadInput when nothing honest exists).

    authenticator: what to use in the cluster instead of PAM or a Notebook password
    ("native" or "shared-password").
    """
    notes: list[Note] = []
    values: dict = {"hub": {"baseUrl": spec.http.base_url}, "proxy": {}, "singleuser": {}, "cull": {}}
    values["hub"]["config"] = _auth_config(spec, secrets, authenticator, notes)
    values["proxy"]["https"] = _https(spec, secrets, notes)
    notebook = spec.deployment.mode == "notebook"
    values["singleuser"]["defaultUrl"] = spec.notebook.default_url if notebook else spec.hub.default_url
    if notebook:
        values["cull"] = {"enabled": False}
        notes.append(Note("deployment.mode", "A Notebook server runs until it is stopped, so culling is off; "
                          "turn it on (cull.enabled, cull.timeout) to free idle pods.", True, "cull"))
        notes.append(Note("notebook.notebook_dir", f"The files in {_notebook_dir(spec)} are not copied: the user's "
                          "work lives in a volume at /home/jovyan in the cluster (singleuser.storage).", False))
    else:
        values["cull"] = _cull(spec)
        _hub_only(spec, values, notes)
    _environment_notes(spec, notes)
    _http_notes(spec, notes)
    return values, notes


def _notebook_dir(spec: Spec) -> str:
    return spec.notebook.notebook_dir or "the state directory's notebooks/"


# -- who logs in ----------------------------------------------------------------------------

def _auth_config(spec: Spec, secrets: ExportSecrets, override: str | None, notes: list[Note]) -> dict:
    from deploykit import hub

    notebook = spec.deployment.mode == "notebook"
    current = None if notebook else spec.hub.authenticator
    chosen = override or current
    if notebook and not override:
        raise BadInput("deployment.mode", "notebook", "a Notebook's password is kept only as a hash, which no Zero to "
                       "JupyterHub authenticator reads: pass --authenticator native (the user signs up again) or "
                       "--authenticator shared-password with --shared-password-stdin")
    if chosen == "pam":
        raise BadInput("hub.authenticator", "pam", "PAM logs in this machine's system accounts, which do not "
                       "exist in Kubernetes pods: pass --authenticator native (users sign up again; admins "
                       "and allowed users are approved on sign-up) or --authenticator shared-password")
    if notebook:
        # One user, as before; with no other users there is nobody to administer.
        admins: tuple = ()
        allowed: tuple = (spec.deployment.user,)
        allow_all = False
        notes.append(Note("deployment.mode", f"The Notebook becomes a hub with one user, {spec.deployment.user!r} "
                          f"(deployment.user), logging in with the {chosen} authenticator.", True, "hub"))
    else:
        admins, allowed, allow_all = spec.hub.admins, spec.hub.allowed_users, spec.hub.allow_all
        if override and override != current:
            notes.append(Note("hub.authenticator", f"The {current} authenticator is replaced by {override}, "
                              "as asked.", True, "hub"))
    config: dict = {"JupyterHub": {"authenticator_class": AUTHENTICATOR_CLASSES[chosen]}}
    if chosen == "native":
        if not (admins or allowed):
            raise BadInput("--authenticator", "native", "nobody could approve sign-ups: the spec names no admin "
                           "(hub.admins) and no allowed users (hub.allowed_users)")
        # As deploykit's hub does: approval at sign-up is the gate, every approved user may log in.
        allow_all = True
        # The same settings as deploykit's own hub gives it.
        config["NativeAuthenticator"] = dict(hub.NATIVE_AUTHENTICATOR_SETTINGS)
        notes.append(Note("hub.authenticator", "NativeAuthenticator's accounts and password hashes live in the hub's "
                          "database, which this file does not carry: users sign up again, and names in admin_users "
                          "and allowed_users are approved when they do, so sign up with those names before "
                          "anyone else can.", True, "hub"))
    else:
        if not secrets.user_password:
            raise BadInput("--shared-password-stdin", "", "the shared-password authenticator needs the password "
                           "users log in with; pass it on standard input")
        if not (allowed or allow_all):
            raise BadInput("--authenticator", "shared-password", "only admins could log in: the spec allows no "
                           "users (hub.allowed_users, hub.allow_all)")
        shared = {"user_password": secrets.user_password}
        if admins:
            if not secrets.admin_password:
                raise BadInput("hub.admins", ",".join(admins), "the shared-password authenticator lets admins in "
                               "only with an admin password, and none was given")
            shared["admin_password"] = secrets.admin_password
        config["SharedPasswordAuthenticator"] = shared
    config["Authenticator"] = {"admin_users": sorted(admins), "allowed_users": sorted(allowed),
                               "allow_all": bool(allow_all), "allow_existing_users": False}
    return config


# -- HTTPS ----------------------------------------------------------------------------------

def _https(spec: Spec, secrets: ExportSecrets, notes: list[Note]) -> dict:
    tls, domain = spec.tls, spec.deployment.domain
    if tls.mode == "off":
        notes.append(Note("tls.mode", "Plain HTTP, as on this machine (only allowed for local names): turn "
                          "proxy.https on before the hub is reachable from other machines.", True, "proxy"))
        return {"enabled": False}
    if tls.mode == "letsencrypt":
        server = tls.acme_server or (LETSENCRYPT_STAGING if tls.staging else LETSENCRYPT_PRODUCTION)
        if tls.acme_ca_bundle:
            notes.append(Note("tls.acme_ca_bundle", f"{tls.acme_ca_bundle} (the CA the ACME server's own HTTPS is "
                              "signed by) is not carried: the chart's Traefik trusts public CAs only.", False))
        return {"enabled": True, "type": "letsencrypt", "hosts": [domain],
                "letsencrypt": {"contactEmail": tls.email, "acmeServer": server}}
    if not (secrets.tls_cert and secrets.tls_key):
        raise BadInput("tls.mode", tls.mode, "the certificate and key to carry over were not read")
    if tls.mode == "self-signed":
        expires = certs.read_cert_info(secrets.tls_cert.encode()).not_after.date().isoformat()
        notes.append(Note("tls.mode", f"deploykit's self-signed certificate for {domain} is carried as a manual "
                          f"one, so browsers warn as before; it expires on {expires} and nothing in the cluster "
                          "renews it. For a public name, switch to proxy.https.type letsencrypt.", True, "proxy"))
    return {"enabled": True, "type": "manual", "manual": {"cert": secrets.tls_cert, "key": secrets.tls_key}}


# -- hub mode -------------------------------------------------------------------------------

def _cull(spec: Spec) -> dict:
    from deploykit.hub import cull_every

    if not spec.hub.idle_timeout:
        return {"enabled": False}
    return {"enabled": True, "timeout": spec.hub.idle_timeout, "every": cull_every(spec)}


def _hub_only(spec: Spec, values: dict, notes: list[Note]) -> None:
    from deploykit.hub import activity_interval

    hub, single = spec.hub, values["singleuser"]
    interval = activity_interval(spec)
    if interval != 300:
        # A short idle timeout: activity must reach the hub often enough for the culler to be fair.
        values["hub"]["config"]["JupyterHub"]["last_activity_interval"] = interval
        single["extraEnv"] = {"JUPYTERHUB_ACTIVITY_INTERVAL": str(interval)}
    if hub.mem_limit:
        guarantee = hub.mem_limit if _bytes(hub.mem_limit) < _bytes(CHART_MEMORY_GUARANTEE) else CHART_MEMORY_GUARANTEE
        single["memory"] = {"limit": hub.mem_limit, "guarantee": guarantee}
        notes.append(Note("hub.mem_limit", f"deploykit sets a ceiling only; the scheduler also reserves "
                          f"singleuser.memory.guarantee ({guarantee}) per user.", True, "singleuser"))
    else:
        notes.append(Note("hub.mem_limit", "No memory limit, as before; the chart still reserves "
                          f"{CHART_MEMORY_GUARANTEE} per user for scheduling (singleuser.memory.guarantee).",
                          True, "singleuser"))
    if hub.cpu_limit:
        single["cpu"] = {"limit": hub.cpu_limit}
    if hub.spawner == "docker":
        name, tag = _split_image(hub.docker_image)
        single["image"] = {"name": name, "tag": tag}
        notes.append(Note("hub.spawner", "Users' files in the Docker volumes jupyterhub-user-<name> are not copied; "
                          "in the cluster each user's home (/home/jovyan) is a persistent volume.", True, "singleuser"))
        notes.append(Note("hub.docker_network", f"The Docker network {hub.docker_network!r} has no equivalent: "
                          "pods use the cluster's network (singleuser.networkPolicy).", False))
    else:
        where = spec.deployment.python or "deploykit's own environment"
        notes.append(Note("hub.spawner", f"Users' servers ran on this machine ({hub.spawner} spawner) from "
                          f"{where}; in the cluster each runs in a pod from singleuser.image, which is the "
                          "chart's sample image: build one with your users' packages and set it. Home "
                          "directories are not copied.", False))


def _split_image(image: str) -> tuple[str, str]:
    """The chart writes `name:tag`; a digest rides along with its tag."""
    ref, at, digest = image.partition("@")
    name, colon, tag = ref.rpartition(":")
    if not colon or "/" in tag:
        name, tag = ref, "latest"
    if at:
        if ":" not in ref.rsplit("/", 1)[-1]:
            raise BadInput("hub.docker_image", image, "the chart joins singleuser.image name and tag with ':'; "
                           "give a tag with the digest (name:tag@sha256:...)")
        tag = f"{tag}@{digest}"
    return name, tag


def _bytes(size: str) -> int:
    return int(size[:-1]) * 1024 ** "KMGT".index(size[-1].upper()) * 1024


# -- what stays behind -------------------------------------------------------------------------

def _environment_notes(spec: Spec, notes: list[Note]) -> None:
    if spec.deployment.mode == "notebook" and spec.deployment.python:
        notes.append(Note("deployment.python", f"Jupyter ran from {spec.deployment.python}; in the cluster it runs "
                          "from singleuser.image: build one with the same packages and set it.", False))
    if spec.deployment.default_kernel_display_name:
        notes.append(Note("deployment.default_kernel_display_name", "The default kernel's name "
                          f"{spec.deployment.default_kernel_display_name!r} belongs in the single-user image's "
                          "kernelspec.", False))
    for kernel in spec.kernels:
        # profileList picks one image per server; kernels are several Pythons inside one server,
        # and these are paths on this machine. No image exists for them: none is invented.
        notes.append(Note("kernels", f"Kernel {kernel.name!r} ({kernel.display_name}) runs {kernel.python} on "
                          "this machine, which has no meaning in a pod: install that environment and its "
                          "kernelspec in the single-user image (or one image per environment in "
                          "singleuser.profileList).", False))


def _http_notes(spec: Spec, notes: list[Note]) -> None:
    http = spec.http
    ports = [("http_port", http.http_port, CHART_PORTS[0])]
    if spec.tls.mode != "off":
        ports.append(("https_port", http.https_port, CHART_PORTS[1]))
    for key, port, standard in ports:
        if port != standard:
            notes.append(Note(f"http.{key}", f"Port {port} is not carried: the chart's proxy-public service "
                              f"listens on {standard}.", False))
    if http.upload_limit != "0":
        notes.append(Note("http.upload_limit", f"The {http.upload_limit} upload limit is not carried: the chart's "
                          "proxy sets none (an ingress controller in front can).", False))
    if http.login_rate_limit:
        notes.append(Note("http.login_rate_limit", f"The login rate limit {http.login_rate_limit} is not carried: "
                          "the chart has none.", False))
    for directive in http.extra_directives:
        notes.append(Note("http.extra_directives", f"nginx directive {directive!r} has no equivalent.", False))


# -- rendering ------------------------------------------------------------------------------

def holds_secrets(values: dict) -> bool:
    """Whether the values carry a private key or a password (the file must then be private)."""
    config = values.get("hub", {}).get("config", {})
    https = values.get("proxy", {}).get("https", {})
    return bool(https.get("manual", {}).get("key") or config.get("SharedPasswordAuthenticator"))


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, text: str):
    # PEM blocks stay readable as YAML literal blocks.
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_Dumper.add_representer(str, _str)


def _comment(text: str, bullet: bool = False) -> list[str]:
    lines = textwrap.wrap(text, width=94, initial_indent="#   - " if bullet else "# ",
                          subsequent_indent="#     " if bullet else "# ")
    return lines


def render_z2jh_values(values: dict, notes: list[Note], domain: str) -> str:
    """The values as YAML: a header saying what stays behind, and caveats above their sections."""
    out = [
        f"# Zero to JupyterHub values for {domain}, made by `deploykit export z2jh` from its deploykit.toml.",
        "# Merged over the chart's defaults, e.g.:",
        "#   helm upgrade --install jupyterhub jupyterhub --repo https://hub.jupyter.org/helm-chart/ "
        "--values THIS_FILE",
    ]
    if holds_secrets(values):
        out.append("# It holds secrets (a private key or passwords): keep it private, out of version control.")
    dropped = [n for n in notes if not n.carried]
    if dropped:
        out += ["#", "# Not carried over:"]
        for note in dropped:
            out += _comment(f"{note.setting}: {note.text}", bullet=True)
    for note in notes:
        if note.carried and not note.near:
            out += ["#", *_comment(note.text)]
    for key, block in values.items():
        out.append("")
        for note in notes:
            if note.carried and note.near == key:
                out += _comment(note.text)
        out.append(yaml.dump({key: block}, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                             allow_unicode=True, width=100).rstrip("\n"))
    return "\n".join(out) + "\n"

"""Hub config for the systemd and Docker spawners, loaded by JupyterHub's own config loader.

The hub config is built the way `deploykit provision` builds it (provision.build_desired, which
probes the spawner's facts and passes them down to hub.build_hub_files), written with its secrets
under a temp state dir, and loaded the way `jupyterhub -f` loads it. The spawner class must
resolve and every setting must be one the class has, with a value it accepts. No Docker engine or
systemd PID 1 exists here: the Docker SDK's client is replaced by a fake engine that knows some
networks (everything above it is deploykit's real code), and the host facts say systemd.
"""

from __future__ import annotations

import dataclasses
import os
import types

import pytest
from jupyterhub.app import JupyterHub

from deploykit import hub, spawners
from deploykit.errors import BadInput
from deploykit.host import probe_host
from deploykit.paths import local_paths
from deploykit.provision import build_desired
from deploykit.spec import build_spec, dump_spec
from support import dk, free_ports

GATEWAY = "172.18.0.1"
BRIDGE = {"Driver": "bridge", "IPAM": {"Config": [{"Subnet": "fd00:18::/64", "Gateway": "fd00:18::1"},
                                                  {"Subnet": "172.18.0.0/16", "Gateway": GATEWAY}]}}


@pytest.fixture
def docker_engine(monkeypatch):
    """A fake Docker engine behind the Docker SDK's client: networks by name, as the engine reports them."""
    import docker

    networks = {"jupyterhub": BRIDGE, "jhub-net": BRIDGE}

    class Networks:
        def get(self, name):
            if name not in networks:
                raise docker.errors.NotFound(f"network {name} not found")
            return types.SimpleNamespace(attrs=networks[name])

    class Client:
        def __init__(self):
            self.networks = Networks()

        def close(self):
            pass

    monkeypatch.setattr(docker, "from_env", lambda **kwargs: Client())
    return networks


def systemd_host():
    """This machine's facts, with systemd as PID 1 and deploykit as root."""
    return dataclasses.replace(probe_host(), systemd=True, euid=0)


def hub_spec(spawner: str, **hub_keys):
    hub_port, proxy_port, api_port = free_ports(3)
    return build_spec({
        "deployment": {"domain": "jupyter.test", "mode": "hub"},
        "hub": {"spawner": spawner, "admins": ["alice"], **hub_keys},
        "internal": {"hub_port": hub_port, "proxy_port": proxy_port, "proxy_api_port": api_port},
    })


def load_hub_config(tmp_path, spec, host=None):
    """The JupyterHub app after loading deploykit's jupyterhub_config.py for spec; and the files."""
    paths, host = local_paths(tmp_path / "state"), host or probe_host()
    desired, _ = build_desired(spec, paths, host, spec_text=dump_spec(spec))
    config = desired.file(hub.config_path(paths))
    for f in desired.files:
        if f.kind == "secret" or f is config:
            f.path.parent.mkdir(parents=True, exist_ok=True)
            f.path.write_bytes(f.content)
    app = JupyterHub()
    app.load_config_file(str(config.path))
    files = {f.path: f.content.decode() for f in desired.files if not f.secret}
    return app, config.content.decode(), files, paths


def proxy_command(files, paths) -> str:
    return next(line for line in files[paths.program_conf("configurable-http-proxy")].splitlines()
                if line.startswith("command="))


def spawner_from(app):
    """An instance of the configured spawner class: traitlets validates every configured value."""
    cls = app.spawner_class
    section = app.config[cls.__name__]
    unknown = set(section) - set(cls.class_trait_names(config=True))
    assert not unknown, f"{cls.__name__} has no such settings: {unknown}"
    # A spawner needs a hub user; the attributes its constructor reads are enough here.
    user = types.SimpleNamespace(name="alice", id=7, escaped_name="alice", url="/user/alice/", settings={})
    return cls(config=app.config, user=user)


def test_systemd_config_loads_and_spawner_class_resolves(tmp_path):
    from systemdspawner import SystemdSpawner

    spec = hub_spec("systemd", mem_limit="2G", cpu_limit=1.5, admins=[], allow_all=True)
    app, text, files, paths = load_hub_config(tmp_path, spec, systemd_host())
    assert app.spawner_class is SystemdSpawner
    assert "c.JupyterHub.spawner_class = \"systemdspawner.SystemdSpawner\"" in text
    spawner = spawner_from(app)
    assert spawner.mem_limit == 2 * 1024 ** 3 and spawner.cpu_limit == 1.5
    assert spawner.dynamic_users is False and spawner.isolate_tmp is True and spawner.disable_user_sudo is True
    # systemd-run gets an absolute command: the Jupyter environment's Python, first on PATH too.
    assert os.path.isabs(spawner.cmd[0]) and os.access(spawner.cmd[0], os.X_OK)
    assert spawner.cmd[1:] == ["-m", "jupyterhub.singleuser"]
    assert spawner.environment["PATH"].startswith(os.path.dirname(spawner.cmd[0]) + ":")
    # The same command and environment as the local-process spawner's servers get.
    assert spawner.cmd == hub.singleuser_cmd(spec, probe_host())
    assert spawner.environment == hub.user_environment(spec, paths, probe_host())
    # The hub itself stays on loopback: only containers need it elsewhere.
    assert app.hub_bind_url.startswith("http://127.0.0.1:")
    assert f"--default-target http://127.0.0.1:{spec.internal.hub_port} " in proxy_command(files, paths)


def test_docker_config_loads_and_spawner_class_resolves(tmp_path, docker_engine):
    from dockerspawner import DockerSpawner

    spec = hub_spec("docker", mem_limit="512M", cpu_limit=2, docker_image="quay.io/jupyter/scipy-notebook:2024-05-27",
                    docker_network="jhub-net")
    app, _, files, paths = load_hub_config(tmp_path, spec)
    assert app.spawner_class is DockerSpawner
    spawner = spawner_from(app)
    assert spawner.image == "quay.io/jupyter/scipy-notebook:2024-05-27"
    assert spawner.network_name == "jhub-net" and spawner.use_internal_ip is True
    assert spawner.volumes == {"jupyterhub-user-{username}": "/home/jovyan/work"}
    assert spawner.notebook_dir == "/home/jovyan/work" and spawner.remove is True
    assert spawner.mem_limit == 512 * 1024 ** 2 and spawner.cpu_limit == 2.0
    # The image's own command, not a program path from this host (which c.Spawner.cmd may hold).
    assert spawner.cmd is None
    # Containers reach the hub at the host's address on their network (its IPv4 gateway), found
    # by the probe: and so do the proxy and the hub's trust in the proxy's forwarded headers.
    url = f"http://{GATEWAY}:{spec.internal.hub_port}"
    assert app.hub_bind_url.startswith(url) and app.hub_connect_url.startswith(url)
    command = proxy_command(files, paths)
    assert f"--default-target {url} " in command and f"--error-target {url}/hub/error " in command
    assert GATEWAY in app.trusted_downstream_ips and "127.0.0.1" in app.trusted_downstream_ips


def test_short_idle_timeout_reaches_containers(tmp_path, docker_engine):
    spec = hub_spec("docker", idle_timeout=40)
    app, _, _, _ = load_hub_config(tmp_path, spec)
    spawner = spawner_from(app)
    # Host paths mean nothing in a container; how often activity reaches the hub does.
    assert spawner.environment == {"JUPYTERHUB_ACTIVITY_INTERVAL": str(hub.activity_interval(spec))}


def test_no_limits_leaves_the_spawner_defaults(tmp_path, docker_engine):
    app, _, _, _ = load_hub_config(tmp_path, hub_spec("docker"))
    spawner_from(app)
    assert not {"mem_limit", "cpu_limit"} & set(app.config.DockerSpawner)
    assert not {"mem_limit", "cpu_limit"} & set(app.config.Spawner)


def test_localprocess_adds_nothing():
    assert spawners.render_spawner_config(hub_spec("localprocess"), local_paths("/tmp/unused"), probe_host()) == ""
    assert spawners.probe_spawner_facts(hub_spec("localprocess"), probe_host()) == spawners.SpawnerFacts()


def test_docker_config_needs_the_hubs_address_on_the_network():
    with pytest.raises(BadInput) as exc:
        spawners.render_spawner_config(hub_spec("docker"), local_paths("/tmp/unused"), probe_host())
    assert "docker network create jupyterhub" in exc.value.why


@pytest.mark.parametrize("network,attrs,why", [
    ("elsewhere", None, "no such Docker network"),
    ("hostnet", {"Driver": "host", "IPAM": {"Config": []}}, "needs a bridge network"),
    ("v6only", {"Driver": "bridge", "IPAM": {"Config": [{"Gateway": "fd00:19::1"}]}}, "no IPv4 gateway"),
])
def test_docker_probe_refuses_networks_the_hub_cannot_listen_on(docker_engine, network, attrs, why):
    if attrs is not None:
        docker_engine[network] = attrs
    with pytest.raises(BadInput) as exc:
        spawners.probe_spawner_facts(hub_spec("docker", docker_network=network), probe_host())
    assert why in exc.value.why


def test_docker_probe_finds_the_gateway(docker_engine):
    assert spawners.probe_spawner_facts(hub_spec("docker"), probe_host()) == spawners.SpawnerFacts(GATEWAY)


def test_docker_probe_without_an_engine_refuses(tmp_path, monkeypatch):
    # No Docker engine here (nor at this socket): the refusal must say what to do.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    with pytest.raises(BadInput) as exc:
        spawners.probe_spawner_facts(hub_spec("docker"), probe_host())
    assert "cannot reach the Docker engine" in exc.value.why


@pytest.mark.parametrize("changes,host_changes,why", [
    ({"authenticator": "native"}, {"systemd": True, "euid": 0}, "--authenticator pam"),
    ({}, {"systemd": False, "euid": 0}, "systemd is not PID 1"),
    ({}, {"systemd": True, "euid": 1000}, "needs root"),
])
def test_systemd_refusals(changes, host_changes, why):
    host = dataclasses.replace(probe_host(), **host_changes)
    with pytest.raises(BadInput) as exc:
        spawners.probe_spawner_facts(hub_spec("systemd", **changes), host)
    assert why in exc.value.why


def test_systemd_accepted_on_a_systemd_host_as_root():
    host = dataclasses.replace(probe_host(), systemd=True, euid=0)
    assert spawners.probe_spawner_facts(hub_spec("systemd"), host) == spawners.SpawnerFacts()


# -- the real CLI on this machine: no systemd as PID 1, no Docker engine --------------------------

def _provision(tmp_path, *args, env=None):
    state = tmp_path / "state"
    res = dk("provision", "--target", "local", "--state-dir", state, "--domain", "hub.test", "--mode", "hub",
             *args, env=env)
    return state, res


@pytest.mark.skipif(probe_host().systemd, reason="this machine has systemd as PID 1")
def test_provision_systemd_spawner_without_systemd_exits_2_and_creates_nothing(tmp_path):
    state, res = _provision(tmp_path, "--spawner", "systemd", "--allow-all")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "--spawner" in res.stderr and "systemd is not PID 1" in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 3
    assert not state.exists()


def test_provision_systemd_spawner_checks_pam_users_exist(tmp_path):
    state, res = _provision(tmp_path, "--spawner", "systemd", "--admin", "dktnosuchuser0")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "--admin" in res.stderr and "no such system user" in res.stderr
    assert not state.exists()


def test_provision_docker_spawner_without_an_engine_exits_2_and_creates_nothing(tmp_path):
    from support import clean_env

    env = clean_env(DOCKER_HOST=f"unix://{tmp_path}/docker.sock")
    state, res = _provision(tmp_path, "--spawner", "docker", "--allow-all", env=env)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "cannot reach the Docker engine" in res.stderr
    assert not state.exists()

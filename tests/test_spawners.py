"""Hub config for the systemd and Docker spawners, loaded by JupyterHub's own config loader.

The hub config is built by deploykit's real builder (hub.build_hub_files) with the spawner lines
included, written with its secrets under a temp state dir, and loaded the way `jupyterhub -f`
loads it. The spawner class must resolve and every setting must be one the class has, with a
value it accepts. No Docker engine or systemd is needed for that, so none is used.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types

import pytest
from jupyterhub.app import JupyterHub

from deploykit import hub, spawners
from deploykit.errors import BadInput
from deploykit.host import probe_host
from deploykit.materials import read_or_make_materials
from deploykit.paths import local_paths
from deploykit.spec import build_spec
from support import free_ports

GATEWAY = "172.18.0.1"


def hub_spec(spawner: str, **hub_keys):
    hub_port, proxy_port, api_port = free_ports(3)
    return build_spec({
        "deployment": {"domain": "jupyter.test", "mode": "hub"},
        "hub": {"spawner": spawner, "admins": ["alice"], **hub_keys},
        "internal": {"hub_port": hub_port, "proxy_port": proxy_port, "proxy_api_port": api_port},
    })


def load_hub_config(tmp_path, monkeypatch, spec, facts=spawners.SpawnerFacts()):
    """The JupyterHub app after loading deploykit's jupyterhub_config.py for spec."""
    paths, host = local_paths(tmp_path / "state"), probe_host()
    if facts != spawners.SpawnerFacts():
        # hub.render_hub_config calls render_spawner_config(spec, paths, host); the facts probed
        # from a Docker engine reach it here, as the probe would have passed them.
        monkeypatch.setattr(spawners, "render_spawner_config",
                            functools.partial(spawners.render_spawner_config, facts=facts))
    materials = read_or_make_materials(spec, paths)
    files, _, _, _ = hub.build_hub_files(spec, paths, host, materials)
    for path, content in materials.secrets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    config = next(f for f in files if f.path == hub.config_path(paths))
    config.path.parent.mkdir(parents=True, exist_ok=True)
    config.path.write_bytes(config.content)
    app = JupyterHub()
    app.load_config_file(str(config.path))
    return app, config.content.decode()


def spawner_from(app):
    """An instance of the configured spawner class: traitlets validates every configured value."""
    cls = app.spawner_class
    section = app.config[cls.__name__]
    unknown = set(section) - set(cls.class_trait_names(config=True))
    assert not unknown, f"{cls.__name__} has no such settings: {unknown}"
    # A spawner needs a hub user; the attributes its constructor reads are enough here.
    user = types.SimpleNamespace(name="alice", id=7, escaped_name="alice", url="/user/alice/", settings={})
    return cls(config=app.config, user=user)


def test_systemd_config_loads_and_spawner_class_resolves(tmp_path, monkeypatch):
    from systemdspawner import SystemdSpawner

    app, text = load_hub_config(tmp_path, monkeypatch, hub_spec("systemd", mem_limit="2G", cpu_limit=1.5))
    assert app.spawner_class is SystemdSpawner
    assert "c.JupyterHub.spawner_class = \"systemdspawner.SystemdSpawner\"" in text
    spawner = spawner_from(app)
    assert spawner.mem_limit == 2 * 1024 ** 3 and spawner.cpu_limit == 1.5
    assert spawner.dynamic_users is False and spawner.isolate_tmp is True and spawner.disable_user_sudo is True
    # systemd-run gets an absolute command: the Jupyter environment's Python, first on PATH too.
    assert os.path.isabs(spawner.cmd[0]) and os.access(spawner.cmd[0], os.X_OK)
    assert spawner.cmd[1:] == ["-m", "jupyterhub.singleuser"]
    assert spawner.environment["PATH"].startswith(os.path.dirname(spawner.cmd[0]) + ":")
    # The hub itself stays on loopback: only containers need it elsewhere.
    assert app.hub_bind_url.startswith("http://127.0.0.1:")


def test_docker_config_loads_and_spawner_class_resolves(tmp_path, monkeypatch):
    from dockerspawner import DockerSpawner

    spec = hub_spec("docker", mem_limit="512M", cpu_limit=2, docker_image="quay.io/jupyter/scipy-notebook:2024-05-27",
                    docker_network="jhub-net")
    app, _ = load_hub_config(tmp_path, monkeypatch, spec, spawners.SpawnerFacts(GATEWAY))
    assert app.spawner_class is DockerSpawner
    spawner = spawner_from(app)
    assert spawner.image == "quay.io/jupyter/scipy-notebook:2024-05-27"
    assert spawner.network_name == "jhub-net" and spawner.use_internal_ip is True
    assert spawner.volumes == {"jupyterhub-user-{username}": "/home/jovyan/work"}
    assert spawner.notebook_dir == "/home/jovyan/work" and spawner.remove is True
    assert spawner.mem_limit == 512 * 1024 ** 2 and spawner.cpu_limit == 2.0
    # The image's own command, not a program path from this host (which c.Spawner.cmd may hold).
    assert spawner.cmd is None
    # Containers reach the hub at the host's address on their network.
    url = f"http://{GATEWAY}:{spec.internal.hub_port}"
    assert app.hub_bind_url.startswith(url) and app.hub_connect_url.startswith(url)


def test_short_idle_timeout_reaches_containers(tmp_path, monkeypatch):
    spec = hub_spec("docker", idle_timeout=40)
    app, _ = load_hub_config(tmp_path, monkeypatch, spec, spawners.SpawnerFacts(GATEWAY))
    spawner = spawner_from(app)
    # Host paths mean nothing in a container; how often activity reaches the hub does.
    assert spawner.environment == {"JUPYTERHUB_ACTIVITY_INTERVAL": str(hub.activity_interval(spec))}


def test_no_limits_leaves_the_spawner_defaults(tmp_path, monkeypatch):
    app, _ = load_hub_config(tmp_path, monkeypatch, hub_spec("docker"), spawners.SpawnerFacts(GATEWAY))
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

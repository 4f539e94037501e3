"""Hub spawners beyond local processes: systemd units (jupyterhub-systemdspawner) and Docker
containers (dockerspawner).

render_spawner_config is pure: it returns Python statements on `c` that deploykit.hub appends to
jupyterhub_config.py, after its own settings, so that these win. probe_spawner_facts looks at
the machine (systemd, the Docker engine and network) before anything changes, and refuses a
spawner this machine cannot run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress

from deploykit.errors import BadInput
from deploykit.host import Host
from deploykit.paths import Paths
from deploykit.render import render_template
from deploykit.spec import Spec

# Where the Jupyter Docker Stacks images (the default image among them) keep a user's work.
DOCKER_NOTEBOOK_DIR = "/home/jovyan/work"
# dockerspawner escapes {username} into a valid volume name.
DOCKER_VOLUME = "jupyterhub-user-{username}"
# spawner -> (module the hub imports, package that provides it)
PACKAGES = {"systemd": ("systemdspawner", "jupyterhub-systemdspawner"), "docker": ("dockerspawner", "dockerspawner")}


@dataclasses.dataclass(frozen=True)
class SpawnerFacts:
    """What rendering needs to know about the machine: the hub's address on the Docker network."""

    docker_gateway: str = ""


def probe_spawner_facts(spec: Spec, host: Host) -> SpawnerFacts:
    """Refuse (BadInput) a spawner this machine cannot run; return what rendering needs. Looks only."""
    spawner = spec.hub.spawner
    if spec.deployment.mode != "hub" or spawner == "localprocess":
        return SpawnerFacts()
    module, package = PACKAGES[spawner]
    if importlib.util.find_spec(module) is None:
        raise BadInput("--spawner", spawner, f"{package} is not installed in deploykit's environment "
                       f"(the hub runs from it); install it with: pip install {package}")
    if spawner == "systemd":
        check_systemd_input(spec, host)
        return SpawnerFacts()
    return SpawnerFacts(docker_gateway=probe_docker_gateway(spec.hub.docker_network))


def check_systemd_input(spec: Spec, host: Host) -> None:
    from deploykit.desired import jupyter_python
    from deploykit.hub import check_user_environment

    if spec.hub.authenticator != "pam":
        raise BadInput("--spawner", "systemd", f"runs each server as the system account of the same name, and "
                       f"{spec.hub.authenticator!r} users have none; use --authenticator pam, or --spawner docker "
                       "or localprocess")
    if not host.systemd:
        raise BadInput("--spawner", "systemd", "systemd is not PID 1 on this machine; use --spawner localprocess "
                       "or docker")
    if not host.is_root:
        raise BadInput("--spawner", "systemd", "starting units for other users needs root; run deploykit as root")
    # Servers run as their users, as with the local-process spawner: the environment must be theirs to run.
    check_user_environment(jupyter_python(spec, host))


def probe_docker_gateway(network: str) -> str:
    """The host's IPv4 address on a Docker bridge network (its gateway). Looks only."""
    try:
        import docker  # dockerspawner's own client library
    except ImportError:
        raise BadInput("--spawner", "docker", "dockerspawner is not installed in deploykit's environment; "
                       "install it with: pip install dockerspawner") from None
    try:
        client = docker.from_env(timeout=10)
        try:
            attrs = client.networks.get(network).attrs
        finally:
            client.close()
    except docker.errors.NotFound:
        raise BadInput("hub.docker_network", network, "no such Docker network; create it with "
                       f"`docker network create {network}`") from None
    except docker.errors.DockerException as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise BadInput("--spawner", "docker", f"cannot reach the Docker engine ({reason}); start it, and run "
                       "deploykit as root or as a member of the docker group") from None
    if attrs.get("Driver") != "bridge":
        raise BadInput("hub.docker_network", network, f"is a {attrs.get('Driver')!r} network; the hub runs on "
                       "this host, so it needs a bridge network (`docker network create --driver bridge NAME`)")
    for config in (attrs.get("IPAM") or {}).get("Config") or []:
        gateway = (config.get("Gateway") or "").split("/")[0]
        try:
            if ipaddress.ip_address(gateway).version == 4:
                return gateway
        except ValueError:
            continue
    raise BadInput("hub.docker_network", network, "has no IPv4 gateway for the hub to listen on; "
                   f"recreate it with `docker network create --subnet 172.30.0.0/24 {network}` (any free subnet)")


def hub_address(spec: Spec, facts: SpawnerFacts) -> str:
    """The address the hub listens on: loopback, or, for containers, which cannot reach the host's
    loopback, the host's address on their Docker network (its gateway)."""
    if spec.deployment.mode != "hub" or spec.hub.spawner != "docker":
        return "127.0.0.1"
    if not facts.docker_gateway:
        raise BadInput("hub.docker_network", spec.hub.docker_network,
                       "the hub's address on this Docker network is unknown: is the Docker engine running, "
                       f"and the network made (`docker network create {spec.hub.docker_network}`)?")
    return facts.docker_gateway


def render_spawner_config(spec: Spec, paths: Paths, host: Host, facts: SpawnerFacts = SpawnerFacts()) -> str:
    """Python statements for jupyterhub_config.py selecting and configuring spec.hub.spawner.

    '' for the local-process spawner, which deploykit.hub configures itself.
    """
    from deploykit.hub import singleuser_cmd, user_environment

    hub = spec.hub
    limits = {"mem_limit": hub.mem_limit, "cpu_limit": hub.cpu_limit}
    if hub.spawner == "systemd":
        return render_template("spawner/systemd.py.j2", cmd=singleuser_cmd(spec, host),
                               environment=user_environment(spec, paths, host), **limits)
    if hub.spawner == "docker":
        gateway = hub_address(spec, facts)
        if not spec.internal.hub_port:
            raise BadInput("internal.hub_port", 0, "is picked by `deploykit provision`; run it, or set a port")
        return render_template(
            "spawner/docker.py.j2", image=hub.docker_image, network=hub.docker_network,
            gateway=gateway, hub_url=f"http://{gateway}:{spec.internal.hub_port}",
            notebook_dir=DOCKER_NOTEBOOK_DIR, volumes={DOCKER_VOLUME: DOCKER_NOTEBOOK_DIR},
            environment=docker_environment(spec), **limits)
    return ""


def docker_environment(spec: Spec) -> dict[str, str]:
    """The user environment's variables that mean something in a container: not host paths."""
    from deploykit.hub import activity_interval

    interval = activity_interval(spec)
    return {"JUPYTERHUB_ACTIVITY_INTERVAL": str(interval)} if interval != 300 else {}

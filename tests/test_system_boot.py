"""Issue: the system target at boot, and the VM smoke test.

- The systemd files the system target would install on a machine where systemd is PID 1 (this
  CI machine has none: the files are rendered for a host that has it) pass
  `systemd-analyze verify` with no warning at all, against the distribution's own units.
- Daemons are started and enabled through systemctl with systemd, `service`/update-rc.d without.
- The Vagrantfile passes `vagrant validate --ignore-provider` (no VM provider runs here).
- scripts/smoke, which the Vagrantfile runs in the VM, passes against a real local deployment.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import PASSWORD, ROOT

SUPERVISOR_UNIT = Path("/lib/systemd/system/supervisor.service")


def system_files_for_a_systemd_host(root: Path, tls: dict) -> dict[Path, bytes]:
    """Every file a provision would write (the desired state), for a host where systemd is PID 1."""
    from deploykit.desired import build_desired_state
    from deploykit.host import probe_host
    from deploykit.materials import read_or_make_materials
    from deploykit.paths import system_paths
    from deploykit.spec import build_spec
    from deploykit.system import read_service_account, with_system_defaults

    paths = system_paths(root)
    spec = build_spec({"deployment": {"domain": "jupyter.example.com", "target": "system", "user": "jupyter"},
                       "tls": tls, "internal": {"jupyter_port": 18888}})
    spec = with_system_defaults(spec, paths)
    host = dataclasses.replace(probe_host(), systemd=True)
    materials = read_or_make_materials(spec, paths, "argon2:$argon2id$v=19$m=10240,t=10,p=8$x$y")
    desired = build_desired_state(spec, paths, host, materials, account=read_service_account(spec, paths))
    return {f.path: f.content for f in desired.files}


def verify_units(unit_root: Path, units: list[str]) -> subprocess.CompletedProcess:
    # The drop-ins and units under unit_root/etc/systemd/system come first, then the system's own.
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_root}/etc/systemd/system:"}
    return subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("tls", [{"mode": "self-signed"}, {"mode": "letsencrypt", "email": "admin@example.org"}],
                         ids=["self-signed", "letsencrypt"])
def test_systemd_files_verify_without_a_warning(tmp_path, tls):
    assert SUPERVISOR_UNIT.is_file(), "the supervisor package (scripts/install-deps --test) provides the unit"
    root = tmp_path / "root"
    files = system_files_for_a_systemd_host(root, tls)
    units_dir = root / "etc/systemd/system"
    ours = {p: c for p, c in files.items() if p.is_relative_to(units_dir)}
    dropin = units_dir / "supervisor.service.d/deploykit.conf"
    assert dropin in ours
    text = ours[dropin].decode()
    assert re.search(rf"^RequiresMountsFor=.*{root}/srv/jupyter", text, re.M), text
    if tls["mode"] == "letsencrypt":
        assert any(p.suffix == ".timer" for p in ours), "certbot renewal runs from a systemd timer"
    for path, content in ours.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    units = ["supervisor.service", *sorted(p.name for p in ours if p.parent == units_dir)]
    res = verify_units(root, units)
    assert res.returncode == 0 and res.stderr.strip() == "" and res.stdout.strip() == "", res.stdout + res.stderr

    # Control: the same check does read the drop-in (a bad line in it is reported).
    dropin.write_text(text + "NoSuchKey=1\n")
    res = verify_units(root, ["supervisor.service"])
    assert "NoSuchKey" in res.stderr, res.stderr


def test_no_systemd_files_without_systemd(tmp_path):
    from deploykit.desired import build_desired_state
    from deploykit.host import probe_host
    from deploykit.materials import read_or_make_materials
    from deploykit.paths import system_paths
    from deploykit.spec import build_spec
    from deploykit.system import read_service_account

    paths = system_paths(tmp_path)
    spec = build_spec({"deployment": {"domain": "jupyter.test", "target": "system"},
                       "internal": {"jupyter_port": 18888}})
    host = dataclasses.replace(probe_host(), systemd=False)
    desired = build_desired_state(spec, paths, host, read_or_make_materials(spec, paths, "argon2:x"),
                                  account=read_service_account(spec, paths))
    assert not [f.path for f in desired.files if f.path.is_relative_to(tmp_path / "etc/systemd")]


def test_daemons_start_and_enable_through_the_init_system_in_use():
    from deploykit.system import build_service_commands

    start, enable = build_service_commands("supervisor", systemd=True)
    assert start == [["systemctl", "start", "supervisor.service"]]
    assert enable == [["systemctl", "enable", "--quiet", "supervisor.service"]]
    start, enable = build_service_commands("nginx", systemd=False)
    assert start == [["service", "nginx", "start"]]
    assert enable == [["update-rc.d", "nginx", "defaults"], ["update-rc.d", "nginx", "enable"]]
    for argv in (*start, *enable):
        assert shutil.which(argv[0]), f"{argv[0]} is not on this Debian system"


def test_this_machine_is_detected_as_having_no_systemd_as_pid_1():
    from deploykit.host import probe_host

    assert probe_host().systemd == (Path("/proc/1/comm").read_text().strip() == "systemd")


# -- Vagrant -----------------------------------------------------------------------------------

def vagrant_validate(directory: Path, scratch: Path) -> subprocess.CompletedProcess:
    # Vagrant's own state (the .vagrant dir, ~/.vagrant.d) goes to scratch, not the checkout.
    env = {**os.environ, "VAGRANT_CWD": str(directory), "VAGRANT_DOTFILE_PATH": str(scratch / "dot"),
           "VAGRANT_HOME": str(scratch / "home"), "VAGRANT_CHECKPOINT_DISABLE": "1"}
    return subprocess.run(["vagrant", "validate", "--ignore-provider"], capture_output=True, text=True,
                          timeout=300, env=env)


def test_vagrantfile_validates(tmp_path):
    res = vagrant_validate(ROOT, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "validated successfully" in res.stdout
    # Control: a broken configuration is refused by the same command.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "Vagrantfile").write_text((ROOT / "Vagrantfile").read_text().replace(
        'config.vm.hostname = "jupyter"', 'config.vm.hostname = "jupyter"\n  config.vm.no_such_setting = 1'))
    assert vagrant_validate(broken, tmp_path).returncode != 0


# Evaluates the Vagrantfile with Vagrant's Ruby and prints the shell provisioner's script exactly
# as Vagrant would hand it to the VM (heredoc escapes applied).
INLINE_SCRIPT_RB = """
class Rec
  def method_missing(name, *args, **kw, &blk)
    $inline = kw[:inline] if name == :provision
    blk.call(Rec.new) if blk
    Rec.new
  end
  def respond_to_missing?(*) = true
end
module Vagrant
  def self.configure(_version)
    yield Rec.new
  end
end
load ARGV[0]
print $inline
"""


def test_vagrant_provisioning_runs_the_issue_command_and_the_smoke_script(tmp_path):
    text = (ROOT / "Vagrantfile").read_text()
    (tmp_path / "inline.rb").write_text(INLINE_SCRIPT_RB)
    res = subprocess.run(["ruby", str(tmp_path / "inline.rb"), str(ROOT / "Vagrantfile")], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and res.stdout, res.stderr
    script = res.stdout
    res = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    command = " ".join(script.split())
    assert "deploykit provision --domain jupyter.local --tls self-signed --install-missing" in command
    assert "python3 /vagrant/scripts/smoke --password-file /root/deploykit-password" in command
    assert re.search(r'config\.vm\.box = ENV\.fetch\("DEPLOYKIT_BOX", "bento/ubuntu-\d\d\.04"\)', text)


# -- scripts/smoke against a real (local target) deployment ----------------------------------

def run_smoke(dep, password: str) -> subprocess.CompletedProcess:
    # The system's python3: the smoke script needs nothing but the standard library.
    return subprocess.run(["/usr/bin/python3", str(ROOT / "scripts/smoke"), "--state-dir", str(dep.state_dir),
                           "--deploykit", f"{sys.executable} -m deploykit", "--password-stdin"],
                          input=password + "\n", capture_output=True, text=True, timeout=300)


@pytest.mark.real
def test_smoke_script_passes_against_a_local_deployment(notebook):
    res = run_smoke(notebook, PASSWORD)
    assert res.returncode == 0, res.stdout + res.stderr
    for check in ("https", "old TLS", "api", "login", "kernel"):
        assert re.search(rf"^ok   {re.escape(check)}\s", res.stdout, re.M), res.stdout
    assert "ran 6*7 = 42" in res.stdout
    assert res.stdout.rstrip().endswith("smoke test passed")


@pytest.mark.real
def test_smoke_script_fails_on_a_wrong_password(notebook):
    res = run_smoke(notebook, "not-the-password")
    assert res.returncode == 1
    assert re.search(r"^FAIL login", res.stdout, re.M), res.stdout

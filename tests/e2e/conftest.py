"""e2e fixtures: a QEMU with vfio-user-pci and the guest image, built (or
found in the cache) once per session by the project's own setup code."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from vnic.lab import netns


@pytest.fixture(scope="session")
def qemu():
    from vnic.lab.qemu import ensure_qemu
    return ensure_qemu(log=lambda *_: None)


@pytest.fixture(scope="session")
def image():
    from vnic.lab.image import ensure_guest_image
    return ensure_guest_image(log=lambda *_: None)


@pytest.fixture
def sock_dir():
    """A directory for `vnic serve`'s sockets that the unprivileged user it
    becomes can still remove them from (pytest's tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="vnic-e2e-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def qemu_pids(parent: int | None = None) -> list[int]:
    """Test guests' QEMUs started by this process (other runs may share the machine)."""
    r = subprocess.run(["pgrep", "-P", str(parent or os.getpid()), "-f", "vnic-guest"],
                       capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


def our_namespaces() -> set[str]:
    mine = f"{netns.PREFIX}{os.getpid()}-"
    return {n for n in netns.list_namespaces() if n.startswith(mine)}


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """Every e2e test must leave no namespace and no QEMU behind."""
    before_ns = our_namespaces()
    yield
    leaked_ns = sorted(our_namespaces() - before_ns)
    leaked_qemu = qemu_pids()
    for name in leaked_ns:
        netns.delete_namespace(name)
    assert not leaked_ns, f"namespaces left behind: {leaked_ns}"
    assert not leaked_qemu, f"QEMU processes left behind: {leaked_qemu}"

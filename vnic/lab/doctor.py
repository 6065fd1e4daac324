"""`vnic doctor`: is this machine ready to run vnic?  Each check says what
it found and, when something required is missing, how to fix it."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from .cache import cache_dir


@dataclass
class Check:
    """One check's outcome. fix says how to get a missing requirement."""
    name: str
    ok: bool
    detail: str
    required: bool = True
    fix: str = ""


def check_qemu() -> tuple[Check, object]:
    """Whether a QEMU with vfio-user-pci is there, and that QEMU (None if none
    is)."""
    from .qemu import find_qemu
    q = find_qemu()
    if q is None:
        return Check("qemu", False, "no QEMU with vfio-user-pci found",
                     fix="run `vnic setup` (builds a private QEMU 11.1 from Debian trixie-backports)"), None
    return Check("qemu", q.has_vfio_user, f"QEMU {q.version} ({q.argv_prefix[0]}), "
                 f"vfio-user-pci {'present' if q.has_vfio_user else 'missing'}",
                 fix="run `vnic setup`"), q


def check_tun() -> Check:
    """Whether /dev/net/tun can be opened for reading and writing."""
    ok = os.access("/dev/net/tun", os.R_OK | os.W_OK)
    return Check("tun", ok, "/dev/net/tun " + ("usable" if ok else "missing or not accessible"),
                 fix="load the tun module (modprobe tun) and run as root")


def check_netns() -> Check:
    """Whether a network namespace can be created (one is, and deleted)."""
    if not shutil.which("ip"):
        return Check("netns", False, "iproute2 `ip` not found", fix="apt-get install iproute2")
    name = f"vnic-doctor-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode == 0:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        return Check("netns", True, "network namespaces can be created")
    return Check("netns", False, f"ip netns add failed: {r.stderr.strip()}", fix="run as root")


def check_tools() -> list[Check]:
    """iperf3 (required) and mmdebstrap (needed to build QEMU and the guest
    image)."""
    out = []
    for tool, pkg in (("iperf3", "iperf3"), ("mmdebstrap", "mmdebstrap")):
        found = shutil.which(tool)
        out.append(Check(tool, bool(found), found or "not found",
                         required=tool == "iperf3", fix=f"apt-get install {pkg}"))
    return out


def check_kvm(qemu) -> Check:
    """Whether a guest boots under KVM with qemu; not required, TCG works."""
    if not os.path.exists("/dev/kvm"):
        return Check("kvm", False, "/dev/kvm absent: guests run under TCG (slower)", required=False)
    if qemu is None:
        return Check("kvm", False, "not probed (no QEMU)", required=False)
    from .guest import kvm_usable
    usable = kvm_usable(qemu)
    return Check("kvm", usable, "a guest boots under KVM" if usable else
                 "/dev/kvm exists but a guest does not boot under it (nested?): using TCG",
                 required=False)


def check_guest_image() -> Check:
    """Whether the guest image of the current recipe has been built."""
    from vnic.lab.image import image_hash
    path = cache_dir() / "guest" / image_hash()
    ok = (path / "info.json").exists()        # written last by the builder
    return Check("guest-image", ok, str(path) if ok else f"not built ({path})",
                 fix="run `vnic setup`")


def run_checks(probe_kvm: bool = True) -> list[Check]:
    """Every check, in the order `vnic doctor` prints them; probe_kvm=False
    skips booting a guest under KVM."""
    qemu_check, qemu = check_qemu()
    checks = [qemu_check, check_tun(), check_netns(), *check_tools(), check_guest_image()]
    if probe_kvm:
        checks.append(check_kvm(qemu))
    return checks

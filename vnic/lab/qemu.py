"""Find a QEMU with the vfio-user client, or build a private one.

QEMU's `vfio-user-pci` client exists from 10.1 on; Debian 12 ships 7.2. When
the system QEMU lacks it we unpack Debian trixie-backports' QEMU into a private
root (no chroot needed) and run it through that root's own dynamic loader.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .cache import cache_dir, cache_lock, remove_stale_tmp

MARKER = ".vnic-complete"  # written last: a root without it is a broken build

# Exactly the recipe from DESIGN.md (measured to work on Debian 12).
MMDEBSTRAP_ARGS = [
    "--variant=essential",
    "--include=qemu-system-x86/trixie-backports,qemu-system-data/trixie-backports,"
    "qemu-system-common/trixie-backports,seabios/trixie-backports,ipxe-qemu",
    "--aptopt=APT::Install-Recommends \"false\"",
    "--aptopt=APT::Default-Release \"trixie-backports\"",
]
SUITE = "trixie"
MIRRORS = [
    "deb http://deb.debian.org/debian trixie main",
    "deb http://deb.debian.org/debian trixie-backports main",
]


@dataclass
class Qemu:
    """A QEMU to run: its command line prefix, extra environment, version, and
    whether it has vfio-user-pci."""
    argv_prefix: list[str]          # command to exec, firmware -L options included
    env: dict = field(default_factory=dict)  # extra environment (QEMU_MODULE_DIR)
    version: str = ""
    has_vfio_user: bool = False

    def run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        """Run QEMU to completion (for queries such as -device help)."""
        return subprocess.run(self.argv_prefix + args, env={**os.environ, **self.env},
                              capture_output=True, text=True, **kw)


def qemu_root() -> Path:
    """Where the private QEMU is unpacked."""
    return cache_dir() / "qemu-root"


def _probe(q: Qemu) -> Qemu | None:
    """Fill version and has_vfio_user; None if the binary does not run."""
    try:
        v = q.run(["-version"], timeout=30)
        d = q.run(["-machine", "none", "-device", "help"], timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if v.returncode != 0:
        return None
    m = re.search(r"version (\S+)", v.stdout)
    q.version = m.group(1) if m else v.stdout.strip()
    q.has_vfio_user = '"vfio-user-pci"' in d.stdout
    return q


def _system_qemu() -> Qemu | None:
    exe = shutil.which("qemu-system-x86_64")
    return _probe(Qemu([exe])) if exe else None


def _private_qemu(root: Path) -> Qemu:
    """QEMU from an unpacked root, run through the root's loader and libraries."""
    lib = root / "usr/lib/x86_64-linux-gnu"
    argv = [str(root / "usr/lib64/ld-linux-x86-64.so.2"), "--library-path", str(lib),
            str(root / "usr/bin/qemu-system-x86_64")]
    # Debian's firmware files are absolute symlinks into /usr/share/seabios and
    # /usr/lib/ipxe; point QEMU at the real directories inside the root.
    for d in ("usr/share/qemu", "usr/share/seabios", "usr/lib/ipxe/qemu"):
        if (root / d).is_dir():
            argv += ["-L", str(root / d)]
    return Qemu(argv, {"QEMU_MODULE_DIR": str(lib / "qemu")})


def find_qemu() -> Qemu | None:
    """A QEMU with vfio-user-pci, without building anything: system first, then cache."""
    q = _system_qemu()
    if q and q.has_vfio_user:
        return q
    root = qemu_root()
    if (root / MARKER).exists():
        q = _probe(_private_qemu(root))
        if q and q.has_vfio_user:
            return q
    return None


def build_qemu_root(root: Path, log=print) -> None:
    """Build the private root with mmdebstrap: into a temp dir, marker, rename."""
    if not shutil.which("mmdebstrap"):
        raise RuntimeError("mmdebstrap not found: apt-get install mmdebstrap")
    tmp = root.with_name(root.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = ["mmdebstrap", "--quiet", *MMDEBSTRAP_ARGS, SUITE, str(tmp), *MIRRORS]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"mmdebstrap failed ({r.returncode}):\n{r.stderr[-4000:]}")
    q = _probe(_private_qemu(tmp))
    if not q or not q.has_vfio_user:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError("the private QEMU does not run or lacks vfio-user-pci")
    (tmp / MARKER).write_text(json.dumps({"version": q.version,
                                          "built_s": round(time.monotonic() - t0, 1)}))
    shutil.rmtree(root, ignore_errors=True)
    os.rename(tmp, root)
    log(f"vnic: built private QEMU {q.version} in {root} "
        f"({time.monotonic() - t0:.0f} s)")


def ensure_qemu(log=print) -> Qemu:
    """A QEMU with vfio-user-pci: the system one if it has it, else a private build."""
    sysq = _system_qemu()
    if sysq and sysq.has_vfio_user:
        log(f"vnic: using system QEMU {sysq.version} ({sysq.argv_prefix[0]})")
        return sysq
    why = (f"system QEMU {sysq.version} lacks vfio-user-pci" if sysq
           else "no system qemu-system-x86_64")
    root = qemu_root()
    with cache_lock("qemu-root"):
        remove_stale_tmp(root.parent, root.name + ".tmp-*")
        if not (root / MARKER).exists():
            if root.exists():
                log(f"vnic: {root} is an interrupted build, rebuilding")
                shutil.rmtree(root)
            log(f"vnic: {why}; building QEMU from Debian trixie-backports "
                f"into {root} (about a minute)")
            build_qemu_root(root, log)
        q = _probe(_private_qemu(root))
    if not q or not q.has_vfio_user:
        raise RuntimeError(f"private QEMU in {root} is unusable; remove it and retry")
    log(f"vnic: {why}; using private QEMU {q.version} from {root}")
    return q

"""Where vnic keeps what it builds or downloads (QEMU root, guest image, venv).

Everything lives under one cache directory so that a fresh machine can be set
up idempotently and a user can wipe it with one `rm -rf`.
"""
from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The source checkout: the lab builds from its guest_images/ recipe.
REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """$VNIC_CACHE, or ~/.cache/vnic by default."""
    env = os.environ.get("VNIC_CACHE")
    path = Path(env) if env else Path.home() / ".cache" / "vnic"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Serialise builders of one cache entry across processes."""
    with open(cache_dir() / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def remove_stale_tmp(parent: Path, pattern: str = "*.tmp-*") -> None:
    """Remove build dirs named <x>.tmp-<pid> whose builder process is gone."""
    for p in parent.glob(pattern):
        pid = p.name.rsplit(".tmp-", 1)[-1]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(p, ignore_errors=True)

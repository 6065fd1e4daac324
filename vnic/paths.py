"""Where vnic keeps what it builds or downloads (QEMU root, guest image, venv).

Everything lives under one cache directory so that a fresh machine can be set
up idempotently and a user can wipe it with one `rm -rf`.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """$VNIC_CACHE, or ~/.cache/vnic by default."""
    env = os.environ.get("VNIC_CACHE")
    path = Path(env) if env else Path.home() / ".cache" / "vnic"
    path.mkdir(parents=True, exist_ok=True)
    return path

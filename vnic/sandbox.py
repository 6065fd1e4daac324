"""Giving up root once set-up is over (the C side is native/sandbox.c).

`vnic serve` needs root to open its TAP and sockets, and nothing after.
confine() then changes the process to an unprivileged user (by default
`nobody` when started as root): the sockets it made are handed to that
user (so it can still remove them, and a QEMU running as that user can
connect), the backend learns it has no root any more, every capability
goes, and a seccomp filter limits every thread to the system calls a
serving device makes (no execve, no ptrace, no mount, ...).
"""
from __future__ import annotations

import errno
import logging
import os
import pwd
import socket
from collections.abc import Iterable
from pathlib import Path

from ._native import lib
from .errors import ConfigError, DeviceError, check

log = logging.getLogger(__name__)
DEFAULT_USER = "nobody"


def target_user(name: str | None) -> pwd.struct_passwd | None:
    """Whom to become: the named user, `nobody` when root names none, or
    None to stay as we are (not root, root without capabilities, or --user
    root).  Raises ConfigError
    for an unknown user or, when not root, for a user other than ourselves."""
    if name is None and not privileged():
        return None
    try:
        entry = pwd.getpwnam(name or DEFAULT_USER)
    except KeyError:
        raise ConfigError(f"--user {name or DEFAULT_USER}: no such user") from None
    if entry.pw_uid == os.geteuid():
        return None
    if os.geteuid() != 0:
        raise ConfigError(f"--user {entry.pw_name}: only root can become another user")
    return None if entry.pw_uid == 0 else entry


CAP_SETUID = 7                       # linux/capability.h


def privileged() -> bool:
    """Root that can still become another user: root with no capabilities
    (setpriv --bounding-set=-all, a container without them) is treated as
    any unprivileged user."""
    return os.geteuid() == 0 and bool(int(proc_status().get("CapEff", "0"), 16) >> CAP_SETUID & 1)


def drop_bounding(user: pwd.struct_passwd | None) -> None:
    """Before any serving thread starts, once no program needs root any
    more: empty the capability bounding set, so that every thread the
    device starts has none either.  Nothing when staying as we are.
    Raises DeviceError if a capability stays."""
    if user is not None:
        check(lib.vnic_sandbox_drop_bounding(), "dropping the capability bounding set", DeviceError)


def remove_socket(path: str | Path) -> None:
    """Remove a socket we created at exit.  After the drop its directory may
    not be ours to change (a root-only directory): the socket then stays,
    with a warning (the next start replaces it)."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        pass
    except PermissionError:
        log.warning("%s stays behind: its directory is not writable by %s (remove it by hand, or "
                    "put sockets in a directory that user may write)", path,
                    pwd.getpwuid(os.geteuid()).pw_name)


def confine(user: pwd.struct_passwd | None, owned: Iterable[str | Path], backend: object) -> None:
    """Become user (if not None) with no capabilities, then confine every
    thread with the seccomp filter.  owned: the sockets we created, handed
    to user first.  Raises DeviceError if a step fails: the caller must not
    go on serving half-confined."""
    if user is not None:
        for path in owned:
            os.chown(path, user.pw_uid, user.pw_gid)
        getattr(backend, "drop_privileges", lambda: None)()
        check(lib.vnic_sandbox_drop(user.pw_uid, user.pw_gid), f"dropping root for {user.pw_name}",
              DeviceError)
        log.info("running as %s (uid %d), no capabilities", user.pw_name, user.pw_uid)
    elif privileged():
        log.warning("running as root (--user root): a guest that broke the data plane would own the host")
        return
    check(lib.vnic_sandbox_seccomp(), "installing the seccomp filter", DeviceError)


# ---- what the process can still do (`vnic ctl sandbox`) -----------------------

PROBE_EXEC = "/nonexistent/vnic-exec-probe"   # never a program: the probe cannot succeed


def proc_status(path: str = "/proc/self/status") -> dict[str, str]:
    """A /proc status file (a process's or a thread's) as field: value."""
    with open(path) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _threads_confined() -> bool:
    """Every thread: no capabilities at all (bounding set included) and the
    seccomp filter on."""
    for task in os.listdir("/proc/self/task"):
        try:
            status = proc_status(f"/proc/self/task/{task}/status")
        except FileNotFoundError:
            continue                       # a thread that just ended
        if int(status.get("CapBnd", "1"), 16) or int(status.get("CapEff", "1"), 16) \
                or status.get("Seccomp") != "2":
            return False
    return True


def _probe(action: object) -> str:
    """The errno name an attempt fails with, or "allowed"."""
    try:
        action()  # type: ignore[operator]
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return "allowed"


def _open_shadow() -> None:
    os.close(os.open("/etc/shadow", os.O_RDONLY))


def _raw_socket() -> None:
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()


def report() -> dict[str, object]:
    """Who the process runs as and what it may still do: its uid, effective
    capabilities, no_new_privs and seccomp mode (from /proc/self/status),
    and probes of what a compromised device would try first, each the
    errno it fails with: ENOENT for the exec probe means execve still
    runs (it looked for the file), EPERM that the filter refused it."""
    status = proc_status()
    return {
        "uid": os.getuid(), "user": pwd.getpwuid(os.getuid()).pw_name,
        "capabilities": status.get("CapEff", "?"), "no_new_privs": status.get("NoNewPrivs") == "1",
        "seccomp": {"0": "off", "1": "strict", "2": "filter"}.get(status.get("Seccomp", ""), "?"),
        "all_threads_confined": _threads_confined(),
        "probes": {"open /etc/shadow": _probe(_open_shadow),
                   "execve": _probe(lambda: os.execv(PROBE_EXEC, [PROBE_EXEC])),
                   "setuid 0": _probe(lambda: os.setuid(0)),
                   "raw socket": _probe(_raw_socket)},
    }

"""The lab's device as users run it: a child `vnic serve`, which gives up
root once its TAP and sockets are open (nobody, no capabilities, seccomp;
see vnic.sandbox), while the harness keeps root for QEMU and the network
namespace.  `vnic vm` and `vnic bench iperf` use it, so what they measure
and test is the confined device.  The child dies with the harness (its
parent-death signal survives the drop); counters come over its control
socket."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from vnic import control
from vnic.sandbox import proc_status

START_TIMEOUT = 60.0


NO_CAPABILITIES = ("--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all")


class ServedChild:
    """`vnic serve --backend BACKEND` in a child process, its sockets and log
    in sock_dir (made writable for the user it becomes).  Use as a context
    manager; .nic are the -device arguments for QEMU, .client its control
    socket.  setpriv: more setpriv(1) options for the child (NO_CAPABILITIES:
    none from the start).  Raises RuntimeError if it does not start, with its
    log."""

    def __init__(self, backend: str, sock_dir: str | Path, serve_args: list[str] | tuple = (),
                 control_path: str | Path | None = None, qmp: str | Path | None = None,
                 setpriv: list[str] | tuple = ()):
        self.dir = Path(sock_dir)
        self.dir.chmod(0o1777)
        self.socket = self.dir / "vnic.sock"
        self.control = Path(control_path) if control_path else self.dir / "vnic.ctl"
        self.log = self.dir / "serve.log"
        self.qmp = Path(qmp) if qmp else None
        self.argv = [sys.executable, "-m", "vnic.cli", "serve", "--socket", str(self.socket),
                     "--backend", backend, "--control", str(self.control),
                     *(["--qmp", str(qmp)] if qmp else []), *serve_args]
        self.setpriv = list(setpriv)        # more setpriv(1) options: e.g. no capabilities at all
        self.proc: subprocess.Popen[bytes] | None = None
        self.nic: list[str] = []
        self.client = control.Client(self.control)

    def __enter__(self) -> ServedChild:
        with open(self.log, "wb") as out:
            argv = ["setpriv", "--pdeathsig", "TERM", *self.setpriv, "--", *self.argv]
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            self.nic = self._wait_attach_args()
        except BaseException:
            self.stop()
            raise
        if self.qmp:
            threading.Thread(target=self._hand_over_qmp, name="qmp-hand-over", daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def output(self) -> str:
        """What the child printed (stdout and stderr)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_records(self) -> list[str]:
        """The lines the child logged (warnings and worse unless verbose),
        not its start-up banner."""
        return [line for line in self.output().splitlines() if line[:2].isdigit()]

    def _wait_attach_args(self) -> list[str]:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for line in self.output().splitlines():
                if "vfio-user-pci" in line:
                    args = shlex.split(line)
                    i = args.index("-device")
                    return args[i:i + 2]
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"vnic serve did not start:\n{self.output()[-3000:]}")

    def _hand_over_qmp(self) -> None:
        """QEMU makes its QMP socket as root: hand it to the child's user, so
        that the confined device can still replug itself."""
        assert self.qmp is not None and self.proc is not None
        deadline = time.monotonic() + 300
        while self.proc.poll() is None and time.monotonic() < deadline:
            if self.qmp.exists():
                uid, gid = self.child_ids()
                os.chown(self.qmp, uid, gid)
                return
            time.sleep(0.1)

    def child_ids(self) -> tuple[int, int]:
        """The uid and gid the child runs as now."""
        assert self.proc is not None
        fields = proc_status(f"/proc/{self.proc.pid}/status")
        return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])

    def stats(self) -> dict[str, int]:
        """The device counters, over the control socket."""
        return self.client.stats()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; a second call does nothing."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

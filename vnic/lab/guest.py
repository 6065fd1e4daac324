"""Boot the test guest under QEMU, run one command in it, collect its output.

The guest's init (guest_images/init) prints marker lines on the serial
console; we read the console from QEMU's stdout and cut the command's output
out from between `@@VNIC-BEGIN@@` and `@@VNIC-END rc=N@@`.

    with GuestProcess(qemu, image, nic_args, "ethtool -k eth0") as g:
        ...            # QEMU runs; e.g. g.wait_ready() then poke the host side
        res = g.wait()
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .cache import cache_dir
from .image import ensure_guest_image
from .qemu import Qemu

READY_RE = re.compile(r"@@VNIC-READY ([^\n]*)@@")
ERROR_RE = re.compile(r"@@VNIC-ERROR ([^\n]*)@@")
BEGIN = "@@VNIC-BEGIN@@\n"
END_RE = re.compile(r"@@VNIC-END rc=(\d+)@@")
CMDLINE_MAX = 2048 - 1  # x86 COMMAND_LINE_SIZE, including the NUL


@dataclass
class GuestResult:
    """What one guest run gave: the command's exit status and output, the
    console, and how QEMU ended."""
    rc: int | None            # the command's exit status; None if it never finished
    output: str               # its stdout+stderr, byte-exact (less serial \r)
    console_log: str          # the whole serial console
    error: str | None = None  # the guest's @@VNIC-ERROR, a timeout, or QEMU failing
    ready: dict = field(default_factory=dict)  # fields of the READY line (nic, driver, ...)
    boot_s: float | None = None  # QEMU start to READY marker (wall clock)
    elapsed_s: float = 0.0
    qemu_rc: int | None = None
    qemu_stderr: str = ""
    argv: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The command exited 0 and nothing went wrong."""
        return self.rc == 0 and self.error is None


def parse_console(log: str) -> dict:
    """rc, output, ready fields and error from a serial console log (\r\n -> \n)."""
    out: dict[str, Any] = {"rc": None, "output": "", "ready": {}, "error": None}
    if m := READY_RE.search(log):
        out["ready"] = dict(kv.split("=", 1) for kv in m.group(1).split() if "=" in kv)
    start = log.find(BEGIN)
    if start >= 0:
        start += len(BEGIN)
        if m := END_RE.search(log, start):
            out["output"], out["rc"] = log[start:m.start()], int(m.group(1))
        else:
            out["output"] = log[start:]
    if m := ERROR_RE.search(log):
        out["error"] = m.group(1)
    return out


def choose_accel(qemu: Qemu) -> str:
    """"kvm" if a guest boots under KVM here, else "tcg"."""
    return "kvm" if kvm_usable(qemu) else "tcg"


def guest_argv(qemu: Qemu, image, nic_args, cmd: str, ip: str | None = "10.213.0.2/24",
               mem_mb: int = 512, smp: int = 1, accel: str = "tcg", cpu: str | None = None,
               extra_args=(), append: str = "", shared_memory: bool = True) -> list[str]:
    """The QEMU command line for one guest run.

    shared_memory=False gives the guest plain anonymous RAM: vfio-user then
    maps it without file descriptors (the device's slow message path)."""
    params = ["console=ttyS0", "panic=-1", "loglevel=6"]
    if ip:
        params.append(f"vnic.ip={ip}")
    params.append("vnic.cmd=" + base64.b64encode(cmd.encode()).decode())
    if append:
        params.append(append)
    cmdline = " ".join(params)
    if len(cmdline) > CMDLINE_MAX:
        raise ConfigError(f"guest command too long for the kernel cmdline "
                         f"({len(cmdline)} > {CMDLINE_MAX} bytes after base64)")
    # Under TCG QEMU's default CPU (qemu64) moves packets about twice as fast
    # as -cpu max (measured with iperf3), so keep it unless asked otherwise.
    cpu = cpu or ("host" if accel == "kvm" else None)
    return [
        *qemu.argv_prefix,
        "-name", "vnic-guest",
        # several vCPUs under TCG: one host thread each (MTTCG)
        "-accel", accel + (",thread=multi" if accel == "tcg" and smp > 1 else ""),
        *(["-cpu", cpu] if cpu else []),
        "-smp", str(smp), "-m", f"{mem_mb}M",
        # Shared memfd RAM: lets vfio-user DMA_MAP pass fds (see DESIGN.md).
        *(["-object", f"memory-backend-memfd,id=mem,size={mem_mb}M,share=on",
            "-machine", "pc,memory-backend=mem"] if shared_memory else ["-machine", "pc"]),
        "-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", cmdline,
        *nic_args, *extra_args,
    ]


class GuestProcess:
    """A running guest. Start it (or use `with`), then wait(); never leaks QEMU.

    pass_fds: fds QEMU inherits (e.g. a TAP fd for `-netdev tap,fd=N`).
    QEMU also gets SIGKILL if the thread that started it dies (setpriv
    --pdeathsig), so start it from a thread that outlives the guest.
    """

    def __init__(self, qemu: Qemu, image, nic_args=(), cmd: str = "true",
                 ip: str | None = "10.213.0.2/24", mem_mb: int = 512, timeout: float = 180,
                 extra_args=(), accel: str | None = None, smp: int = 1, cpu: str | None = None,
                 pass_fds=(), append: str = "", echo=None, shared_memory: bool = True):
        self.qemu, self.timeout, self.pass_fds, self.echo = qemu, timeout, tuple(pass_fds), echo
        accel = accel or os.environ.get("VNIC_ACCEL") or choose_accel(qemu)
        self.argv = guest_argv(qemu, image, list(nic_args), cmd, ip, mem_mb, smp, accel,
                               cpu, list(extra_args), append, shared_memory)
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = bytearray()
        self._err = bytearray()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._threads: list[threading.Thread] = []
        self.t_start: float | None = None
        self.t_ready: float | None = None
        self.result: GuestResult | None = None

    def start(self) -> GuestProcess:
        """Start QEMU and the threads that read its console and stderr; returns
        self."""
        argv = self.argv
        if shutil.which("setpriv"):
            argv = ["setpriv", "--pdeathsig", "KILL", "--", *argv]
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, pass_fds=self.pass_fds,
                                     env={**os.environ, **self.qemu.env})
        for stream, buf, watch in ((self.proc.stdout, self._buf, True),
                                   (self.proc.stderr, self._err, False)):
            t = threading.Thread(target=self._pump, args=(stream, buf, watch), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _pump(self, stream, buf: bytearray, watch: bool) -> None:
        while chunk := stream.read1(65536):
            with self._lock:
                buf += chunk
            if self.echo and watch:
                self.echo(chunk.decode(errors="replace"))
            if watch and not self._ready.is_set() and (b"@@VNIC-READY" in buf
                                                         or b"@@VNIC-ERROR" in buf):
                self.t_ready = time.monotonic()
                self._ready.set()

    def console(self) -> str:
        """The serial console so far, with CRLF as LF."""
        with self._lock:
            return self._buf.decode(errors="replace").replace("\r\n", "\n")

    def stderr(self) -> str:
        """QEMU's stderr so far."""
        with self._lock:
            return self._err.decode(errors="replace")

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the guest printed READY (or ERROR) or QEMU exited."""
        assert self.proc is not None, "start() the guest first"
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return False
        return True

    def kill(self) -> None:
        """Kill QEMU if it still runs, reap it and wait for the reader threads."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait()
            for t in self._threads:
                t.join(timeout=5)

    def wait(self) -> GuestResult:
        """Wait for QEMU to exit (killing it at the timeout) and parse the console."""
        if self.result:
            return self.result
        assert self.proc is not None and self.t_start is not None, "start() the guest first"
        timed_out = False
        try:
            remaining = self.timeout - (time.monotonic() - self.t_start)
            self.proc.wait(timeout=max(remaining, 0))
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            self.kill()  # also on KeyboardInterrupt: never leave QEMU behind
        self.result = self._parse(timed_out)
        return self.result

    def _parse(self, timed_out: bool) -> GuestResult:
        assert self.proc is not None and self.t_start is not None
        log = self.console()
        res = GuestResult(console_log=log, argv=self.argv,
                          elapsed_s=time.monotonic() - self.t_start,
                          qemu_rc=self.proc.returncode, qemu_stderr=self.stderr(),
                          **parse_console(log))
        if self.t_ready and res.ready:
            res.boot_s = self.t_ready - self.t_start
        if res.error is None and timed_out:
            res.error = f"timeout after {self.timeout:.0f} s"
        elif res.error is None and res.rc is None:
            res.error = (f"QEMU exited ({res.qemu_rc}) before the command finished: "
                         + res.qemu_stderr.strip()[-2000:])
        return res

    def __enter__(self) -> GuestProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def run_guest(qemu: Qemu, image, nic_args=(), cmd: str = "true",
              ip: str | None = "10.213.0.2/24", mem_mb: int = 512, timeout: float = 180,
              extra_args=(), **kw) -> GuestResult:
    """Boot, run `cmd` in the guest, power off; blocking. See GuestProcess for kw."""
    with GuestProcess(qemu, image, nic_args, cmd, ip=ip, mem_mb=mem_mb, timeout=timeout,
                      extra_args=extra_args, **kw) as g:
        return g.wait()


# --- KVM probe ------------------------------------------------------------

def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def kvm_usable(qemu: Qemu, timeout: float = 10.0) -> bool:
    """Does a guest actually boot under KVM here? (nested KVM may hang at boot.)

    Boots the test guest with -accel kvm and a no-op command and waits for its
    end marker. The answer is cached per host boot and QEMU version, since
    /dev/kvm existing says nothing about whether nested guests run.
    $VNIC_ACCEL=tcg|kvm overrides the probe.
    """
    forced = os.environ.get("VNIC_ACCEL")
    if forced in ("tcg", "kvm"):
        return forced == "kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    cache = cache_dir() / "kvm-probe.json"
    key = f"{_boot_id()}:{qemu.version}"
    try:
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return bool(saved["usable"])
    except (OSError, ValueError, KeyError):
        pass
    image = ensure_guest_image(log=lambda *a: None)
    usable = False
    try:
        with GuestProcess(qemu, image, [], "true", ip=None, timeout=timeout, accel="kvm",
                          mem_mb=128) as g:
            deadline = time.monotonic() + timeout
            # Nested KVM here stops with "KVM internal error" and then hangs:
            # give up as soon as QEMU says so instead of waiting out the timeout.
            assert g.proc is not None                  # started by `with`
            while g.proc.poll() is None and time.monotonic() < deadline:
                if "KVM internal error" in g.stderr():
                    break
                if "@@VNIC-END" in g.console():
                    usable = g.wait().rc == 0
                    break
                time.sleep(0.1)
    except Exception:
        usable = False
    cache.write_text(json.dumps({"key": key, "usable": usable}))
    return usable

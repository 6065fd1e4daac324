"""The `vnic` command: a thin layer over vnic.device, vnic.lab.vm and friends."""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .backends import BackendError, parse, parse_tap_gro
from .errors import FeatureError
from .net.faults import FaultSpec
from .net.virtio_net import MAX_QUEUE_PAIRS, RX_COPY_MODES, TX_MODES, check_queue_pairs
from .telemetry.capture import DIRECTIONS as CAPTURE_DIRECTIONS
from .telemetry.capture import WHAT as CAPTURE_WHAT
from .telemetry.capture import CaptureSpec

if TYPE_CHECKING:
    from .control import Client
    from .telemetry.capture import CaptureStatus
    from .telemetry.flows import FlowsResult


def _features_help() -> str:
    from .virtio.features import IMPLEMENTED, NAMES
    names = sorted(n for n, f in NAMES.items() if f in IMPLEMENTED)
    return ("comma list of +name/-name changing the offered features before negotiation "
            f"(implemented: {', '.join(names)})")


TX_MODE_HELP = ("segment (default): the device segments TSO/USO/UFO super-frames into wire frames; "
                "passthrough: a TAP backend gets them whole and the host kernel segments")


TAP_GRO_HELP = ("on (default), off or MICROSECONDS: the host's GRO merges the wire segments the "
                "device writes to the TAP, holding a merged packet open up to 2000 us (or the time "
                "given); off for captures on the TAP that show every wire frame")


RX_COALESCE_HELP = "merge received TCP segments into super-frames for TSO-capable guests (default on)"
RX_COPY_HELP = ("direct: received frames are read straight into the guest's buffers where possible "
                "(one copy, the default); bounce: always through the device's own buffer (two copies, "
                "the path before, to compare)")


def cmd_setup(args: argparse.Namespace) -> int:
    """`vnic setup`: find or build a QEMU with vfio-user-pci, then build the
    guest image. Returns the exit status."""
    from vnic.lab.image import ensure_guest_image

    from .lab.qemu import ensure_qemu
    ensure_qemu()
    image = ensure_guest_image()
    print(f"vnic: guest image ready: kernel {image.kernel}, initrd {image.initrd}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """`vnic doctor`: print every check. Exit status 1 if a required one
    failed."""
    from .lab.doctor import run_checks
    failed = False
    for check in run_checks(probe_kvm=not args.no_kvm_probe):
        mark = "ok " if check.ok else ("MISSING" if check.required else "note")
        print(f"[{mark:>7}] {check.name:12} {check.detail}")
        if not check.ok and check.fix:
            print(f"{'':10} fix: {check.fix}")
        failed |= check.required and not check.ok
    return 1 if failed else 0


def _positive_int(text: str) -> int:
    """argparse type for counts and durations: iperf3 -t 0 would never end."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _queue_pairs(text: str) -> int:
    """argparse type for --queues: 1 to MAX_QUEUE_PAIRS."""
    try:
        value = int(text)
        check_queue_pairs(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a queue pair count, 1 to {MAX_QUEUE_PAIRS}") from None
    return value


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(3600):
        pass


def cmd_serve(args: argparse.Namespace) -> int:
    """`vnic serve`: serve one device until SIGINT or SIGTERM, with the control
    socket, QMP replug and the metrics exporter when asked. Errors
    (BackendError, ConfigError, FeatureError, OSError) go to main()."""
    from .device import Device, qemu_memory_args
    from .sandbox import confine, drop_bounding, target_user
    user = target_user(args.user)          # an unknown --user fails before anything opens
    pcap = capture_spec(args)
    faults = FaultSpec.parse(args.faults) if args.faults else None
    backend = parse(args.backend, parse_tap_gro(args.tap_gro))
    dev = Device(backend, mac=args.mac, mtu=args.mtu, features=args.features or "",
                 tx_mode=args.tx_mode, rx_coalesce=args.rx_coalesce == "on", speed_mbps=args.speed,
                 flow_table_max=args.flow_table_max, queues=args.queues, rx_copy=args.rx_copy)
    try:
        drop_bounding(user)                # the TAP is up: no more programs that need root
        if faults:
            dev.set_faults(faults)
            print(f"vnic: injecting faults ({args.faults})")
        if pcap:
            dev.capture.start(pcap)
            print(f"vnic: capturing {pcap.what} frames ({pcap.direction}) into {pcap.file}")
        dev.serve(args.socket)
        if args.qmp:
            dev.attach_qmp(args.qmp, args.qemu_id)
        control = None
        if args.control:
            from .control import ControlServer
            control = ControlServer(args.control, dev)
            control.start()
        if args.metrics_port:
            from .telemetry.metrics import serve_metrics
            serve_metrics(dev.per_queue_stats, args.metrics_port)
            print(f"vnic: Prometheus metrics on http://127.0.0.1:{args.metrics_port}/metrics")
        # set-up is over: everything that needed root is open or loaded
        dev.net.prepare_steering()
        sockets = [p for p in (dev.socket_path, control.path if control else None) if p]
        sockets += getattr(dev.backend, "owned_paths", list)()
        confine(user, sockets, dev.backend)
        if user:
            print(f"vnic: running as {user.pw_name} (uid {user.pw_uid}), no capabilities, seccomp on")
        print(f"vnic: serving virtio-net {dev.mac} (backend {dev.backend.describe()}, mtu {dev.net.mtu}, "
              f"{dev.net.queue_pairs} queue pair{'s' if dev.net.queue_pairs > 1 else ''}) "
              f"on {dev.socket_path}" + (f", control on {args.control}" if control else ""))
        print("vnic: offered features: " + ",".join(dev.offered_features))
        print("Attach it to QEMU (guest RAM must be shared memory) with:")
        monitor = ["-qmp", f"unix:{args.qmp},server=on,wait=off"] if args.qmp else []
        print("  " + " ".join(shlex.quote(a) for a in qemu_memory_args(512) + dev.qemu_args() + monitor))
        sys.stdout.flush()
        _wait_for_signal()
        if control:
            control.close()
    finally:
        counters = dev.stats()
        dev.close()
    print(f"vnic: stopped; tx_packets {counters['tx_packets']} rx_packets {counters['rx_packets']}")
    return 0


def cmd_vm(args: argparse.Namespace) -> int:
    """`vnic vm`: boot the test guest with a vnic NIC, run the command or
    iperf3 and print the result. Exit status 1 if the command failed or the
    guest reported an error."""
    from rich.console import Console

    from .lab.vm import summary, vm
    log = (lambda *_: None) if args.json else _progress
    console = (lambda chunk: print(chunk, end="", file=sys.stderr, flush=True)) if args.console else None
    if args.faults:
        FaultSpec.parse(args.faults)        # a bad spec fails here, before anything boots
    res = vm(iperf_seconds=args.iperf, cmd=args.cmd, features=args.features or "",
             mtu=args.mtu, timeout=args.timeout, tx_mode=args.tx_mode,
             rx_coalesce=args.rx_coalesce == "on", tap_offloads=args.tap_offloads == "on",
             tap_gro_us=parse_tap_gro(args.tap_gro), control=args.control,
             flow_table_max=args.flow_table_max, smp=args.smp, queues=args.queues, rx_copy=args.rx_copy,
             pcap=capture_spec(args), faults=args.faults, log=log, console=console)
    if args.json:
        print(json.dumps(res.as_json(), indent=2))
    else:
        # the command's output is what --cmd asked for; iperf3's raw JSON only with -v
        if res.output and (args.iperf is None or args.verbose):
            print(res.output, end="" if res.output.endswith("\n") else "\n")
        Console().print(summary(res))
        if res.tx_gbps is not None:
            print(f"iperf3: guest->host {res.tx_gbps:.2f} Gbit/s, host->guest {res.rx_gbps:.2f} Gbit/s")
        if res.error:
            print(f"vnic: guest error: {res.error}", file=sys.stderr)
    return 0 if res.rc == 0 and not res.error else 1


def _progress(line: str) -> None:
    """A step of `vnic vm` as it happens, stamped with the time."""
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def cmd_bench(args: argparse.Namespace) -> int:
    """`vnic bench iperf|offloads|cable|engine`: run one benchmark and return its
    exit status."""
    if args.bench == "engine":
        from vnic.lab.bench import engine
        return engine.main(as_json=args.json)
    if args.bench == "cable":
        from vnic.lab.bench import cable
        return cable.main(seconds=args.seconds, as_json=args.json)
    if args.bench == "offloads":
        from vnic.lab.bench import offloads
        return offloads.main(seconds=args.seconds, rounds=args.rounds, builtin=args.builtin,
                             tx_mode=args.tx_mode, as_json=args.json)
    from vnic.lab.bench import iperf_parity as bench_iperf
    shape = bench_iperf.Shape(queues=args.queues, smp=args.smp or args.queues, parallel=args.parallel)
    return bench_iperf.main(seconds=args.seconds, as_json=args.json, tx_mode=args.tx_mode,
                            tap_gro_us=parse_tap_gro(args.tap_gro), shape=shape)


def cmd_stats(args: argparse.Namespace) -> int:
    """`vnic stats`: counters or flows of a running `vnic serve --control`,
    once (a table or JSON) or live. Exit status 1, with the message on
    stderr, if the control socket is unreachable or refuses."""
    from rich.console import Console

    from .control import Client, ControlError
    from .telemetry.metrics import flow_table, table, watch, watch_flows
    client = Client(args.control)
    try:
        if args.flows:
            read: Callable[[], FlowsResult] = lambda: client.flows(top=args.top, sort=args.sort)
            if args.watch:
                watch_flows(read, args.interval)
            elif args.json:
                print(json.dumps(read(), indent=2))
            else:
                # piped: no terminal width to fit, keep addresses whole
                Console(width=None if sys.stdout.isatty() else 200).print(flow_table(read()))
        elif args.watch:
            watch(lambda: client.stats(per_queue=True), args.interval)
        elif args.json:
            print(json.dumps(client.stats(per_queue=args.per_queue), indent=2))
        else:
            Console().print(table(client.stats(per_queue=True), show_zero=args.all))
    except KeyboardInterrupt:
        pass
    except ControlError as exc:
        print(f"vnic stats: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_ctl(args: argparse.Namespace) -> int:
    """`vnic ctl ACTION`: one control-socket request, its result printed as
    JSON. Exit status 1, with the message on stderr, on a ControlError or a
    bad --tap-gro (BackendError)."""
    from .control import Client, ControlError
    client = Client(args.control)
    try:
        if args.action == "stats":
            result = client.stats(per_queue=args.per_queue)
            if not args.json:
                rows = result if args.per_queue else [result]
                for q, row in enumerate(rows):
                    if args.per_queue:
                        print(f"queue pair {q}:")
                    for name, value in row.items():
                        if value or args.all:
                            print(f"  {name:24} {value}")
                return 0
        elif args.action == "link":
            result = client.link(args.state == "up")
        elif args.action == "features":
            result = client.features(enable=args.enable.split(",") if args.enable else (),
                                     disable=args.disable.split(",") if args.disable else (),
                                     replug=args.replug)
        elif args.action == "flows":
            result = client.flows(top=args.top, sort=args.sort)
        elif args.action == "capture":
            result = _ctl_capture(client, args)
        elif args.action == "faults":
            result = _ctl_faults(client, args)
        elif args.action == "reset":
            result = client.reset(replug=args.replug)
        elif args.action == "mode":
            coalesce = None if args.rx_coalesce is None else args.rx_coalesce == "on"
            gro = None if args.tap_gro is None else parse_tap_gro(args.tap_gro)
            result = client.mode(tx=args.tx, rx_coalesce=coalesce, tap_gro_us=gro)
        else:
            result = client.call(args.action)
    except (ControlError, BackendError) as exc:
        print(f"vnic ctl: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def _ctl_capture(client: Client, args: argparse.Namespace) -> CaptureStatus:
    if args.capture_action == "start":
        return client.capture(args.file, snaplen=args.snaplen, direction=args.direction,
                              what=args.what, buffer_kib=args.buffer)
    return client.capture_stop() if args.capture_action == "stop" else client.capture_status()


def _ctl_faults(client: Client, args: argparse.Namespace) -> dict[str, object]:
    rates = {name: getattr(args, name)
             for name in ("drop", "duplicate", "corrupt", "bad_csum", "reorder", "delay", "jitter", "rate")}
    if args.clear:
        return client.clear_faults()
    result = None
    if any(v is not None for v in rates.values()):
        result = client.faults(**{k: v or 0 for k, v in rates.items()}, seed=args.seed, queue=args.queue,
                               direction=args.direction)
    if args.rx_starve is not None:
        result = client.starve_rx(args.rx_starve)
    if args.flap is not None:
        result = client.flap(args.flap)
    return result if result is not None else client.faults_state()


def _capture_options(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """The options of a capture: `vnic ctl capture start` and, prefixed
    with pcap-, `--pcap` on serve and vm."""
    p.add_argument(f"--{prefix}snaplen", type=int, default=None, metavar="N",
                   help="bytes kept of each frame (default: all of it)")
    p.add_argument(f"--{prefix}direction", choices=list(CAPTURE_DIRECTIONS), default="both")
    p.add_argument(f"--{prefix}what", choices=list(CAPTURE_WHAT), default="wire",
                   help="wire: frames to and from the backend (after segmentation, before coalescing); "
                        "guest: what the guest handed over and was given, its virtio-net header "
                        "in each packet's comment")
    p.add_argument(f"--{prefix}buffer", type=int, default=None, metavar="KIB",
                   help="each queue pair's capture ring in KiB (default 4096); a full ring counts "
                        "capture_drops, never slows the NIC")


def capture_spec(args: argparse.Namespace) -> CaptureSpec | None:
    """The --pcap capture of serve and vm, or None.  ConfigError for a bad value."""
    if not args.pcap:
        return None
    given = {"snaplen": args.pcap_snaplen, "buffer_kib": args.pcap_buffer}
    return CaptureSpec(os.path.abspath(args.pcap), direction=args.pcap_direction, what=args.pcap_what,
                       **{k: v for k, v in given.items() if v is not None}).check()


def _pcap_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pcap", metavar="FILE", help="capture into this pcapng file from the start")
    _capture_options(p, "pcap-")
    p.add_argument("--faults", metavar="SPEC",
                   help="inject faults from the start: drop=P,duplicate=P,corrupt=P,bad_csum=P,reorder=P,"
                        "delay=MS,jitter=MS,rate=MBIT,seed=S,queue=N,direction=rx|tx|both (P in percent; "
                        "see vnic ctl faults)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of the `vnic` command; each subcommand sets func to its cmd_*
    function."""
    p = argparse.ArgumentParser(prog="vnic", description="An out-of-process virtio-net NIC for QEMU (vfio-user).")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("setup", help="find or build a QEMU with vfio-user-pci and the test guest image")
    s.set_defaults(func=cmd_setup)

    s = sub.add_parser("doctor", help="check that this machine can run vnic")
    s.add_argument("--no-kvm-probe", action="store_true", help="skip the KVM boot probe")
    s.set_defaults(func=cmd_doctor)

    s = sub.add_parser("serve", help="serve one virtio-net device on a vfio-user socket")
    s.add_argument("--socket", required=True, help="UNIX socket path for QEMU's vfio-user-pci")
    s.add_argument("--backend", default="null",
                   help="tap:IFNAME, tap:IFNAME@NETNS, stream:ADDR (connect; QEMU's -netdev stream "
                        "framing, passt's socket), stream-listen:ADDR, dgram:LOCAL,REMOTE or null "
                        "(default); ADDR: a UNIX socket path with a '/', or HOST:PORT")
    s.add_argument("--mac", help="MAC address (default: random 52:54:00:xx:xx:xx)")
    s.add_argument("--mtu", type=int, default=1500)
    s.add_argument("--speed", type=int, default=10000, help="link speed reported to the guest, Mbit/s")
    s.add_argument("--features", help=_features_help())
    s.add_argument("--control", help="JSON-lines control socket path")
    s.add_argument("--flow-table-max", type=int, metavar="N",
                   help="flows kept for `vnic stats --flows`, per queue pair (default 4096; 0: off)")
    s.add_argument("--qmp", help="QEMU's QMP socket (-qmp unix:PATH,server=on,wait=off), for replug")
    s.add_argument("--qemu-id", default="vnic0", help="the id QEMU knows the device by (default vnic0)")
    s.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on 127.0.0.1:PORT")
    s.add_argument("--tx-mode", choices=list(TX_MODES), default="segment", help=TX_MODE_HELP)
    s.add_argument("--tap-gro", default="on", metavar="on|off|US", help=TAP_GRO_HELP)
    s.add_argument("--rx-coalesce", choices=["on", "off"], default="on", help=RX_COALESCE_HELP)
    s.add_argument("--rx-copy", choices=list(RX_COPY_MODES), default="direct", help=RX_COPY_HELP)
    s.add_argument("--user", metavar="USER",
                   help="whom to run as once the TAP and sockets are open (default, as root: nobody; "
                        "root keeps root and no sandbox)")
    _pcap_option(s)
    s.add_argument("--queues", type=_queue_pairs, default=1, metavar="N",
                   help=f"RX/TX queue pairs, 1 to {MAX_QUEUE_PAIRS} (default 1; more offers MQ, and a TAP "
                        "needs to be multiqueue: vnic creates it so, or `ip tuntap add ... multi_queue`)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("stats", help="counters of a running `vnic serve --control PATH`")
    s.add_argument("--control", required=True)
    s.add_argument("--json", action="store_true")
    s.add_argument("--per-queue", action="store_true", help="with --json: one object per queue pair")
    s.add_argument("--watch", action="store_true", help="live view with rates (Ctrl-C to stop)")
    s.add_argument("--interval", type=float, default=1.0)
    s.add_argument("--all", action="store_true", help="also the counters that are zero")
    s.add_argument("--flows", action="store_true", help="per-flow statistics (5-tuple, direction, offloads)")
    s.add_argument("--top", type=int, metavar="N", help="with --flows: the N largest flows")
    s.add_argument("--sort", choices=["bytes", "packets", "last_seen"], default="bytes",
                   help="with --flows: order (largest or most recent first)")
    s.set_defaults(func=cmd_stats)

    s = sub.add_parser("ctl", help="talk to a running `vnic serve --control PATH`")
    s.add_argument("--control", required=True, help="the control socket path")
    ctl = s.add_subparsers(dest="action", required=True)
    ctl.add_parser("info", help="offered and negotiated features, filter, modes")
    c = ctl.add_parser("stats", help="device counters")
    c.add_argument("--json", action="store_true")
    c.add_argument("--per-queue", action="store_true")
    c.add_argument("--all", action="store_true", help="also the counters that are zero")
    c = ctl.add_parser("link", help="carrier up or down (the guest sees it at once)")
    c.add_argument("state", choices=["up", "down"])
    c = ctl.add_parser("features", help="show or change the offer (effective at the next negotiation)")
    c.add_argument("--enable", help="comma list of feature names")
    c.add_argument("--disable", help="comma list of feature names")
    c.add_argument("--replug", action="store_true",
                   help="have QEMU unplug and replug the NIC so the guest renegotiates now (needs serve --qmp)")
    c = ctl.add_parser("mode", help="show or change the TX segmentation mode, receive coalescing "
                       "and the TAP's host GRO")
    c.add_argument("--tx", choices=list(TX_MODES))
    c.add_argument("--rx-coalesce", choices=["on", "off"])
    c.add_argument("--tap-gro", metavar="on|off|US",
                   help="the host GRO flush timeout, live: on (2000 us), off (0: GRO flushes after every "
                        "frame) or microseconds; a TAP served with --tap-gro off cannot turn it on")
    ctl.add_parser("announce", help="ask the guest to announce itself (gratuitous ARP)")
    c = ctl.add_parser("flows", help="per-flow statistics as JSON")
    c.add_argument("--top", type=int, metavar="N")
    c.add_argument("--sort", choices=["bytes", "packets", "last_seen"], default="bytes")
    ctl.add_parser("replug", help="have QEMU unplug and replug the NIC (the guest renegotiates)")
    ctl.add_parser("sandbox", help="the user, capabilities and seccomp mode the device runs with")
    c = ctl.add_parser("reset", help="back to the start-up offer, modes and link up; counters from zero")
    c.add_argument("--replug", action="store_true", help="and replug so the guest renegotiates now")
    c = ctl.add_parser("capture", help="pcapng capture of what the NIC sends and receives")
    cap = c.add_subparsers(dest="capture_action", required=True)
    c = cap.add_parser("start", help="start capturing into FILE (tshark/Wireshark/scapy read it)")
    c.add_argument("file", metavar="FILE")
    _capture_options(c)
    cap.add_parser("stop", help="stop; prints what was written and dropped")
    cap.add_parser("status", help="the capture now")
    c = ctl.add_parser("faults", help="inject drops, duplicates, corruption (percent of frames, seeded); "
                                      "no rate given: show the faults in force")
    c.add_argument("--queue", type=int, metavar="N", help="this queue pair only (default: all)")
    c.add_argument("--direction", choices=["rx", "tx", "both"], default="both")
    for name, what in (("drop", "frames dropped"), ("duplicate", "frames sent or delivered twice"),
                       ("corrupt", "frames with a payload byte changed after the checksums"),
                       ("bad-csum", "received frames given a wrong checksum yet marked DATA_VALID "
                                    "(--direction rx)")):
        c.add_argument(f"--{name}", type=float, metavar="P", help=f"percent of {what}")
    c.add_argument("--reorder", type=float, metavar="P", help="percent of frames that skip --delay, overtaking")
    c.add_argument("--delay", type=float, metavar="MS", help="hold every frame MS milliseconds (in order)")
    c.add_argument("--jitter", type=float, metavar="MS", help="... give or take up to MS (order kept)")
    c.add_argument("--rate", type=float, metavar="MBIT", help="the link's rate in Mbit/s")
    c.add_argument("--seed", type=int, default=0, help="the generator's seed: the same seed replays the same decisions")
    c.add_argument("--rx-starve", type=int, metavar="MS", help="deliver nothing to the guest for MS milliseconds")
    c.add_argument("--flap", type=int, metavar="MS", help="link down now, up again after MS milliseconds")
    c.add_argument("--clear", action="store_true", help="no injected faults anywhere, no episode under way")
    s.set_defaults(func=cmd_ctl)

    s = sub.add_parser("vm", help="boot the test guest with a vnic NIC and run a command or iperf3")
    s.add_argument("--iperf", type=_positive_int, metavar="SECONDS", help="run iperf3 both ways for SECONDS")
    s.add_argument("--cmd", help="shell command to run in the guest")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("-v", "--verbose", action="store_true", help="also print iperf3's raw JSON reports")
    s.add_argument("--console", action="store_true", help="the guest's serial console on stderr, as it comes")
    s.add_argument("--features", help=_features_help())
    s.add_argument("--mtu", type=int, default=1500)
    s.add_argument("--timeout", type=float, help="seconds before the guest is killed")
    s.add_argument("--tx-mode", choices=list(TX_MODES), default="segment", help=TX_MODE_HELP)
    s.add_argument("--tap-gro", default="on", metavar="on|off|US", help=TAP_GRO_HELP)
    s.add_argument("--rx-coalesce", choices=["on", "off"], default="on", help=RX_COALESCE_HELP)
    s.add_argument("--rx-copy", choices=list(RX_COPY_MODES), default="direct", help=RX_COPY_HELP)
    s.add_argument("--control", help="control socket while the guest runs (vnic ctl --control PATH ...)")
    s.add_argument("--flow-table-max", type=int, metavar="N",
                   help="flows kept for `vnic stats --flows`, per queue pair (default 4096; 0: off)")
    s.add_argument("--tap-offloads", choices=["on", "off"], default="on",
                   help="off: the host side of the TAP sends wire-size frames (no TSO/GSO)")
    _pcap_option(s)
    s.add_argument("--smp", type=_positive_int, default=1, metavar="N",
                   help="the guest's vCPUs (multi-threaded TCG under TCG; default 1)")
    s.add_argument("--queues", type=_queue_pairs, metavar="N",
                   help=f"the NIC's queue pairs, 1 to {MAX_QUEUE_PAIRS} (default: --smp)")
    s.set_defaults(func=cmd_vm)

    s = sub.add_parser("bench", help="benchmarks (ratios against a baseline measured in the same run)")
    bench = s.add_subparsers(dest="bench", required=True)
    b = bench.add_parser("iperf", help="vnic against QEMU's built-in virtio-net, iperf3 both ways")
    b.add_argument("--seconds", type=_positive_int, default=5)
    b.add_argument("--json", action="store_true")
    b.add_argument("--tx-mode", choices=list(TX_MODES), default="segment", help=TX_MODE_HELP)
    b.add_argument("--tap-gro", default="on", metavar="on|off|US", help=TAP_GRO_HELP)
    b.add_argument("--queues", type=_queue_pairs, default=1, metavar="N",
                   help="queue pairs of both devices (the built-in one with mq=on; default 1)")
    b.add_argument("--smp", type=_positive_int, metavar="N", help="the guest's vCPUs (default: --queues)")
    b.add_argument("-P", "--parallel", type=_positive_int, default=1, metavar="N",
                   help="iperf3 parallel streams (default 1)")
    b.set_defaults(func=cmd_bench)
    b = bench.add_parser("offloads", help="guest->host with the device's TX offloads on against off, "
                         "interleaved rounds (and the built-in device's for reference)")
    b.add_argument("--seconds", type=_positive_int, default=5)
    b.add_argument("--rounds", type=_positive_int, default=3)
    b.add_argument("--builtin", action=argparse.BooleanOptionalAction, default=True,
                   help="also run QEMU's virtio-net with csum on and off (default: on)")
    b.add_argument("--tx-mode", choices=list(TX_MODES), default="segment", help=TX_MODE_HELP)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)
    b = bench.add_parser("cable", help="two guests back to back: QEMU's virtio-net on a -netdev stream "
                         "pair against two vnic devices on a stream cable, iperf3 one way")
    b.add_argument("--seconds", type=_positive_int, default=5)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)
    b = bench.add_parser("engine", help="the C data plane alone: TSO GB/s against memcpy, TX ns/frame")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)
    return p


def _glue_feature_lists(argv: list[str]) -> list[str]:
    """`--features -csum,-tso4` reads naturally but argparse takes the
    leading '-' for an option: glue such a value to its flag."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--features" and arg[:1] in "+-" and not arg.startswith("--"):
            out[-1] = f"--features={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    """The `vnic` command: parse argv (default sys.argv[1:]), set up logging
    and run the subcommand; returns its exit status. Exits with status 2 for
    a bad value (ValueError, which includes ConfigError and FeatureError,
    and BackendError) and 1 for any other OSError or RuntimeError
    (DeviceError, ProtocolError, ReplugError among them); Ctrl-C returns
    130."""
    parser = build_parser()
    args = parser.parse_args(_glue_feature_lists(sys.argv[1:] if argv is None else argv))
    if args.command == "vm" and args.iperf is not None and args.cmd:
        parser.error("give either --iperf or --cmd")
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    try:
        rc: int = args.func(args)
        return rc
    except (FeatureError, BackendError, ValueError) as exc:
        parser.exit(2, f"vnic: error: {exc}\n")
    except (OSError, RuntimeError) as exc:
        parser.exit(1, f"vnic: {exc}\n")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

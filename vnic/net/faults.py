"""Fault injection, as `vnic ctl faults` and `--faults` ask for it: the
rates are checked here and handed to the C data plane (native/faults.c),
which decides per frame from a generator seeded per queue pair and
direction, so a run can be replayed with the same seed.

Rates are percentages of frames (0 to 100, fractions allowed down to
0.0001 %); delay and jitter are milliseconds (to the microsecond), rate is
the link's Mbit/s (0: unlimited); reorder is the percentage of frames that
skip the delay and overtake those held.  A request states the faults in
force on the queue pairs and directions it names: what it leaves out is
zero there.

Episodes are the link-level faults: receiving stopped for a while
(rx_starve) and the link taken down and up (flap), each undone by a timer.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypedDict

from .._native import ffi, lib
from ..errors import ConfigError

PPM_PER_PERCENT = lib.VNIC_FAULT_PPM_MAX // 100
DIRECTIONS = {"rx": lib.VNIC_CAPTURE_RX, "tx": lib.VNIC_CAPTURE_TX, "both": lib.VNIC_CAPTURE_BOTH}
RATES = ("drop", "duplicate", "corrupt", "bad_csum", "reorder")
TIMES = ("delay", "jitter")
DELAY_MS_MAX = lib.VNIC_FAULT_DELAY_US_MAX / 1000
RATE_MBIT_MAX = lib.VNIC_FAULT_RATE_KBPS_MAX / 1000
SEED_MAX = 2**64 - 1
_APPLY = threading.Lock()      # one vnic_faults_set at a time: two at once could leave the flag stale


class FaultRates(TypedDict):
    """The faults in force on one direction of one queue pair."""
    drop: float
    duplicate: float
    corrupt: float
    bad_csum: float
    reorder: float
    delay: float                      # ms
    jitter: float                     # ms
    rate: float                       # Mbit/s, 0: unlimited
    seed: int


@dataclass(frozen=True)
class FaultSpec:
    """One fault request: rates in percent, the seed, where (queue None:
    every pair) and which way.  check() says what is wrong with it."""
    drop: float = 0
    duplicate: float = 0
    corrupt: float = 0
    bad_csum: float = 0
    reorder: float = 0
    delay: float = 0
    jitter: float = 0
    rate: float = 0
    seed: int = 0
    queue: int | None = None
    direction: str = "both"

    def check(self, queue_pairs: int) -> FaultSpec:
        """self, or ConfigError naming the value refused."""
        for name in RATES:
            _in_range(name, getattr(self, name), 100, "a percentage")
        for name in TIMES:
            _in_range(name, getattr(self, name), DELAY_MS_MAX, "milliseconds")
        _in_range("rate", self.rate, RATE_MBIT_MAX, "Mbit/s (0: unlimited)")
        if self.reorder and not self.delay:
            raise ConfigError("reorder lets frames skip the delay: it needs a delay")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed <= SEED_MAX:
            raise ConfigError(f"faults seed is a whole number from 0 to 2^64-1, not {self.seed!r}")
        if self.queue is not None and (not isinstance(self.queue, int) or isinstance(self.queue, bool)
                                       or not 0 <= self.queue < queue_pairs):
            raise ConfigError(f"faults queue is a queue pair from 0 to {queue_pairs - 1}, not {self.queue!r}")
        if not isinstance(self.direction, str) or self.direction not in DIRECTIONS:
            raise ConfigError(f"faults direction is one of {', '.join(DIRECTIONS)}, not {self.direction!r}")
        if self.bad_csum and self.direction != "rx":
            raise ConfigError("bad_csum lies to the guest about received frames: it needs direction rx")
        return self

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """From `--faults drop=1,duplicate=0.5,seed=7,direction=rx,queue=0`."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in known:
                raise ConfigError(f"--faults takes name=value items ({', '.join(known)}), not {item!r}")
            values[name] = _value(name, value.strip())
        return cls(**values)


def _value(name: str, text: str) -> float | int | str:
    try:
        if name in RATES + TIMES + ("rate",):
            return float(text)
        return text if name == "direction" else int(text, 0)
    except ValueError:
        raise ConfigError(f"--faults {name}={text!r} is not a number") from None


def _in_range(name: str, value: object, high: float, unit: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= high:
        raise ConfigError(f"faults {name} is {unit} from 0 to {high:g}, not {value!r}")


def apply(native: Any, queue_pairs: int, spec: FaultSpec) -> None:
    """Put spec in force (checked first: ConfigError, nothing changed)."""
    spec.check(queue_pairs)
    f = ffi.new("struct vnic_faults *")
    f.drop_ppm, f.duplicate_ppm, f.corrupt_ppm, f.bad_csum_ppm, f.reorder_ppm = (
        round(getattr(spec, name) * PPM_PER_PERCENT) for name in RATES)
    f.delay_us, f.jitter_us = round(spec.delay * 1000), round(spec.jitter * 1000)
    f.rate_kbps = round(spec.rate * 1000)
    f.seed = spec.seed
    pair = -1 if spec.queue is None else spec.queue
    with _APPLY:                  # the C side recomputes its "faults on" flag per call
        if lib.vnic_faults_set(native, pair, DIRECTIONS[spec.direction], f) < 0:
            raise ConfigError(f"the data plane refused the faults {spec}")


def state(native: Any, queue_pairs: int) -> list[dict[str, FaultRates]]:
    """Per queue pair, the faults in force each way ({"rx": ..., "tx": ...})."""
    return [{way: _rates(native, pair, DIRECTIONS[way]) for way in ("rx", "tx")} for pair in range(queue_pairs)]


def _rates(native: Any, pair: int, direction: int) -> FaultRates:
    f = ffi.new("struct vnic_faults *")
    lib.vnic_faults_get(native, pair, direction, f)
    return FaultRates(drop=f.drop_ppm / PPM_PER_PERCENT, duplicate=f.duplicate_ppm / PPM_PER_PERCENT,
                      corrupt=f.corrupt_ppm / PPM_PER_PERCENT, bad_csum=f.bad_csum_ppm / PPM_PER_PERCENT,
                      reorder=f.reorder_ppm / PPM_PER_PERCENT, delay=f.delay_us / 1000,
                      jitter=f.jitter_us / 1000, rate=f.rate_kbps / 1000, seed=int(f.seed))


EPISODE_MS_MAX = 600_000


class FaultsState(TypedDict):
    """What Device.faults() returns."""
    queues: list[dict[str, FaultRates]]   # per queue pair, {"rx": ..., "tx": ...}
    rx_starving: bool
    link_flapping: bool


class Episodes:
    """Link-level faults of one device: each starts now and a timer ends it
    after its milliseconds (a new one of the same kind restarts the timer)."""

    def __init__(self, native: Any, set_link: Callable[[bool], None]):
        self._native, self._set_link = native, set_link
        self._lock = threading.Lock()
        self._timers: dict[str, tuple[threading.Timer, Callable[[], None]]] = {}

    def starve_rx(self, ms: int) -> None:
        """No frames reach the guest for ms milliseconds."""
        _episode_ms("rx_starve_ms", ms)
        with self._lock:
            lib.vnic_faults_rx_starve(self._native, 1)
            self._after("rx_starve", ms, self._resume_rx)

    def flap(self, ms: int) -> None:
        """The link goes down now and up again after ms milliseconds."""
        _episode_ms("flap_ms", ms)
        with self._lock:
            lib.vnic_faults_count_flap(self._native)
            self._set_link(False)
            self._after("flap", ms, lambda: self._set_link(True))

    def active(self, kind: str) -> bool:
        with self._lock:
            return kind in self._timers

    def close(self) -> None:
        """End every episode now: receiving resumes, a flapped link comes up."""
        with self._lock:
            for timer, undo in self._timers.values():
                timer.cancel()
                undo()
            self._timers.clear()
            self._resume_rx()

    def _after(self, kind: str, ms: int, undo: Callable[[], None]) -> None:
        if kind in self._timers:
            self._timers.pop(kind)[0].cancel()

        def end() -> None:
            with self._lock:
                if self._timers.get(kind, (None,))[0] is timer:
                    del self._timers[kind]
                    undo()
        timer = threading.Timer(ms / 1000, end)
        timer.daemon = True
        self._timers[kind] = (timer, undo)
        timer.start()

    def _resume_rx(self) -> None:
        lib.vnic_faults_rx_starve(self._native, 0)


def _episode_ms(name: str, ms: object) -> None:
    if not isinstance(ms, int) or isinstance(ms, bool) or not 1 <= ms <= EPISODE_MS_MAX:
        raise ConfigError(f"faults {name} is a number of milliseconds from 1 to {EPISODE_MS_MAX}, not {ms!r}")

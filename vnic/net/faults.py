"""Fault injection, as `vnic ctl faults` and `--faults` ask for it: the
rates are checked here and handed to the C data plane (native/faults.c),
which decides per frame from a generator seeded per queue pair and
direction, so a run can be replayed with the same seed.

Rates are percentages of frames (0 to 100, fractions allowed down to
0.0001 %).  A request states the faults in force on the queue pairs and
directions it names: rates it leaves out are zero there."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypedDict

from .._native import ffi, lib
from ..errors import ConfigError

PPM_PER_PERCENT = lib.VNIC_FAULT_PPM_MAX // 100
DIRECTIONS = {"rx": lib.VNIC_CAPTURE_RX, "tx": lib.VNIC_CAPTURE_TX, "both": lib.VNIC_CAPTURE_BOTH}
RATES = ("drop", "duplicate", "corrupt", "bad_csum")
SEED_MAX = 2**64 - 1


class FaultRates(TypedDict):
    """The faults in force on one direction of one queue pair."""
    drop: float
    duplicate: float
    corrupt: float
    bad_csum: float
    seed: int


@dataclass(frozen=True)
class FaultSpec:
    """One fault request: rates in percent, the seed, where (queue None:
    every pair) and which way.  check() says what is wrong with it."""
    drop: float = 0
    duplicate: float = 0
    corrupt: float = 0
    bad_csum: float = 0
    seed: int = 0
    queue: int | None = None
    direction: str = "both"

    def check(self, queue_pairs: int) -> FaultSpec:
        """self, or ConfigError naming the value refused."""
        for name in RATES:
            _percent(name, getattr(self, name))
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
        if name in RATES:
            return float(text)
        return text if name == "direction" else int(text, 0)
    except ValueError:
        raise ConfigError(f"--faults {name}={text!r} is not a number") from None


def _percent(name: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 100:
        raise ConfigError(f"faults {name} is a percentage from 0 to 100, not {value!r}")


def apply(native: Any, queue_pairs: int, spec: FaultSpec) -> None:
    """Put spec in force (checked first: ConfigError, nothing changed)."""
    spec.check(queue_pairs)
    f = ffi.new("struct vnic_faults *")
    f.drop_ppm, f.duplicate_ppm, f.corrupt_ppm, f.bad_csum_ppm = (
        round(getattr(spec, name) * PPM_PER_PERCENT) for name in RATES)
    f.seed = spec.seed
    pair = -1 if spec.queue is None else spec.queue
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
                      seed=int(f.seed))

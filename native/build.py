"""cffi build script (API mode, out of line): compiles native/*.c into
vnic._native during `pip install`.

The cdef is the marked part of the C headers themselves, so they stay the
one description of the interface: vnic.h (the device) first, then
vnic_test.h (tests and benchmarks), whose declarations may use vnic.h's
types.  Both reach Python through the same module."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from cffi import FFI

NATIVE = Path(__file__).resolve().parent
SOURCES = sorted(p for p in NATIVE.glob("*.c"))
HEADERS = ("vnic.h", "vnic_test.h")
BEGIN, END = "/* cdef-begin */", "/* cdef-end */"


def header_cdef(name: str) -> str:
    """The text between the one pair of cdef markers of native/<name>."""
    text = (NATIVE / name).read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise RuntimeError(f"native/{name}: needs exactly one {BEGIN} and one {END} "
                           f"(found {text.count(BEGIN)} and {text.count(END)})")
    match = re.search(re.escape(BEGIN) + r"(.*)" + re.escape(END), text, re.S)
    if not match:
        raise RuntimeError(f"native/{name}: {END} comes before {BEGIN}")
    return match.group(1)


def interface_cdef() -> str:
    return "\n".join(header_cdef(name) for name in HEADERS)


# -fno-sanitize-recover: an UBSan report aborts, so a test run cannot miss it
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer", "-g"]
standalone = "--sanitize" in sys.argv       # built elsewhere: paths must be absolute
sanitize = os.environ.get("VNIC_SANITIZE") == "1" or standalone


def source_path(p: Path) -> str:
    """setuptools wants paths relative to the project; a build elsewhere
    needs them whole."""
    return str(p if standalone else p.relative_to(NATIVE.parent))


ffibuilder = FFI()
ffibuilder.cdef(interface_cdef())
ffibuilder.set_source(
    "vnic._native",
    "".join(f'#include "{name}"\n' for name in HEADERS),
    sources=[source_path(p) for p in SOURCES],
    include_dirs=[source_path(NATIVE)],
    # hidden visibility: internal calls (checksums above all) skip the PLT
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                        "-Werror", "-fno-strict-aliasing", "-fvisibility=hidden"]
                       + (SANITIZE if sanitize else ["-flto=auto"]),
    extra_link_args=SANITIZE if sanitize else ["-flto=auto", "-O2"],
    libraries=["pthread", "seccomp"],  # libseccomp: the filter of sandbox.c
)

if __name__ == "__main__":
    # Only a build elsewhere: one into the checkout would be named
    # _native.cpython-311-*.so, which Python loads ahead of pip's
    # _native.abi3.so, and would shadow every later `setup.sh` build.
    if "--sanitize" not in sys.argv[:-1]:
        sys.exit("usage: build.py --sanitize DIR  (the checkout's own build: bash scripts/setup.sh --python)")
    ffibuilder.compile(tmpdir=sys.argv[sys.argv.index("--sanitize") + 1], verbose=True)

"""cffi build script (API mode, out of line): compiles native/*.c into
vnic._native during `pip install`.

The cdef is the marked part of vnic.h itself, so the C header stays the
one description of the interface."""
from __future__ import annotations

import re
from pathlib import Path

from cffi import FFI

NATIVE = Path(__file__).resolve().parent
SOURCES = sorted(p for p in NATIVE.glob("*.c"))


def interface_cdef() -> str:
    text = (NATIVE / "vnic.h").read_text()
    match = re.search(r"/\* cdef-begin \*/(.*)/\* cdef-end \*/", text, re.S)
    if not match:
        raise RuntimeError("vnic.h lacks the cdef markers")
    return match.group(1)


ffibuilder = FFI()
ffibuilder.cdef(interface_cdef())
ffibuilder.set_source(
    "vnic._native",
    '#include "vnic.h"',
    sources=[str(p.relative_to(NATIVE.parent)) for p in SOURCES],
    include_dirs=[str(NATIVE.relative_to(NATIVE.parent))],
    # hidden visibility: internal calls (checksums above all) skip the PLT
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                        "-fno-strict-aliasing", "-fvisibility=hidden"],
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)

"""Build the test guest: a Debian trixie kernel plus a small busybox initramfs.

The packages are unpacked with `mmdebstrap --variant=extract` into a temporary
directory (its own apt config: the host's apt sources stay untouched). From
that root we copy busybox, the recipe's binaries with exactly the shared
libraries that root's own loader resolves for them, the kernel modules that
are not built in (with their dependencies), `init`, and the test tools of
tools/ (C sources compiled here on the host with `gcc -static`, so they need
no library in the guest). The result is cached under
cache_dir()/guest/<hash of recipe.json, init, the tools' sources and this file>/.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import shutil
import stat
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .cache import REPO_ROOT, cache_dir, cache_lock, remove_stale_tmp

# The recipe: recipe.json, the guest's init and the test tools' sources.
RECIPE_DIR = REPO_ROOT / "guest_images"

LIBDIR = "usr/lib/x86_64-linux-gnu"
LOADER = "usr/lib64/ld-linux-x86-64.so.2"
# Guest test tools: source under guest_images/ -> path in the initramfs.
TOOLS = {"tools/vnic-send.c": "usr/bin/vnic-send"}
TOOL_CFLAGS = ["-static", "-O2", "-s", "-Wall", "-Wextra"]


@dataclass
class GuestImage:
    """A built guest image: kernel, initrd and what the build recorded."""
    kernel: Path
    initrd: Path
    info: dict = field(default_factory=dict)  # kernel version, modules, sizes


def recipe() -> dict:
    """The recipe, guest_images/recipe.json."""
    return json.loads((RECIPE_DIR / "recipe.json").read_text())


def image_hash() -> str:
    """The cache key: the recipe's files and this builder."""
    h = hashlib.sha256()
    for name in ("recipe.json", "init", *TOOLS):
        h.update(name.encode() + b"\0" + (RECIPE_DIR / name).read_bytes())
    h.update(b"builder\0" + Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def ensure_guest_image(log=print) -> GuestImage:
    """The cached guest image for the current recipe, building it if needed."""
    out = cache_dir() / "guest" / image_hash()
    with cache_lock("guest"):  # one builder at a time across processes
        remove_stale_tmp(out.parent)
        if not (out / "info.json").exists():  # info.json is written last
            t0 = time.monotonic()
            log(f"vnic: building guest image into {out}")
            _build(out)
            log(f"vnic: guest image built in {time.monotonic() - t0:.0f} s")
    info = json.loads((out / "info.json").read_text())
    return GuestImage(out / "vmlinuz", out / "initrd.gz", info)


def _build(out: Path) -> None:
    r = recipe()
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        t0 = time.monotonic()
        stage = tmp / "stage"
        tools = build_tools(stage)          # first: a compile error fails fast
        root = tmp / "root"
        _extract(r, root)
        t_extract = time.monotonic() - t0
        info = _stage(r, root, stage)
        info["tools"] = tools
        shutil.copyfile(root / "boot" / f"vmlinuz-{info['kernel_version']}", tmp / "vmlinuz")
        with gzip.GzipFile(tmp / "initrd.gz", "wb", compresslevel=6, mtime=0) as f:
            write_cpio(stage, f, extra_nodes=[("dev/console", stat.S_IFCHR | 0o600, 5, 1)])
        shutil.rmtree(root)
        shutil.rmtree(stage)
        info.update(initrd_bytes=(tmp / "initrd.gz").stat().st_size,
                    extract_s=round(t_extract, 1),
                    build_s=round(time.monotonic() - t0, 1), hash=out.name)
        (tmp / "info.json").write_text(json.dumps(info, indent=1))
        shutil.rmtree(out, ignore_errors=True)  # a stale partial entry
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_tools(stage: Path) -> list[str]:
    """Compile TOOLS into the stage tree with the host's gcc, statically."""
    gcc = shutil.which("gcc")
    if not gcc:
        raise RuntimeError("gcc not found (it compiles the guest's test tools): "
                           "apt-get install gcc libc6-dev")
    built = []
    for src, dest in TOOLS.items():
        out = stage / dest
        out.parent.mkdir(parents=True, exist_ok=True)
        p = subprocess.run([gcc, *TOOL_CFLAGS, "-o", str(out), str(RECIPE_DIR / src)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            hint = (" (static linking needs libc6-dev: apt-get install libc6-dev)"
                    if "cannot find -lc" in p.stderr else "")
            raise RuntimeError(f"compiling {src} failed{hint}:\n{p.stderr[-4000:]}")
        built.append(dest)
    return built


def _extract(r: dict, root: Path) -> None:
    if not shutil.which("mmdebstrap"):
        raise RuntimeError("mmdebstrap not found: apt-get install mmdebstrap")
    cmd = ["mmdebstrap", "--quiet", "--variant=extract",
           "--include=" + ",".join(r["packages"]),
           '--aptopt=APT::Install-Recommends "false"',
           r["suite"], str(root), f"deb {r['mirror']} {r['suite']} main"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"mmdebstrap failed ({p.returncode}):\n{p.stderr[-4000:]}")


def _stage(r: dict, root: Path, stage: Path) -> dict:
    """Lay out the initramfs tree (merged /usr, like trixie itself)."""
    for d in ("usr/bin", "usr/sbin", LIBDIR, "usr/lib64", "usr/lib/modules", "etc",
              "proc", "sys", "dev", "tmp", "run", "root"):
        (stage / d).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        os.symlink(f"usr/{link}", stage / link)

    # Binaries first, then busybox applets only where no real tool exists.
    libs: set[str] = set()
    for b in r["binaries"]:
        dest = stage / b
        shutil.copy2(root / b, dest)
        libs |= _needed_libs(root, b)
    for link, target in r.get("links", {}).items():
        os.symlink(target, stage / link)
    libs |= set(r.get("extra_libs", []))
    for lib in sorted(libs):
        shutil.copyfile(root / LIBDIR / lib, stage / LIBDIR / lib)
        os.chmod(stage / LIBDIR / lib, 0o755)
    shutil.copyfile(root / LOADER, stage / LOADER)
    os.chmod(stage / LOADER, 0o755)

    shutil.copy2(root / "usr/bin/busybox", stage / "usr/bin/busybox")
    applets = subprocess.run([str(root / "usr/bin/busybox"), "--list"], check=True,
                             capture_output=True, text=True).stdout.split()
    for a in applets:
        if a != "busybox" and not any((stage / d / a).exists() for d in ("usr/bin", "usr/sbin")):
            os.symlink("busybox", stage / "usr/bin" / a)

    kver, loaded, builtin = _modules(r, root, stage / "usr/lib/modules")
    (stage / "etc/vnic-modules").write_text("".join(m + "\n" for m in loaded))
    (stage / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (stage / "etc/group").write_text("root:x:0:\n")
    shutil.copyfile(RECIPE_DIR / "init", stage / "init")
    os.chmod(stage / "init", 0o755)
    return {"kernel_version": kver, "modules_loaded": loaded, "modules_builtin": builtin,
            "binaries": r["binaries"], "libraries": sorted(libs)}


def _needed_libs(root: Path, binary: str) -> set[str]:
    """Shared libraries of `binary`, resolved by the trixie root's own loader."""
    p = subprocess.run([str(root / LOADER), "--library-path", str(root / LIBDIR),
                        "--list", str(root / binary)], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"cannot resolve libraries of {binary}: {p.stderr}")
    libs = set()
    for line in p.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>" and not parts[0].startswith("/"):
            path = Path(parts[2])
            if not path.is_relative_to(root / LIBDIR) or not path.exists():
                raise RuntimeError(f"{binary}: {parts[0]} resolved outside the guest root: {line}")
            libs.add(parts[0])
        elif "not found" in line:
            raise RuntimeError(f"{binary}: {line.strip()}")
    return libs


def _modules(r: dict, root: Path, dest: Path) -> tuple[str, list[str], list[str]]:
    """Copy the recipe's modules (decompressed) and return the insmod order."""
    kdirs = sorted((root / "usr/lib/modules").iterdir())
    if len(kdirs) != 1:
        raise RuntimeError(f"expected one kernel, found {[k.name for k in kdirs]}")
    kdir = kdirs[0]
    kver = kdir.name
    if not kver.startswith(r["kernel_series"] + "."):
        raise RuntimeError(f"kernel {kver} is not the recipe's {r['kernel_series']} series")
    norm = lambda n: n.replace("-", "_")
    builtin = {norm(Path(name).name.split(".ko")[0])
               for name in (kdir / "modules.builtin").read_text().split()}
    files = {norm(p.name.split(".ko")[0]): p for p in (kdir / "kernel").rglob("*.ko*")}

    order: list[str] = []
    skipped: list[str] = []

    def add(name: str) -> None:
        name = norm(name)
        if name in order:
            return
        if name in builtin:
            if name not in skipped:
                skipped.append(name)
            return
        if name not in files:
            raise RuntimeError(f"module {name} is neither built into {kver} nor shipped")
        data = _decompress(files[name])
        for dep in _modinfo(data).get("depends", "").split(","):
            if dep:
                add(dep)
        (dest / f"{name}.ko").write_bytes(data)
        order.append(name)

    for m in r["modules"]:
        add(m)
    return kver, order, skipped


def _decompress(path: Path) -> bytes:
    # The kernel could decompress itself (MODULE_DECOMPRESS), but busybox
    # insmod does not ask it to; plain .ko files load everywhere.
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        return subprocess.run(["zstd", "-dc", str(path)], check=True,
                              capture_output=True).stdout
    return data


def _modinfo(elf: bytes) -> dict:
    """The key=value strings of an ELF64 module's .modinfo section."""
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize)
                for i in range(shnum)]
    names_off = sections[shstrndx][4]
    for name_idx, _type, _flags, _addr, off, size in sections:
        name = elf[names_off + name_idx:elf.index(b"\0", names_off + name_idx)]
        if name == b".modinfo":
            pairs = (s.split(b"=", 1) for s in elf[off:off + size].split(b"\0") if b"=" in s)
            return {k.decode(): v.decode(errors="replace") for k, v in pairs}
    return {}


def write_cpio(tree: Path, f, extra_nodes=()) -> None:
    """Write `tree` as a newc cpio archive (the initramfs format) to file `f`.

    Owners are root and mtimes zero so equal trees give equal archives;
    extra_nodes are (path, mode, major, minor) device nodes that an unprivileged
    build could not create on disk.
    """
    ino = iter(range(1, 1 << 31))

    def entry(name: str, mode: int, data: bytes = b"", rdev=(0, 0)) -> None:
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08X}" for v in (
            next(ino), mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nb), 0))
        f.write(hdr.encode() + nb + b"\0" * (-(110 + len(nb)) % 4))
        f.write(data + b"\0" * (-len(data) % 4))

    for path in sorted(tree.rglob("*")):
        name = path.relative_to(tree).as_posix()
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            entry(name, stat.S_IFLNK | 0o777, os.readlink(path).encode())
        elif stat.S_ISDIR(st.st_mode):
            entry(name, stat.S_IFDIR | 0o755)
        else:
            entry(name, stat.S_IFREG | (st.st_mode & 0o777), path.read_bytes())
    for name, mode, major, minor in extra_nodes:
        entry(name, mode, rdev=(major, minor))
    entry("TRAILER!!!", 0)

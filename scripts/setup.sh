#!/usr/bin/env bash
# Install everything vnic needs, idempotently, on Debian 12 (run as root):
#   Debian packages, a Python venv with vnic (C data plane compiled by cffi),
#   a QEMU with vfio-user-pci and the test guest image.
#   --python stops after the venv (what `scripts/test.sh --fast` needs).
# Everything downloaded or built lives under $VNIC_CACHE (default ~/.cache/vnic).
set -euo pipefail
cd "$(dirname "$0")/.."
python_only=0
[ "${1:-}" = "--python" ] && python_only=1

export VNIC_CACHE="${VNIC_CACHE:-$HOME/.cache/vnic}"
mkdir -p "$VNIC_CACHE"

# mmdebstrap builds the private QEMU root and the guest image; iperf3 runs on
# the host side of the test link; gcc and python3-dev compile the data plane;
# libc6-dev brings the static libc that the guest's vnic-send is linked with;
# tshark (with its dumpcap) captures and checks frames in the e2e tests;
# clang-14 and its compiler-rt (libFuzzer, ASan, UBSan) build the fuzz
# targets (scripts/fuzz.sh), llvm-14 reports their coverage; libseccomp-dev
# the sandbox's filter (sandbox.c); passt the unprivileged user-mode network
# a stream backend can plug into (its e2e test).
DEB_PACKAGES=(mmdebstrap iperf3 ethtool iproute2 gcc libc6-dev python3-dev python3-venv
              ca-certificates tshark clang-14 libclang-rt-14-dev llvm-14 libseccomp-dev passt)
missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    # wireshark-common asks whether non-root users may capture: answer no
    # beforehand so the install never waits for a terminal.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

VENV="$VNIC_CACHE/venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "setup: creating $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi
# Python loads vnic/_native.cpython-311-*.so before vnic/_native.abi3.so:
# a module left by another build (`python native/build.py` writes the
# former, pip the latter) would shadow the one built now, silently.
rm -f vnic/_native.*.so
echo "setup: installing vnic into $VENV (compiles native/)"
"$VENV/bin/pip" install -q --upgrade pip >/dev/null
# compat: a plain .pth to the checkout (the tests import the checkout's
# vnic/, where the build puts the compiled module).  setuptools warns about
# every editable mode (same-named folders; compat being transitional) on
# every install: the choice is made, a newcomer need not read it each time.
PYTHONWARNINGS=ignore "$VENV/bin/pip" install -q -e '.[test,dev]' --config-settings editable_mode=compat

if [ "$python_only" = 1 ]; then
    echo "setup: venv ready (--python: QEMU and the guest image not checked)"
    exit 0
fi
"$VENV/bin/vnic" setup
echo "setup: done. Use $VENV/bin/vnic (or activate: . $VENV/bin/activate)"

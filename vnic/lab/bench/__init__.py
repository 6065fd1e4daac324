"""Benchmarks behind `vnic bench`: each prints ratios against a baseline
measured in the same run (engine: memcpy; iperf_parity and offloads: QEMU's
built-in virtio-net or the device with its offloads off)."""

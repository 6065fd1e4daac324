"""The test lab around the NIC: finding or building QEMU, the test guest
image, network namespaces, booting guests, iperf3, `vnic vm`, `vnic doctor`
and the benchmarks.  The product packages never import it; the CLI, which
composes both, does."""

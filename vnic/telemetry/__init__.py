"""What the NIC counts and how it is shown: the C counters viewed from
numpy (counters), per-flow tables (flows), and rich tables and the
Prometheus exporter (metrics)."""

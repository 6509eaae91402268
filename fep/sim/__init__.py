"""Meter and modem simulators used by the tests, the demo and the benchmarks."""

"""Benchmarks: workloads that print figures. Never run as tests."""

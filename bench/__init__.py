"""Benchmarks: each prints numbers measured in one run."""

"""Benchmarks that print numbers (speed and memory targets are checked here, not in tests)."""

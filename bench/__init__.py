"""Benchmarks of chip's training step (see docs/performance.md); run `python bench/bench_step.py --help`."""

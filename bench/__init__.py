"""Benchmarks of issue 5 and their peers (run by hand or by ``bench/run.py``; not CI-timed)."""

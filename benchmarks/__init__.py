"""Benchmarks of clickrec jobs; `make bench` runs them all through benchmarks.run."""

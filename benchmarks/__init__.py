"""Benchmarks: each script prints its figures and a last line of ratios against a peer measured in the same run."""

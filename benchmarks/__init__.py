"""Benchmarks: runnable scripts (`python benchmarks/run.py ...`) and the small modules they share.

Not an installed package: scripts put the repository root on sys.path themselves, and the tests run
from the repository root (`.venv/bin/python -m pytest`).
"""

"""The GPU check (``scripts/gpu-check.py``), one module per group of steps."""

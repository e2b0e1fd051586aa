"""The RAM disk for models: operations (mount, copy, clear), the tmpfs, verified copies, and its two sides:
`cli_side` (what `start` and `supervisor.py ramdisk ...` do) and `supervisor_side` (the running supervisor's part)."""

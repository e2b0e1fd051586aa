"""Memory admission: a worker is not started when it would leave less than MEMORY_RESERVE_MB available.

What a new worker takes: the model file, which it memory-maps (counted once per model: the workers of a
model share its page cache), and its own memory besides (interpreter, llama.cpp's context and compute
buffers). `available` is psutil's (MemAvailable: free memory plus what the kernel can reclaim at once).
Only what is being added is checked, so workers already serving are never disturbed by a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil

# Measured here (llama-cpp-python 0.3.36): a MiniLM worker's RSS beyond its 44 MB model file was 108 MB, a
# SmolLM2 worker's beyond its 94 MB file 186 MB (its context holds a KV cache); rounded up so the estimate errs safe.
WORKER_OVERHEAD_BYTES = 224 * 2**20


class AdmissionRefused(ValueError):
    """Starting these workers would leave less memory available than MEMORY_RESERVE_MB; the message has the sizes."""


@dataclass(frozen=True)
class Admission:
    """The memory a scale-up needs, against what is available and the reserve to keep."""

    model: str
    added_workers: int
    model_file_bytes: int  # 0 when a worker of the model already maps the file
    available_bytes: int
    reserve_bytes: int

    @property
    def needed_bytes(self) -> int:
        """The estimate: the model file once, and each new worker's own memory."""
        return self.model_file_bytes + self.added_workers * WORKER_OVERHEAD_BYTES

    @property
    def admitted(self) -> bool:
        """True when the reserve stays available after the new workers have loaded."""
        return self.available_bytes - self.needed_bytes >= self.reserve_bytes

    def refusal(self) -> str:
        """Why it is refused, with every size in MB."""
        file_part = f"the model file {_mb(self.model_file_bytes)} + " if self.model_file_bytes else ""
        return (f"not enough memory to load {self.added_workers} more worker(s) of {self.model!r}: they need about "
                f"{_mb(self.needed_bytes)} ({file_part}{_mb(WORKER_OVERHEAD_BYTES)} per worker), "
                f"{_mb(self.available_bytes)} is available and MEMORY_RESERVE_MB keeps {_mb(self.reserve_bytes)} "
                "free; free memory, scale other models down or lower MEMORY_RESERVE_MB")


def check_admission(model: str, model_path: Path, added_workers: int, model_already_mapped: bool,
                    reserve_bytes: int) -> Admission:
    """The admission of `added_workers` new workers of `model`; raises AdmissionRefused when not admitted."""
    admission = Admission(model=model, added_workers=added_workers,
                          model_file_bytes=0 if model_already_mapped else _size(model_path),
                          available_bytes=psutil.virtual_memory().available, reserve_bytes=reserve_bytes)
    if added_workers > 0 and not admission.admitted:
        raise AdmissionRefused(admission.refusal())
    return admission


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mb(size: int) -> str:
    return f"{size / 2**20:,.0f} MB"

"""keep_freed_memory: a large buffer freed and allocated again is not faulted in from the kernel each time."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
from trajectory.allocator import keep_freed_memory
accepted = keep_freed_memory() if sys.argv[1] == "keep" else None
torch.ones(10 << 20)  # 40 MiB, above glibc's largest dynamic mmap threshold (32 MiB)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(10 << 20)
print(accepted, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    accepted, faults = out.split()
    return accepted, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_buffers_stay_in_the_process():
    accepted, kept = _faults("keep")
    if accepted != "True":
        pytest.skip("this libc refused mallopt: nothing to check")
    _, default = _faults("default")
    pages = 10 * (40 << 20) // 4096  # ten 40 MiB buffers, faulted page by page without the thresholds
    assert default > pages / 2, f"glibc's default should fault the buffers in again ({default} faults)"
    assert kept < default / 4, f"{kept} faults with the thresholds raised, {default} without"

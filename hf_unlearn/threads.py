"""CPU threads that stay fast on a shared machine.

Two things made `hf-unlearn` 5-20x slower on a 2-core machine that another job was using
(`benchmarks/threads.py` measures both):

1. **Busy-waiting OpenMP threads.** PyTorch's OpenMP runtime keeps idle worker threads spinning between parallel
   regions. When another job holds a core, a spinning worker takes CPU time from the thread that has work, at every
   one of the thousands of small parallel regions of a training step. `OMP_WAIT_POLICY=PASSIVE` makes idle workers
   sleep instead. The runtime reads it once, when torch is imported, so `hf_unlearn` sets it (unless it is already
   set) before it imports torch; a script that imports torch first keeps the runtime's default.
2. **More threads than free cores.** With every core busy, a second thread only adds waiting. `hf-unlearn` sets torch
   to as many threads as there are cores that the 1-minute load average leaves free (at least one), unless
   `--threads` or `OMP_NUM_THREADS` says otherwise.
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY = "OMP_WAIT_POLICY"
THREADS_HELP = ("CPU threads for torch (default: the cores that other jobs leave free, by the load average; "
                "OMP_NUM_THREADS if set).")


def passive_wait() -> bool:
    """Default `OMP_WAIT_POLICY` to `PASSIVE` for this process and its children. Returns whether it takes effect here
    (False when torch was imported before: its OpenMP runtime has read the variable already)."""
    os.environ.setdefault(WAIT_POLICY, "PASSIVE")
    return "torch" not in sys.modules


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; all cores where affinity is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores not busy with other work: `cores` minus the 1-minute load average (rounded), at least 1.

    Called before this process does any work, so the load average is other processes' (it lags by about a minute:
    a job that started seconds ago is not counted yet; the passive wait policy keeps that case cheap).
    """
    cores = available_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(cores, cores - int(round(load))))


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads: `threads` if given; else leave `OMP_NUM_THREADS` (set by the user or by
    `accelerate launch`) in charge; else the free cores (`free_cores`). Returns the number torch uses."""
    import torch

    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    elif not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(free_cores())
    return torch.get_num_threads()

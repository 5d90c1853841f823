"""Launched by tests through `accelerate launch`: each process writes which rank of how many it is.

    ACCELERATE_USE_CPU=1 accelerate launch --config_file accelerate_configs/multi_cpu.yaml tests/scripts/print_ranks.py OUT
"""

import sys
from pathlib import Path

from accelerate import Accelerator

accelerator = Accelerator()
Path(sys.argv[1], f"rank{accelerator.process_index}").write_text(
    f"{accelerator.num_processes} {accelerator.distributed_type} {accelerator.device}"
)
accelerator.wait_for_everyone()
accelerator.end_training()

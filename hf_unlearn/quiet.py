"""Messages of the libraries underneath that tell an hf_unlearn user nothing, dropped where our entry points start.

`hide_known_noise()` is called by `hf-unlearn` and the example scripts, not on import: in a user's own script, the
logging of the libraries it uses is theirs to configure. lm-eval's per-subject output is held back around each MMLU
run instead (`hf_unlearn.metrics.mmlu.quiet_lm_eval`).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from contextlib import contextmanager

# DeepSpeed, which transformers' Trainer imports wherever it is installed, logs this in every process of every run
# on a machine without a GPU; torch finds none either, so there is nothing to act on.
DEEPSPEED_NOISE = ("Setting accelerator to CPU",)


class DropMessages(logging.Filter):
    """Drops the records whose message starts with one of `starts`."""

    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


def on_terminal() -> bool:
    """Whether progress bars can redraw in place (stderr is a terminal), rather than pile up in a log file."""
    return sys.stderr.isatty()


def hide_known_noise() -> None:
    """Drop DeepSpeed's "Setting accelerator to CPU" warning (its logger is made on import, so this must come first),
    and, when stderr is not a terminal, the libraries' progress bars (a bar redrawn into a log file is a line per
    redraw: the Trainer then prints its logs as plain lines instead); calling it again adds nothing."""
    deepspeed = logging.getLogger("DeepSpeed")  # the name deepspeed.utils.logging gives its logger
    if not any(isinstance(f, DropMessages) for f in deepspeed.filters):
        deepspeed.addFilter(DropMessages(DEEPSPEED_NOISE))
    if not on_terminal():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        try:
            import datasets

            datasets.disable_progress_bars()
        except ImportError:
            pass


@contextmanager
def peft_wrapping():
    """Around `get_peft_model`: peft (0.21) reads transformers 5's deprecated `is_gradient_checkpointing` property to
    decide whether to prepare the model for checkpointing, which warns on every run although nothing is wrong; this
    drops that one FutureWarning there and nowhere else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield

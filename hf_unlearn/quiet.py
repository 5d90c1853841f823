"""Messages of the libraries underneath that tell an hf_unlearn user nothing, dropped where our entry points start.

`hide_known_noise()` is called by `hf-unlearn` and the example scripts, not on import: in a user's own script, the
logging of the libraries it uses is theirs to configure. lm-eval's per-subject output is held back around each MMLU
run instead (`hf_unlearn.metrics.mmlu.quiet_lm_eval`).
"""

from __future__ import annotations

import logging

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


def hide_known_noise() -> None:
    """Drop DeepSpeed's "Setting accelerator to CPU" warning (its logger is made on import, so this must come first);
    calling it again adds nothing."""
    deepspeed = logging.getLogger("DeepSpeed")  # the name deepspeed.utils.logging gives its logger
    if not any(isinstance(f, DropMessages) for f in deepspeed.filters):
        deepspeed.addFilter(DropMessages(DEEPSPEED_NOISE))

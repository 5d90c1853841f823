"""Run a model for evaluation without leaving a trace on it: eval mode and no gradients, then its mode restored."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put `model` in eval mode under `torch.no_grad()` and restore its training mode afterwards.

    Metrics are called from inside training loops (callbacks), so they must not switch dropout off for good.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device that inputs should be sent to (the first parameter's device when the model has no `.device`)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device

"""The chunked sequential schedule's optimisation side, and layer focus.

`ChunkedForgetRetainSampler` (in `data/pairing.py`) orders the rows; here the chunks become optimisation steps:
`chunk_step_bounds` says at which step each chunk starts (a chunk must fill whole steps, so that no step mixes two
chunks and a restart falls between steps), `chunked_lr_scheduler` runs the learning-rate schedule again over each
chunk's steps, and `reset_optimizer_state` gives a chunk a fresh optimizer. All of it is a function of the global step,
which a checkpoint restores, so a run resumed inside a chunk continues exactly.

Layer focus: `last_layer_indices` and `freeze_all_but_last_layers` (plain models), and peft's `layers_to_transform`
for LoRA (`UnlearningTrainer` sets it from `UnlearningConfig.train_last_layers`).
"""

from __future__ import annotations

import bisect
import math
import re

import torch

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def chunk_step_bounds(chunk_items: list[int], rows_per_step: int) -> list[int]:
    """The step at which each chunk starts within one pass of the schedule, and the pass's length last:
    `[0, s_1, s_1 + s_2, ..., total]` from the items each chunk yields and the rows of one optimisation step.

    Every chunk but the last must fill whole steps; the last one may end with a partial step, as an epoch may.
    """
    steps = []
    for k, items in enumerate(chunk_items):
        if k < len(chunk_items) - 1 and items % rows_per_step:
            raise ValueError(
                f"Chunk {k} yields {items} forget rows (forget_chunk_size x epochs_per_chunk), not a multiple of the "
                f"{rows_per_step} rows of one optimisation step (per_device_train_batch_size x "
                "gradient_accumulation_steps x processes): a step would mix two chunks. Choose sizes that divide."
            )
        steps.append(math.ceil(items / rows_per_step))
    bounds = [0]
    for count in steps:
        bounds.append(bounds[-1] + count)
    return bounds


def chunk_of_step(step: int, bounds: list[int]) -> tuple[int, int]:
    """`(first step, number of steps)` of the chunk that global step `step` belongs to (passes repeat)."""
    total = bounds[-1]
    within = step % total
    k = bisect.bisect_right(bounds, within) - 1
    return step - within + bounds[k], bounds[k + 1] - bounds[k]


def chunked_lr_scheduler(optimizer, args, bounds: list[int]) -> torch.optim.lr_scheduler.LambdaLR:
    """`args.lr_scheduler_type` (with its warm-up) run again over the steps of each chunk."""
    from transformers import get_scheduler

    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    shapes = {}
    for length in {b - a for a, b in zip(bounds, bounds[1:])}:
        scheduler = get_scheduler(args.lr_scheduler_type, dummy, num_warmup_steps=args.get_warmup_steps(length),
                                  num_training_steps=length, scheduler_specific_kwargs=args.lr_scheduler_kwargs)
        if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            raise ValueError(
                f"lr_scheduler_type={args.lr_scheduler_type!r} cannot restart with each chunk; use a step-based "
                "schedule (linear, cosine, constant, ...) or chunk_restart_optimizer=False."
            )
        shapes[length] = scheduler.lr_lambdas[0]

    def factor(step: int) -> float:  # a plain function: LambdaLR's state then holds only the step count
        start, length = chunk_of_step(step, bounds)
        return shapes[length](step - start)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def reset_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Forget the optimizer's per-parameter state (moments, step counts): the next step starts it afresh, as a new
    optimizer would. `optimizer` is the innermost torch optimizer (`optim.unwrap_optimizer`)."""
    optimizer.state.clear()


def num_decoder_layers(model) -> int:
    config = getattr(getattr(model, "module", model), "config", None)
    layers = getattr(config, "num_hidden_layers", None)
    if layers is None:
        raise ValueError("train_last_layers needs the model's number of decoder layers (config.num_hidden_layers).")
    return layers


def last_layer_indices(model, k: int) -> list[int]:
    """Indices of the last `k` decoder layers of `model`."""
    layers = num_decoder_layers(model)
    if k > layers:
        raise ValueError(f"train_last_layers={k}, but the model has {layers} decoder layers.")
    return list(range(layers - k, layers))


def freeze_all_but_last_layers(model, k: int) -> list[str]:
    """Freeze every parameter outside the last `k` decoder layers (embeddings, other layers, final norm, output
    layer); returns the names of the parameters left trainable."""
    keep = set(last_layer_indices(model, k))
    trainable = []
    for name, param in model.named_parameters():
        match = _LAYER.search(name)
        param.requires_grad_(match is not None and int(match[1]) in keep)
        if param.requires_grad:
            trainable.append(name)
    if not trainable:
        raise ValueError("train_last_layers found no parameter named like '...layers.<i>....' to train.")
    return trainable

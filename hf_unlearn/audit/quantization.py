"""Round-to-nearest weight quantization, symmetric, per group: the quantization attack of the audit.

Zhang et al. (ICLR 2025, arXiv:2410.16454) found that 4-bit quantization of unlearned models brings back most of
the "forgotten" knowledge. A LoRA unlearning update is a small low-rank delta on top of the original weights, and
rounding to a grid whose step is set by the largest weight of a group can erase it. This module rounds every
Linear weight of a (merged) model the way a user's int8/int4 export would:

    s = max|W_g| / (2^(b-1) - 1)          per row and group of `group_size` input columns
    q = clamp(round(W / s), -2^(b-1), 2^(b-1) - 1)
    W_hat = s * q

int4 uses groups of 128 input columns; int8 one group per output channel (row). The result is kept in the
weight's own dtype ("fake quantization"): what is measured is what the rounding does to the model's behaviour.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

# name -> (bits, group size; None: one group per output channel)
SCHEMES: dict[str, tuple[int, int | None]] = {"int8": (8, None), "int4": (4, 128)}


def quantization_scales(weight: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """The step `s` of each (row, group): shape `(rows, groups)`; the last group may be narrower."""
    rows, columns = weight.shape
    size = columns if group_size is None else group_size
    groups = -(-columns // size)
    padded = torch.zeros(rows, groups * size, dtype=torch.float32, device=weight.device)
    padded[:, :columns] = weight.detach().float().abs()
    return padded.view(rows, groups, size).amax(dim=-1) / (2 ** (bits - 1) - 1)


def quantize_weight(weight: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """`W_hat = s * clamp(round(W / s))` for a 2-D weight, per row and group; returned in the weight's dtype.

    A group of zeros has s = 0 and stays zero. Idempotent (the largest weight of a group lands on the grid's end,
    so the step is unchanged), and every element moves by at most s/2."""
    if weight.dim() != 2:
        raise ValueError(f"quantize_weight expects a 2-D weight, got shape {tuple(weight.shape)}")
    if bits < 2:
        raise ValueError(f"bits must be at least 2, got {bits}")
    if group_size is not None and group_size < 1:
        raise ValueError(f"group_size must be positive or None, got {group_size}")
    rows, columns = weight.shape
    size = columns if group_size is None else group_size
    scales = quantization_scales(weight, bits, group_size)
    step = scales.repeat_interleave(size, dim=1)[:, :columns]
    w = weight.detach().float()
    safe = torch.where(step > 0, step, torch.ones_like(step))
    qmax = 2 ** (bits - 1) - 1
    q = torch.clamp(torch.round(w / safe), -qmax - 1, qmax)
    return torch.where(step > 0, q * step, torch.zeros_like(w)).to(weight.dtype)


@torch.no_grad()
def quantize_model(
    model: torch.nn.Module, scheme: str = "int4", skip: Iterable[str] = ("lm_head",)
) -> list[str]:
    """Round every `nn.Linear` weight of `model` in place with `SCHEMES[scheme]`; returns the names rounded.

    `skip` names modules kept in full precision: by default the output layer, as int4/int8 toolchains
    (bitsandbytes, GPTQ, AWQ) keep it; with tied embeddings rounding it would also round the input embeddings.
    Apply it to a merged model (a peft model's LoRA matrices are Linear layers too, and would be rounded apart
    from the base weight they are added to)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    if any("lora_" in name for name, _ in model.named_modules()):
        raise ValueError("quantize_model expects a merged model: merge the LoRA adapter first (merge_and_unload)")
    bits, group_size = SCHEMES[scheme]
    skip = tuple(skip)
    done = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not any(name == s or name.endswith("." + s) for s in skip):
            module.weight.copy_(quantize_weight(module.weight, bits, group_size))
            done.append(name)
    return done

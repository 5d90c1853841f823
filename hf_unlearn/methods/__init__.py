"""Unlearning methods, one file each, registered by name (see `base.py` for what a method declares).

Importing this package registers the built-in methods, in this order: npo, ga, gd, kl, simnpo, undial, wga, satimp,
rmu, anchored, pre_finetuning_distill. A method defined elsewhere is registered with `@register_method` before the
config that names it is built.
"""

from .base import (
    FORGET_ROWS,
    FORGET_TOKENS,
    METHOD_REGISTRY,
    RETAIN_ROWS,
    RETAIN_TOKENS,
    Needs,
    ReferenceOutputs,
    StepContext,
    StepCounts,
    UnlearningMethod,
    get_method,
    register_method,
)
# Imported in registration order: the order of the names that errors and `--help` list.
from .npo import NPO_LEVELS, NPOArguments  # noqa: E402
from . import ga, gd, kl  # noqa: E402,F401
from .simnpo import SimNPOArguments  # noqa: E402
from .undial import UNDIALArguments  # noqa: E402
from .wga import WGAArguments  # noqa: E402
from .satimp import SatImpArguments  # noqa: E402
from .rmu import RMUArguments, rmu_lora_config  # noqa: E402
from .anchored import AnchoredArguments  # noqa: E402
from .pre_finetuning_distill import PreFinetuningDistillArguments  # noqa: E402

# The hyperparameter dataclasses UnlearningConfig mixes in (their fields are its fields and `--help` flags).
BUILTIN_ARGUMENTS = (PreFinetuningDistillArguments, AnchoredArguments, RMUArguments, SatImpArguments, WGAArguments,
                     UNDIALArguments, SimNPOArguments, NPOArguments)

__all__ = [
    "AnchoredArguments",
    "PreFinetuningDistillArguments",
    "BUILTIN_ARGUMENTS",
    "FORGET_ROWS",
    "FORGET_TOKENS",
    "RETAIN_ROWS",
    "RETAIN_TOKENS",
    "METHOD_REGISTRY",
    "NPOArguments",
    "NPO_LEVELS",
    "Needs",
    "RMUArguments",
    "ReferenceOutputs",
    "SatImpArguments",
    "SimNPOArguments",
    "StepContext",
    "StepCounts",
    "UNDIALArguments",
    "UnlearningMethod",
    "WGAArguments",
    "get_method",
    "register_method",
    "rmu_lora_config",
]

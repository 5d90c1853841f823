"""RMU (Li et al. 2024, WMDP): steer the forget rows' hidden states of one layer to a fixed random direction, and keep
the retain rows' hidden states of that layer where the frozen model has them.

`h(x)` is the output of decoder layer `rmu_layer` (`hidden_states[rmu_layer + 1]` of a transformers model). The frozen
model is the reference (the adapter disabled, or `ref_model`); the original updates only `mlp.down_proj` of the layer
and the two before it, which `rmu_lora_config(layer)` gives as a LoRA:

    trainer = UnlearningTrainer(model, UnlearningConfig(method="rmu", rmu_layer=7, ...), forget, retain, tokenizer,
                                peft_config=rmu_lora_config(7))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from ..losses import IGNORE_INDEX, hidden_mse, steering_vector
from .base import Needs, StepContext, UnlearningMethod, register_method

logger = logging.getLogger(__name__)


@dataclass
class RMUArguments:
    r"""
    Hyperparameters of method `"rmu"`: loss = mean over the forget answer positions and the hidden dimension of
    `(h_theta(x_f) - c * u) ** 2` + `rmu_alpha` * the same mean over the retain answer positions of `(h_theta(x_r) -
    h_ref(x_r)) ** 2`. `u = r / ||r||`, `r ~ U[0, 1)^d` drawn once from `seed`. The answer positions are those whose
    outputs predict the answer tokens, as in every other loss here. The retain NLL and KL weights are not used.

    Parameters:
        rmu_layer (`int`, *optional*, defaults to `7`):
            Decoder layer (0-based) whose output hidden states are steered (the original's 7, on a 32-layer 7B model).
        rmu_steering_coeff (`float` or `None`, *optional*, defaults to `None`):
            The norm `c` of the target `c * u` (the original's 6.5 on Zephyr-7B, tuned to that model's activations).
            `None`: `rmu_steering_scale` times the mean norm of the frozen model's layer outputs over the forget
            answer positions, measured once before training (one pass over the forget set).
        rmu_steering_scale (`float`, *optional*, defaults to `5.0`):
            With `rmu_steering_coeff=None`, `c` as a multiple of the measured activation norm. Our choice, so that
            the target is well outside the activations' own scale on any model.
        rmu_alpha (`float`, *optional*, defaults to `1200.0`):
            Weight of the retain term (the original's 1200 on a 7B model).
    """

    rmu_layer: int = field(default=7, metadata={"help": "RMU: decoder layer (0-based) whose outputs are steered."})
    rmu_steering_coeff: float | None = field(
        default=None,
        metadata={
            "help": "RMU: norm c of the steering target c * u (the original's 6.5 on Zephyr-7B). Default: "
            "rmu_steering_scale times the frozen model's mean activation norm on the forget answers."
        },
    )
    rmu_steering_scale: float = field(
        default=5.0,
        metadata={"help": "RMU: c as a multiple of the measured activation norm, when rmu_steering_coeff is None."},
    )
    rmu_alpha: float = field(default=1200.0, metadata={"help": "RMU: weight of the retain hidden-state term."})


def rmu_lora_config(layer: int, r: int = 8, lora_alpha: int = 16, **kwargs):
    """A `peft.LoraConfig` on `mlp.down_proj` of decoder layers `layer - 2 .. layer` only: RMU's choice of weights."""
    from peft import LoraConfig

    layers = list(range(max(0, layer - 2), layer + 1))
    return LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=["down_proj"], layers_to_transform=layers, **kwargs)


def num_decoder_layers(model) -> int | None:
    config = getattr(getattr(model, "module", model), "config", None)
    return getattr(config, "num_hidden_layers", None)


@register_method
class RMU(UnlearningMethod):
    name = "rmu"
    description = "RMU: forget hidden states of one layer to c * u, retain hidden states to the frozen model's"
    paper = "Li et al. 2024, The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning " \
        "(arXiv:2403.03218)"
    arguments = RMUArguments

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.direction: torch.Tensor | None = None  # u, fixed by `setup`
        self.steering_coeff: float | None = None  # c, fixed by `setup`

    def check(self) -> None:
        a = self.args
        if not (isinstance(a.rmu_layer, int) and a.rmu_layer >= 0):
            raise ValueError(f"rmu_layer must be an integer >= 0, got {a.rmu_layer!r}.")
        if a.rmu_steering_coeff is not None and not a.rmu_steering_coeff > 0:
            raise ValueError(f"rmu_steering_coeff must be > 0 (or None to measure it), got {a.rmu_steering_coeff}.")
        if not a.rmu_steering_scale > 0:
            raise ValueError(f"rmu_steering_scale must be > 0, got {a.rmu_steering_scale}.")
        if a.rmu_alpha < 0:
            raise ValueError(f"rmu_alpha must be >= 0, got {a.rmu_alpha}.")

    def check_model(self, model) -> None:
        layers = num_decoder_layers(model)
        if layers is not None and self.args.rmu_layer >= layers:
            raise ValueError(f"rmu_layer={self.args.rmu_layer}, but the model has {layers} decoder layers (0-based).")

    def needs(self) -> Needs:
        return Needs(
            hidden_layer=self.args.rmu_layer,
            retain_hidden=self.args.rmu_alpha > 0,
            setup_reference=self.args.rmu_steering_coeff is None,
        )

    @torch.no_grad()
    def measure_activation_norm(self, trainer) -> float:
        """Mean L2 norm of the frozen model's layer output over the forget set's answer positions (every process
        computes all rows in the same order, so the value is the same everywhere)."""
        rows, size = trainer.train_dataset.forget, trainer.args.per_device_eval_batch_size
        total, count = 0.0, 0
        for start in range(0, len(rows), size):
            batch = trainer.data_collator([{"forget": row} for row in rows[start : start + size]])
            ids, mask, labels = (batch[f"forget_{k}"].to(trainer.args.device) for k in ("input_ids", "attention_mask",
                                                                                          "labels"))
            no_positions = (ids.new_zeros(0), ids.new_zeros(0))  # hidden states only: the output layer runs on nothing
            _, hidden = trainer.reference.answer_outputs(trainer._policy, ids, mask, no_positions, self.args.rmu_layer)
            answer = labels[:, 1:].ne(IGNORE_INDEX)
            norms = hidden[:, :-1][answer].float().norm(dim=-1)
            total, count = total + norms.sum().item(), count + norms.numel()
        return total / max(count, 1)

    def setup(self, trainer) -> None:
        hidden_size = getattr(getattr(trainer._policy, "config", None), "hidden_size", None)
        if hidden_size is None:
            raise ValueError("RMU needs the model's hidden size (model.config.hidden_size) for its steering vector.")
        self.direction = steering_vector(hidden_size, trainer.args.seed)
        if self.args.rmu_steering_coeff is not None:
            self.steering_coeff = float(self.args.rmu_steering_coeff)
        else:
            norm = self.measure_activation_norm(trainer)
            self.steering_coeff = self.args.rmu_steering_scale * norm
            logger.info("RMU steering coefficient c = %.4g (%.4g x the mean activation norm %.4g of layer %d).",
                        self.steering_coeff, self.args.rmu_steering_scale, norm, self.args.rmu_layer)

    def loss(self, ctx: StepContext):
        if self.direction is None:
            raise RuntimeError("RMU's steering vector is fixed when training starts (UnlearningTrainer.train()).")
        hidden = ctx.forget_hidden
        target = (self.steering_coeff * self.direction).to(hidden.device, torch.float32)
        forget = ctx.token_mean(hidden_mse(hidden, target)[:, :-1])  # positions 0..S-2 line up with the mask
        ctx.log("rmu_forget", forget)
        loss = forget
        if ctx.retain_hidden is not None:
            retain = ctx.token_mean(hidden_mse(ctx.retain_hidden, ctx.reference.retain_hidden)[:, :-1], "retain")
            ctx.log("rmu_retain", retain)
            loss = loss + self.args.rmu_alpha * retain
        return loss

"""What an unlearning method is, the registry that names methods, and the per-step context a method's loss reads.

A method is a subclass of [`UnlearningMethod`] registered under its name with `@register_method`, in one file of
this package or in the user's own code (before the config that names it is built). It declares:

- `name`, a one-line `description` and its `paper` (cited by the model card);
- `arguments`: a dataclass of its own hyperparameters. [`UnlearningConfig`] mixes in the built-in methods' dataclasses,
  so their fields are flags of `--help`; a method defined elsewhere mixes its own into a config subclass
  (`@dataclass class MyConfig(MyArguments, UnlearningConfig)`);
- `retain_terms`: which shared retain regularisers it adds, `"nll"` (`retain_nll_weight` times the retain NLL) and
  `"kl"` (`retain_kl_weight` times the retain KL to the reference);
- `needs()`: what the trainer must compute for it: reference outputs, retain terms, hidden states of a layer;
- `loss(ctx)`: its loss, built from the pure functions of `hf_unlearn.losses`, from a [`StepContext`].

The trainer does the rest: one reference pass over exactly the rows that need it, one policy pass, the counts that
normalise every term over the whole accumulated batch on all processes, and the logging of the terms.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

METHOD_REGISTRY: dict[str, type[UnlearningMethod]] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_\-]*$")


def register_method(cls: type[UnlearningMethod] | None = None, *, name: str | None = None):
    """Register an [`UnlearningMethod`] subclass under `name` (default: its `name` attribute); usable as a decorator,
    `@register_method` or `@register_method(name="x")`. Refuses a taken name, so no method silently replaces another."""

    def register(method_cls: type[UnlearningMethod]) -> type[UnlearningMethod]:
        if not (isinstance(method_cls, type) and issubclass(method_cls, UnlearningMethod)):
            raise TypeError(f"register_method takes an UnlearningMethod subclass, got {method_cls!r}.")
        key = name if name is not None else method_cls.name
        if not isinstance(key, str) or not _NAME.match(key):
            raise ValueError(
                f"Invalid unlearning method name {key!r}: use lower-case letters, digits, '_' or '-', starting with a "
                "letter (set the class's `name`)."
            )
        if key in METHOD_REGISTRY:
            taken = METHOD_REGISTRY[key]
            raise ValueError(
                f"An unlearning method named {key!r} is already registered ({taken.__module__}.{taken.__qualname__}); "
                "choose another name."
            )
        if method_cls.arguments is not None and not dataclasses.is_dataclass(method_cls.arguments):
            raise TypeError(f"{method_cls.__qualname__}.arguments must be a dataclass (its hyperparameters).")
        method_cls.name = key
        METHOD_REGISTRY[key] = method_cls
        return method_cls

    return register(cls) if cls is not None else register


def get_method(name: str) -> type[UnlearningMethod]:
    """The registered method class called `name`; the error lists the registered names."""
    if name not in METHOD_REGISTRY:
        raise ValueError(f"Unknown unlearning method {name!r}. Choose one of: {', '.join(METHOD_REGISTRY)}.")
    return METHOD_REGISTRY[name]


@dataclass(frozen=True)
class Needs:
    """What a method's loss reads, so the trainer computes exactly that (and nothing it does not read).

    The policy's forget logits, token log-probs and forget NLL are always computed (the forget NLL is logged).
    """

    forget_ref_log_probs: bool = False  # the reference's token log-probs on the forget answers
    forget_ref_logits: bool = False  # the reference's logits at the forget answer positions
    retain_nll: bool = False  # the retain answers' mean token NLL
    retain_kl: bool = False  # KL(pi_theta || pi_ref) on the retain answers (a reference pass over the retain rows)
    hidden_layer: int | None = None  # decoder layer whose output hidden states the loss reads (policy, forget rows)
    retain_hidden: bool = False  # also the policy's and the reference's hidden states of that layer on retain rows
    setup_reference: bool = False  # `setup` runs reference passes of its own before training
    calibration_batch: int | None = None  # calibration documents re-measured per step (the loss reads their NLLs)
    calibration_refresh: bool = True  # re-measure them each step (False: the loss reads their starting NLL only)
    calibration_grad: bool = False  # measure them in the step's policy pass, with gradient (a loss term holds them)
    calibration_kl: bool = False  # also KL(pi_theta || pi_ref) on every token of them (a reference pass over them)
    forget_pre_logits: bool = False  # the base model's (before fine-tuning) logits at the forget answer positions
    calibration_pre: bool = False  # the calibration documents' NLL under that model too, measured once at the start
    # their Min-K%++ score (mean of the lowest k of the standardised token log-probs) at this k, measured at the start
    # with their NLL (and under the pre-fine-tuning model with `calibration_pre`); None: not measured
    calibration_min_k: float | None = None
    calibration_min_k_floor: float | None = None  # standardised values below minus this count as minus this in it

    @property
    def uses_retain(self) -> bool:
        return self.retain_nll or self.retain_kl or self.retain_hidden

    @property
    def reference(self) -> bool:
        return (
            self.forget_ref_log_probs or self.forget_ref_logits or self.retain_kl or self.retain_hidden
            or self.setup_reference or self.calibration_kl
        )


# Index of each count in the tensor that `UnlearningTrainer.get_batch_samples` builds and sums over processes.
FORGET_TOKENS, RETAIN_TOKENS, FORGET_ROWS, RETAIN_ROWS = range(4)


@dataclass
class StepCounts:
    """Answer tokens and rows of one optimisation step: every micro-batch of the accumulation, on every process.

    What the trainer passes to `compute_loss` as `num_items_in_batch`; `values` is a float64 tensor indexed by
    `FORGET_TOKENS`, `RETAIN_TOKENS`, `FORGET_ROWS`, `RETAIN_ROWS`.
    """

    values: torch.Tensor

    @property
    def forget_tokens(self) -> torch.Tensor:
        return self.values[FORGET_TOKENS]

    @property
    def retain_tokens(self) -> torch.Tensor:
        return self.values[RETAIN_TOKENS]

    @property
    def forget_rows(self) -> torch.Tensor:
        return self.values[FORGET_ROWS]

    @property
    def retain_rows(self) -> torch.Tensor:
        return self.values[RETAIN_ROWS]


@dataclass
class ReferenceOutputs:
    """What the reference pass computed for this micro-batch (no gradient); None where the method did not ask."""

    forget_logp: torch.Tensor | None = None  # (B_f, S_f - 1) token log-probs on the forget answers, 0 elsewhere
    forget_logits: torch.Tensor | None = None  # (N_f, vocab) float32 logits at the forget answer positions
    retain_logp: torch.Tensor | None = None  # (N_r, vocab) log-softmax at the retain answer positions
    retain_hidden: torch.Tensor | None = None  # (B_r, S_r, hidden) output of `Needs.hidden_layer` on the retain rows
    forget_pre_logits: torch.Tensor | None = None  # (N_f, vocab) float32: the base model's, at the forget answers


@dataclass
class StepContext:
    """Everything a method's loss reads for one micro-batch.

    Per-token tensors are `(batch, seq - 1)`: position `t` predicts `labels[:, t + 1]`, and the `*_mask` tensors are
    1.0 at the answer positions. Answer-position tensors `(N, ...)` are in `losses.answer_positions` order. Hidden
    states are `(batch, seq, hidden)`: a per-position value of them lines up with the masks as `values[:, :-1]`.

    `token_mean` and `row_mean` divide by the counts of the whole optimisation step (all micro-batches, all
    processes), so a term built with them is this micro-batch's share of the step's mean: the trainer sums the shares
    by accumulating gradients, and the update equals the one of a single batch of all the rows.
    """

    counts: StepCounts  # of the whole step, each at least 1
    forget_labels: torch.Tensor
    forget_logits: torch.Tensor  # (B_f, S_f, vocab), the policy's
    forget_logp: torch.Tensor  # the policy's token log-probs, 0 where masked
    forget_mask: torch.Tensor
    forget_nll: torch.Tensor  # this micro-batch's share of the step's mean forget token NLL
    reference: ReferenceOutputs = field(default_factory=ReferenceOutputs)
    retain_labels: torch.Tensor | None = None
    retain_logits: torch.Tensor | None = None
    retain_mask: torch.Tensor | None = None
    retain_nll: torch.Tensor | None = None  # share of the step's mean retain token NLL, if `Needs.retain_nll`
    retain_kl: torch.Tensor | None = None  # share of the step's mean retain KL, if `Needs.retain_kl`
    calibration_nll: torch.Tensor | None = None  # (n_calibration,) latest NLL of every calibration document, no grad
    calibration_start: torch.Tensor | None = None  # (n_calibration,) their NLL under the model before unlearning
    calibration_pre: torch.Tensor | None = None  # (n_calibration,) their NLL under the model before fine-tuning
    calibration_start_min_k: torch.Tensor | None = None  # their Min-K%++ scores before unlearning (`calibration_min_k`)
    calibration_pre_min_k: torch.Tensor | None = None  # and under the model before fine-tuning
    calibration_min_k: torch.Tensor | None = None  # and their latest ones (re-measured with `calibration_nll`)
    calibration_group: torch.Tensor | None = None  # (n_calibration,) each calibration document's kind, if known
    forget_group: torch.Tensor | None = None  # (B_f,) each forget document's kind, if known
    # With `Needs.calibration_grad`, on the step's first micro-batch: the NLL of the step's calibration documents in
    # the policy pass (with gradient), and their NLL when training started; None on the other micro-batches.
    calibration_step_nll: torch.Tensor | None = None
    calibration_step_start: torch.Tensor | None = None
    # With `Needs.calibration_kl`, on the same micro-batch: each of those documents' mean token KL to the reference.
    calibration_step_kl: torch.Tensor | None = None
    forget_hidden: torch.Tensor | None = None  # the policy's output of `Needs.hidden_layer` on the forget rows
    retain_hidden: torch.Tensor | None = None  # the same on the retain rows, if `Needs.retain_hidden`
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # what `log` recorded
    num_processes: int = 1  # a term every process computes in full (not a share) is divided by this

    def token_mean(self, values: torch.Tensor, part: str = "forget") -> torch.Tensor:
        """`values` `(batch, seq - 1)` summed over the answer positions of `part` ("forget" or "retain"), divided by
        that part's answer tokens in the whole step."""
        mask = self.forget_mask if part == "forget" else self.retain_mask
        count = self.counts.forget_tokens if part == "forget" else self.counts.retain_tokens
        return (values * mask).sum() / count

    def row_mean(self, values: torch.Tensor, part: str = "forget") -> torch.Tensor:
        """Per-row `values` `(batch,)` summed, divided by the rows of `part` in the whole step."""
        return values.sum() / (self.counts.forget_rows if part == "forget" else self.counts.retain_rows)

    def log(self, name: str, value: torch.Tensor) -> None:
        """Log `value` (a share built with `token_mean`/`row_mean`) next to `loss` as `name`."""
        self.terms[name] = value


class UnlearningMethod:
    """An unlearning objective. Subclass it, set the class attributes, write `loss`, and `@register_method` it.

    An instance holds its hyperparameters (`args`, an instance of `arguments`, or None) and the retain weights of
    the `retain_terms` it uses (0.0 for the others). The trainer makes one instance per run (`from_config`).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    paper: ClassVar[str | None] = None
    arguments: ClassVar[type | None] = None
    retain_terms: ClassVar[tuple[str, ...]] = ()

    def __init__(self, args: Any = None, retain_nll_weight: float = 0.0, retain_kl_weight: float = 0.0):
        if self.arguments is not None and args is None:
            args = self.arguments()
        self.args = args
        self.retain_nll_weight = float(retain_nll_weight) if "nll" in self.retain_terms else 0.0
        self.retain_kl_weight = float(retain_kl_weight) if "kl" in self.retain_terms else 0.0

    @classmethod
    def argument_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls.arguments) if f.init] if cls.arguments is not None else []

    @classmethod
    def from_config(cls, config) -> UnlearningMethod:
        """The method with the hyperparameters of `config` (which must have every field of `arguments`)."""
        missing = [name for name in cls.argument_names() if not hasattr(config, name)]
        if missing:
            arguments = cls.arguments.__name__
            raise ValueError(
                f"method={cls.name!r} has hyperparameters {missing} that {type(config).__name__} lacks: use a config "
                f"that mixes them in, e.g. `@dataclass class MyConfig({arguments}, UnlearningConfig): pass`."
            )
        args = cls.arguments(**{n: getattr(config, n) for n in cls.argument_names()}) if cls.arguments else None
        return cls(args, getattr(config, "retain_nll_weight", 0.0), getattr(config, "retain_kl_weight", 0.0))

    def check(self) -> None:
        """Raise a `ValueError` for hyperparameters the loss cannot use (called when the config is built)."""

    def check_model(self, model) -> None:
        """Raise a `ValueError` if the method cannot train `model` (called when the trainer is built)."""

    def needs(self) -> Needs:
        """What the loss reads; by default the retain terms whose weight is positive."""
        return Needs(retain_nll=self.retain_nll_weight > 0, retain_kl=self.retain_kl_weight > 0)

    def setup(self, trainer) -> None:
        """Run once when training starts, after the model is prepared (e.g. fixed random vectors, measured norms)."""

    def loss(self, ctx: StepContext) -> torch.Tensor:
        """This micro-batch's share of the step's loss. Log terms with `ctx.log`."""
        raise NotImplementedError

    def precomputed_reference(self, token_logp: torch.Tensor, mask: torch.Tensor) -> float | list[float]:
        """What `precompute_ref_log_probs` stores for one forget row, from its reference token log-probs and answer
        mask `(seq - 1,)`; it reaches `loss` as `ctx.reference.forget_logp` (batched). Default: the token values."""
        return token_logp.tolist()

    def retain_loss(self, ctx: StepContext) -> torch.Tensor | float:
        """`retain_nll_weight * retain NLL + retain_kl_weight * retain KL`, of the terms the trainer computed."""
        loss = 0.0
        if ctx.retain_nll is not None:
            loss = loss + self.retain_nll_weight * ctx.retain_nll
        if ctx.retain_kl is not None:
            loss = loss + self.retain_kl_weight * ctx.retain_kl
        return loss

    def hyperparameters(self) -> dict[str, Any]:
        """The settings that define this method's loss, for the model card, the record and the resume fingerprint."""
        values = {n: getattr(self.args, n) for n in self.argument_names()}
        for term, name in (("nll", "retain_nll_weight"), ("kl", "retain_kl_weight")):
            if term in self.retain_terms:
                values[name] = getattr(self, name)
        return values

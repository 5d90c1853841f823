"""Configuration of the unlearning trainers: `TrainingArguments` plus the method's documented hyperparameters."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainingArguments

from .methods import BUILTIN_ARGUMENTS, METHOD_REGISTRY, NPO_LEVELS, UnlearningMethod, get_method  # noqa: F401
from .optim import SophiaG, get_optimizer_cls
from .optim.sophia import DEFAULT_HESSIAN_INTERVAL, DEFAULT_RHO

REFERENCES = ("auto", "base", "adapter_copy")
FORGET_UNITS = ("rows", "documents")
# TrainingArguments' float settings that scale the updates (ours are found from the annotations).
_FINITE_TRAINING_ARGUMENTS = (
    "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "warmup_ratio",
)


@dataclass
class UnlearningConfig(*BUILTIN_ARGUMENTS, TrainingArguments):
    r"""
    Configuration of [`UnlearningTrainer`]: everything of [`~transformers.TrainingArguments`] plus the unlearning
    method and its hyperparameters.

    Each built-in method's own hyperparameters are documented in its dataclass in `hf_unlearn/methods/` (for
    `"npo"`: `beta`, `npo_level` in [`~methods.NPOArguments`]); they are fields (and `--help` flags) of this config.

    Parameters:
        method (`str`, *optional*, defaults to `"npo"`):
            Unlearning objective, the name of a registered method (`hf_unlearn.methods`): `"npo"` (NPO on the forget
            set plus the weighted retain NLL and retain KL; with both weights 0 it is plain NPO), `"ga"` (gradient
            ascent), `"gd"` (gradient difference) or `"kl"` (KL minimisation), exactly as in the SemEval-2025 Task 4
            (LUME) definitions, or a method registered with `register_method`.
        retain_nll_weight (`float`, *optional*, defaults to `1.0`):
            Weight (gamma) of the mean token NLL on the retain answers, used by the methods whose `retain_terms`
            include `"nll"` (`"npo"`, `"gd"`).
        retain_kl_weight (`float`, *optional*, defaults to `0.0`):
            Weight (delta) of KL(pi_theta || pi_ref) on the retain answers, over the full vocabulary and averaged
            over retain answer tokens; used by the methods whose `retain_terms` include `"kl"` (`"npo"`, `"kl"`).
        loss_on_prompt (`bool`, *optional*, defaults to `False`):
            Whether the labels cover the `input` tokens too. By default only the `output` tokens and the final EOS
            carry loss.
        max_length (`int`, *optional*, defaults to `512`):
            Maximum tokens of a sequence (`input` + `output` + EOS). Longer rows are truncated with a warning,
            keeping the answer tokens first; no row is dropped. A document (`forget_unit="documents"`) longer than
            this is cut into consecutive windows of this length instead.
        forget_unit (`str`, *optional*, defaults to `"rows"`):
            What one forget item is. `"rows"`: a prompt/answer row whose answer tokens carry loss. `"documents"`: a
            whole text, tokenised as a membership-inference attack scores it (no EOS added) with every token carrying
            loss: a `text` column if the forget set has one, else its rows grouped into documents by id (LUME:
            the sentence-completion rows of a document joined back into it; a question row becomes the text of its
            question and answer; see `hf_unlearn.data.documents.rows_to_documents`). The calibration documents of
            method `"anchored"` are read the same way.
        precompute_ref_log_probs (`bool`, *optional*, defaults to `False`):
            Compute the reference token log-probs of every forget row once before training (one pass over the forget
            set) instead of at every step, for the methods that read them (`"npo"`). Gives the same loss; saves a
            forward pass per step when the retain KL is off.
        resume_inexact (`bool`, *optional*, defaults to `False`):
            Resume from a checkpoint even when it cannot continue the saved run exactly: its forget or retain set or
            the method's settings differ from this run's (its fingerprint), or its optimizer or scheduler state is
            missing. Each difference is logged as a warning. By default such a resume is refused.
        reference (`str`, *optional*, defaults to `"auto"`):
            Where the reference distribution pi_ref comes from for a peft model. `"base"`: the model with its adapter
            disabled (no copy of the model). `"adapter_copy"`: the adapter as it was before training, copied into a
            frozen adapter named `ref_adapter_name` (right when the model arrives with an already-trained adapter).
            `"auto"`: `"base"` when every LoRA `B` matrix is zero (a fresh adapter), `"adapter_copy"` otherwise.
            Ignored when `ref_model` is given to the trainer.
        ref_adapter_name (`str`, *optional*, defaults to `"ref"`):
            Name of the frozen adapter that holds the reference in `"adapter_copy"` mode.
        max_unlearning_time (`float` or `None`, *optional*, defaults to `None`):
            Time budget in seconds for the whole run, from the start of `train()` (the task allowed one hour, 3600).
            Training stops gracefully early enough to save a checkpoint and to run the final evaluation of the LUME
            callbacks within the budget (their last duration is the estimate). `None`: no budget.
        retain_per_forget (`int`, *optional*, defaults to `1`):
            Retain rows paired with each forget row: a step of `per_device_train_batch_size` forget rows has this many
            times as many retain rows (the chunked schedule's ratio r).
        forget_chunk_size (`int` or `None`, *optional*, defaults to `None`):
            The chunked sequential schedule (AILS-NTUA's data chunking, for any method): the forget set, in its order,
            is split into chunks of this many rows; chunk k gets `retain_per_forget` times as many retain rows, drawn
            cyclically in the retain set's order with the position carried over from chunk to chunk; the chunks are
            unlearned one after another, each for `epochs_per_chunk` passes. One epoch (`num_train_epochs`) is then
            the whole schedule. A chunk's passes must fill whole optimisation steps (`epochs_per_chunk x
            forget_chunk_size` a multiple of the rows per step), except the last chunk's. `None`: every epoch is one
            pass over the whole forget set.
        epochs_per_chunk (`int`, *optional*, defaults to `1`):
            Passes over each chunk before the next one (with `forget_chunk_size`).
        chunk_restart_optimizer (`bool`, *optional*, defaults to `True`):
            With `forget_chunk_size`: each chunk starts with a fresh optimizer state and its own learning-rate
            schedule (`lr_scheduler_type` and warm-up over the chunk's steps), as the original does. `False`: one
            optimizer and one schedule over the whole run.
        train_last_layers (`int` or `None`, *optional*, defaults to `None`):
            Layer focus: train only the last k decoder layers. With `peft_config`, the LoRA goes on those layers only
            (peft's `layers_to_transform`); with a plain model and no `peft_config`, every other parameter (the other
            layers, embeddings, final norm, output layer) is frozen. `None`: no restriction.
        remove_unused_columns (`bool`, *optional*, defaults to `False`):
            Changed from the `TrainingArguments` default: the trainer builds its own paired forget/retain batches,
            whose columns the model's `forward` does not name.
        dataloader_pin_memory (`bool`, *optional*, defaults to `True`):
            As in `TrainingArguments`, but turned off where there is no accelerator (or with `use_cpu`): pinning does
            nothing there, and torch would warn at every epoch.
        learning_rate (`float`, *optional*, defaults to `1e-4`):
            Changed from the `TrainingArguments` default (5e-5) to the NPO+LoRA submission's value.
        logging_steps (`float`, *optional*, defaults to `10`):
            Changed from the `TrainingArguments` default (500): unlearning runs are short.
        unlearn_optim (`str` or `None`, *optional*, defaults to `None`):
            Name of an optimizer from `hf_unlearn.optim`'s registry (e.g. `"sophia"` for [`~optim.SophiaG`]), used
            instead of `optim`. `None` keeps `TrainingArguments`' `optim` as usual. An optimizer passed to the trainer
            (`optimizers=` or `optimizer_cls_and_kwargs=`) still takes priority. The optimizer gets `learning_rate`,
            and `weight_decay` through the Trainer's parameter groups (the `TrainingArguments` default 0.0, not
            Sophia's 0.1: decaying LoRA weights pulls the adapter back towards the model before unlearning). For
            `"sophia"`, `bs` defaults to an upper bound of the tokens per step (rows per step x `max_length`): it only
            sets the unit of the Hessian estimate, because every Gauss-Newton-Bartlett refresh rescales its estimate
            by the number of tokens it actually averaged over (the paper's `B * g_hat^2`). That refresh runs in
            `training_step` every `hessian_interval` steps, on the forget (and, if the method uses it, retain) rows of
            the step's first micro-batch: one extra forward and backward. With
            `unlearn_optim_args={"hessian_estimator": "sq_grad"}` no extra pass runs, and `bs` should be given.
        unlearn_optim_args (`dict`, `str` or `None`, *optional*, defaults to `None`):
            Keyword arguments of the `unlearn_optim` optimizer, e.g. `{"rho": 0.04, "hessian_interval": 10}`; a JSON
            string is accepted (from the command line). `lr` and `weight_decay` are refused here: set
            `learning_rate` and `weight_decay`.
    """

    method: str = field(
        default="npo",
        # No argparse `choices`: methods registered after this class exists are valid too (checked below).
        metadata={"help": f"Unlearning objective: a registered method ({', '.join(METHOD_REGISTRY)}, ...)."},
    )
    retain_nll_weight: float = field(
        default=1.0,
        metadata={"help": "Weight (gamma) of the mean token NLL on the retain answers (methods npo, gd)."},
    )
    retain_kl_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight (delta) of KL(pi_theta || pi_ref) over the full vocabulary, averaged over retain "
            "answer tokens (methods npo, kl)."
        },
    )
    loss_on_prompt: bool = field(
        default=False,
        metadata={"help": "Whether the labels cover the input tokens too (default: only output tokens and EOS)."},
    )
    max_length: int = field(
        default=512,
        metadata={"help": "Maximum tokens per sequence; longer rows are truncated with a warning, answer kept first "
                          "(a document is cut into windows)."},
    )
    forget_unit: str = field(
        default="rows",
        metadata={"help": "'rows': prompt/answer rows, answer tokens carry loss; 'documents': whole texts (a 'text' "
                          "column, or rows grouped by document id), every token carries loss, as the MIA scores them.",
                  "choices": list(FORGET_UNITS)},
    )
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata={"help": "Compute the reference log-probs of the forget set once before training (method npo)."},
    )
    resume_inexact: bool = field(
        default=False,
        metadata={"help": "Resume even from a checkpoint of other data or settings, or without its optimizer or "
                  "scheduler state (a warning per difference; refused by default)."},
    )
    reference: str = field(
        default="auto",
        metadata={
            "help": "Reference for a peft model: 'base' (adapter disabled), 'adapter_copy' (frozen copy of the "
            "incoming adapter), 'auto' (base if the LoRA B matrices are all zero, else adapter_copy).",
            "choices": list(REFERENCES),
        },
    )
    ref_adapter_name: str = field(
        default="ref",
        metadata={"help": "Name of the frozen reference adapter in 'adapter_copy' mode."},
    )
    max_unlearning_time: float | None = field(
        default=None,
        metadata={
            "help": "Time budget in seconds for the whole run (the task allowed 3600). Training stops early enough "
            "to save a checkpoint and run the final evaluation of the LUME callbacks within it."
        },
    )
    retain_per_forget: int = field(
        default=1, metadata={"help": "Retain rows paired with each forget row (the chunked schedule's ratio r)."}
    )
    forget_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Chunked sequential unlearning: forget rows per chunk, unlearned one chunk after another with "
            "retain_per_forget retain rows each (drawn cyclically, carried over), epochs_per_chunk passes each. One "
            "epoch is then the whole schedule. Default: no chunks."
        },
    )
    epochs_per_chunk: int = field(default=1, metadata={"help": "Passes over each forget chunk before the next."})
    chunk_restart_optimizer: bool = field(
        default=True,
        metadata={"help": "With forget_chunk_size: a fresh optimizer state and lr schedule for every chunk."},
    )
    train_last_layers: int | None = field(
        default=None,
        metadata={
            "help": "Train only the last k decoder layers: LoRA on them only (with peft_config), or the other "
            "parameters frozen (plain model)."
        },
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Kept False: the trainer builds its own paired forget/retain batches."},
    )
    learning_rate: float = field(
        default=1e-4,
        metadata={"help": "The initial learning rate (the NPO+LoRA submission's value)."},
    )
    logging_steps: float = field(
        default=10,
        metadata={"help": "Log every X update steps (an integer, or a float in [0, 1) as a ratio of total steps)."},
    )
    unlearn_optim: str | None = field(
        default=None,
        metadata={
            "help": "Name of an optimizer from hf_unlearn's registry (e.g. 'sophia'), used instead of --optim. An "
            "optimizer passed to the trainer still wins. For 'sophia', bs defaults to an upper bound of the tokens "
            "per step (rows per step x max_length), a unit only: each Gauss-Newton-Bartlett refresh (every "
            "hessian_interval steps, one extra forward and backward on the step's first micro-batch) rescales by "
            "the tokens it actually used. weight_decay comes from --weight_decay (default 0.0, not Sophia's 0.1)."
        },
    )
    unlearn_optim_args: dict | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments of the unlearn_optim optimizer, as a JSON object, e.g. "
            '{"rho": 0.04, "hessian_interval": 10}. Set lr and weight decay with --learning_rate and '
            "--weight_decay."
        },
    )

    # The settings that must never reach a file: `torch.save(args)` writes `training_args.bin` into every checkpoint
    # and saved model, readable by anyone who gets the folder (or a Hub push of it).
    _SECRETS = ("hub_token",)

    def __getstate__(self):
        """What pickling (training_args.bin) keeps: every setting but the secrets."""
        state = dict(self.__dict__)
        state.update({name: None for name in self._SECRETS if name in state})
        return state

    def __copy__(self):  # copies in memory keep the token (pickling goes through __getstate__, copies must not)
        new = self.__class__.__new__(self.__class__)
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo):
        import copy

        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()})
        return new

    def __post_init__(self):
        # Before TrainingArguments' own checks: a NaN compares False everywhere, so it would pass them (and ours) and
        # silently drop its term, or fail only at the first step.
        self._check_finite()
        super().__post_init__()
        if self.dataloader_pin_memory and (self.use_cpu or not torch.accelerator.is_available()):
            # Pinning needs an accelerator; on a CPU it does nothing and torch warns at every epoch's loader.
            self.dataloader_pin_memory = False
        method = self.unlearning_method  # an unknown name fails here, listing the registered ones
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}.")
        for name in ("retain_nll_weight", "retain_kl_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.max_unlearning_time is not None and self.max_unlearning_time <= 0:
            raise ValueError(f"max_unlearning_time must be a positive number of seconds, got {self.max_unlearning_time}.")
        if self.gradient_accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps must be at least 1, got {self.gradient_accumulation_steps}.")
        if self.forget_unit not in FORGET_UNITS:
            raise ValueError(f"forget_unit must be one of {FORGET_UNITS}, got {self.forget_unit!r}.")
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2 tokens, got {self.max_length}.")
        method.check()
        self._check_schedule()
        if self.precompute_ref_log_probs and not method.needs().forget_ref_log_probs:
            readers = " or ".join(f"method={name!r}" for name in _methods_reading_forget_reference()) or "no method"
            raise ValueError(
                f"precompute_ref_log_probs=True only applies to {readers} (method={self.method!r} has no reference "
                "log-probs of the forget rows to precompute)."
            )
        self._check_unlearn_optim()

    def _check_schedule(self) -> None:
        for name in ("retain_per_forget", "epochs_per_chunk"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        for name in ("forget_chunk_size", "train_last_layers"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1 (or None), got {value!r}.")
        if self.forget_chunk_size is None and self.epochs_per_chunk != 1:
            raise ValueError("epochs_per_chunk only applies with forget_chunk_size (the chunked schedule).")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> UnlearningConfig:
        """A config with one of the `PRESETS` (`"sugd"`, `"sugd-lora"`), then `overrides` on top."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}. Choose one of: {', '.join(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})

    def _check_finite(self) -> None:
        """Refuse NaN or infinity in any float setting of this config."""
        # Ours: every field beyond TrainingArguments' own, the mixed-in methods' hyperparameters included.
        ours = [f.name for f in dataclasses.fields(self) if f.name not in _TRAINING_ARGUMENT_FIELDS]
        for name in list(_FINITE_TRAINING_ARGUMENTS) + ours:
            value = getattr(self, name, None)
            if isinstance(value, float) and not math.isfinite(value):
                hint = " (None means no budget)" if name == "max_unlearning_time" else ""
                raise ValueError(f"{name} must be a finite number, got {value}{hint}.")

    def _check_unlearn_optim(self) -> None:
        """Parse `unlearn_optim_args` and check the optimizer name and its arguments before any training step."""
        if isinstance(self.unlearn_optim, str) and self.unlearn_optim.lower() in ("", "none"):
            self.unlearn_optim = None  # from the command line
        if isinstance(self.unlearn_optim_args, str):
            try:
                self.unlearn_optim_args = json.loads(self.unlearn_optim_args)
            except json.JSONDecodeError as error:
                raise ValueError(f"unlearn_optim_args is not valid JSON: {error}.") from None
        if self.unlearn_optim_args is not None and not isinstance(self.unlearn_optim_args, dict):
            kind = type(self.unlearn_optim_args).__name__
            raise ValueError(f"unlearn_optim_args must be a dict (or a JSON object string), got {kind}.")
        for key, value in (self.unlearn_optim_args or {}).items():
            if isinstance(value, float) and not math.isfinite(value):  # JSON accepts NaN and Infinity
                raise ValueError(f"unlearn_optim_args[{key!r}] must be a finite number, got {value}.")
        for key, instead in (("lr", "learning_rate"), ("weight_decay", "weight_decay")):
            if key in (self.unlearn_optim_args or {}):
                raise ValueError(f"Set {instead} instead of unlearn_optim_args[{key!r}]: the Trainer passes it.")
        if self.unlearn_optim is None:
            if self.unlearn_optim_args:
                raise ValueError("unlearn_optim_args is set but unlearn_optim is None: name their optimizer.")
            return
        try:
            optimizer_cls = get_optimizer_cls(self.unlearn_optim)
        except ValueError as error:
            raise ValueError(f"unlearn_optim={self.unlearn_optim!r}: {error}") from None
        try:  # an unknown keyword fails here rather than when the optimizer is built, after the model is loaded
            inspect.signature(optimizer_cls).bind_partial(**self.unlearn_optim_kwargs)
        except TypeError as error:
            raise ValueError(f"unlearn_optim_args do not fit {optimizer_cls.__name__}: {error}.") from None

    @property
    def unlearn_optim_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the `unlearn_optim` optimizer beyond `lr` (and `bs`/`seed` for Sophia)."""
        return dict(self.unlearn_optim_args or {})

    @property
    def uses_sophia(self) -> bool:
        return self.unlearn_optim is not None and issubclass(get_optimizer_cls(self.unlearn_optim), SophiaG)

    @property
    def unlearning_method(self) -> UnlearningMethod:
        """The registered `method` with this config's hyperparameters (a new instance at each access)."""
        return get_method(self.method).from_config(self)

    def method_hyperparameters(self) -> dict[str, Any]:
        """`method` and the settings of its loss (its dataclass's fields and the retain weights it uses)."""
        return {"method": self.method, **self.unlearning_method.hyperparameters()}

    # What the method reads, as its `needs()` says (kept as properties of the config for existing callers).
    @property
    def uses_retain_nll(self) -> bool:
        return self.unlearning_method.needs().retain_nll

    @property
    def uses_retain_kl(self) -> bool:
        return self.unlearning_method.needs().retain_kl

    @property
    def uses_retain(self) -> bool:
        return self.unlearning_method.needs().uses_retain

    @property
    def needs_reference(self) -> bool:
        return self.unlearning_method.needs().reference


_TRAINING_ARGUMENT_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainingArguments))


def _methods_reading_forget_reference() -> list[str]:
    """Registered methods whose loss (with default hyperparameters) reads the forget rows' reference log-probs."""
    names = []
    for name, cls in METHOD_REGISTRY.items():
        try:
            if cls().needs().forget_ref_log_probs:
                names.append(name)
        except Exception:  # a method whose defaults cannot be built is just not listed
            continue
    return names


# SUGD, AILS-NTUA's SemEval-2025 Task 4 winner (arXiv:2503.02443; ../shared/docs/METHODS.md): gradient difference on a
# chunked schedule. Theirs: chunks of C forget rows, r * C retain rows each (cyclic, carried over), E epochs per chunk
# with a fresh optimizer and schedule, lr, batch size, and the last k decoder layers trained in full ("sugd", their
# 7B setting: C 32, r 7, lambda 0.5, lr 1e-5, E 7, batch 1, k 8) or LoRA on q, v, up, down ("sugd-lora": C 32, r 3,
# lambda 1, batch 16, lr 5e-5, E 4; pass `peft_config=sugd_lora_config()`, LoRA r 16, alpha 32). Ours: their loss is
# the mean over all rows of f_i * (row mean NLL), f = -1 (forget) or lambda (retain); our "gd" takes token means of
# the forget and retain NLL apart, so retain_nll_weight = lambda * r keeps their total weight of the retain rows
# against the forget rows (r retain rows per forget row); num_train_epochs 1 (one pass of the whole schedule).
PRESETS: dict[str, dict[str, Any]] = {
    "sugd": dict(method="gd", retain_nll_weight=0.5 * 7, forget_chunk_size=32, retain_per_forget=7,
                 epochs_per_chunk=7, chunk_restart_optimizer=True, learning_rate=1e-5, per_device_train_batch_size=1,
                 train_last_layers=8, num_train_epochs=1),
    "sugd-lora": dict(method="gd", retain_nll_weight=1.0 * 3, forget_chunk_size=32, retain_per_forget=3,
                      epochs_per_chunk=4, chunk_restart_optimizer=True, learning_rate=5e-5,
                      per_device_train_batch_size=16, num_train_epochs=1),
}


def describe_lora_targets(config) -> str:
    """Where a `peft.LoraConfig` puts its adapters, in words: "all linear layers", or the module names (sorted), with
    "of decoder layers 5-7" when it is restricted to some layers (RMU's)."""
    modules = config.target_modules
    text = ("all linear layers" if modules == "all-linear" else modules if isinstance(modules, str)
            else ", ".join(sorted(modules)))
    layers = config.layers_to_transform
    if layers is not None:
        layers = [layers] if isinstance(layers, int) else sorted(layers)
        span = (f"{layers[0]}-{layers[-1]}" if len(layers) > 1 and layers == list(range(layers[0], layers[-1] + 1))
                else ", ".join(map(str, layers)))
        text += f" of decoder layer{'s' if len(layers) > 1 else ''} {span}"
    return text


def sugd_lora_config(**kwargs):
    """The LoRA of the `"sugd-lora"` preset: r 16, alpha 32 on the q, v, up and down projections."""
    from peft import LoraConfig

    return LoraConfig(**{"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj", "up_proj", "down_proj"],
                         **kwargs})


# The three LIBU setups (Kudelya & Shirnin 2025, arXiv:2506.04044, Table 1), as we read them. We could not read the
# paper's table itself; summaries of it describe three setups that differ in learning rate: setup 1 "aggressive"
# (4e-5; it fell below the MMLU threshold), setup 2 "balanced" (its value is not given: 3e-5 is our midpoint) and
# setup 3 "conservative" (2e-5; the best overall, final score 0.254 on the 7B model). All use damping 1e-3 and Sophia.
# The objective of phase 2 is not stated; we use gradient difference.
_LIBU_COMMON = dict(method="gd", damping=1e-3, sophia_rho=DEFAULT_RHO, hessian_interval=DEFAULT_HESSIAN_INTERVAL,
                    unlearn_optim="sophia")
LIBU_PRESETS: dict[str, dict[str, Any]] = {
    "libu-1": dict(_LIBU_COMMON, learning_rate=4e-5),
    "libu-2": dict(_LIBU_COMMON, learning_rate=3e-5),
    "libu-3": dict(_LIBU_COMMON, learning_rate=2e-5),
}


@dataclass
class InfluenceUnlearningConfig(UnlearningConfig):
    r"""
    Configuration of [`InfluenceUnlearningTrainer`] (LIBU, Kudelya & Shirnin 2025): everything of
    [`UnlearningConfig`] plus the influence step (phase 1) and the Sophia fine-tuning (phase 2).

    Phase 1 moves the trainable parameters once, `theta <- theta + influence_lr * g_f / (F + damping)`, where `g_f` is
    the gradient of the forget NLL over the whole forget set and `F` the diagonal Fisher of the retain NLL (the mean
    over retain batches of the squared batch gradient). It raises the forget NLL, least along the coordinates the
    retain set depends on. Phase 2 is the `method` objective (gradient difference by default) optimised with Sophia.
    The three setups of the paper are available as presets: `InfluenceUnlearningConfig.from_preset("libu-3",
    output_dir=...)` (see `LIBU_PRESETS`; the values are our reading of the paper).

    Parameters:
        damping (`float`, *optional*, defaults to `1e-3`):
            Added to the diagonal Fisher before dividing by it (the paper's lambda, 1e-3 in its best setup). Smaller
            values let the coordinates the retain set barely uses move further.
        influence_lr (`float` or `None`, *optional*, defaults to `None`):
            Step size of the influence step. `None` uses `learning_rate` (LIBU uses one eta for both phases, as we read
            the paper). The update is not clipped: its norm is logged as `influence/update_norm`.
        fisher_num_batches (`int` or `None`, *optional*, defaults to `None`):
            Use at most this many retain batches for the Fisher. A batch is the rows of one optimisation step
            (`per_device_train_batch_size` x `gradient_accumulation_steps` x processes), taken from a permutation of
            the retain set seeded by `seed`. `None` uses the whole retain set (one pass, one backward per micro-batch).
        hessian_interval (`int`, *optional*, defaults to `10`):
            Refresh Sophia's Hessian estimate every this many steps (the Sophia paper's k), with one extra forward and
            backward. Used when `unlearn_optim` is `"sophia"`.
        sophia_rho (`float`, *optional*, defaults to `0.04`):
            Scale of the Hessian in Sophia's denominator, `min(|m| / (rho * B * h + eps), 1)`. This is the gamma of
            the Sophia and LIBU papers (larger: smaller, more conservative steps); the first version of the Sophia
            paper wrote the same knob as a clipping threshold, `clip(m / max(h, eps), rho)`, which equals
            `rho * clip(m / (rho * max(h, eps)), 1)`: one knob, so there is no separate `sophia_gamma`. Used when
            `unlearn_optim` is `"sophia"`.
        method (`str`, *optional*, defaults to `"gd"`):
            Objective of phase 2: `"gd"` (gradient difference: ascent on the forget set, descent on the retain set,
            weighted by `retain_nll_weight`), or any other method of [`UnlearningConfig`] (e.g. `"npo"`). Changed from
            [`UnlearningConfig`]'s `"npo"`.
        unlearn_optim (`str` or `None`, *optional*, defaults to `"sophia"`):
            Optimizer of phase 2. Changed from [`UnlearningConfig`]'s `None`; `None` (`"none"` on the command line)
            uses `optim` (e.g. AdamW).
        full_finetune (`bool`, *optional*, defaults to `False`):
            Allow a plain (non-peft) model without `peft_config`. The influence step and phase 2 then move every
            trainable weight of the model (by default, all of them) instead of a LoRA adapter; without this flag such
            a model is refused.
    """

    method: str = field(
        default="gd",
        metadata={"help": "Objective of phase 2, a registered method (default gd: forget NLL ascent + retain NLL "
                  "descent)."},
    )
    unlearn_optim: str | None = field(
        default="sophia",
        metadata={"help": "Optimizer of phase 2, from hf_unlearn's registry (default sophia); 'none' uses --optim."},
    )
    damping: float = field(
        default=1e-3,
        metadata={"help": "Added to the diagonal Fisher before dividing by it (the LIBU paper's lambda, 1e-3)."},
    )
    influence_lr: float | None = field(
        default=None,
        metadata={"help": "Step size of the influence step; default: learning_rate. The update norm is logged."},
    )
    fisher_num_batches: int | None = field(
        default=None,
        metadata={
            "help": "Use at most this many retain batches (of one optimisation step's rows each) for the diagonal "
            "Fisher; default: the whole retain set."
        },
    )
    hessian_interval: int = field(
        default=DEFAULT_HESSIAN_INTERVAL,
        metadata={"help": "Refresh Sophia's Hessian estimate every this many steps (one extra forward and backward)."},
    )
    sophia_rho: float = field(
        default=DEFAULT_RHO,
        metadata={
            "help": "Scale of the Hessian in Sophia's denominator (the gamma of the Sophia and LIBU papers; larger "
            "means smaller steps)."
        },
    )
    full_finetune: bool = field(
        default=False,
        metadata={
            "help": "Allow a plain (non-peft) model without peft_config: every trainable base weight is then moved. "
            "Without it such a model is refused."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.damping > 0:
            raise ValueError(f"damping must be > 0 (it keeps the division by the Fisher finite), got {self.damping}.")
        if self.influence_lr is not None and not self.influence_lr > 0:
            raise ValueError(f"influence_lr must be > 0 (or None to use learning_rate), got {self.influence_lr}.")
        if self.fisher_num_batches is not None and self.fisher_num_batches < 1:
            raise ValueError(f"fisher_num_batches must be >= 1 (or None for all), got {self.fisher_num_batches}.")
        if not (isinstance(self.hessian_interval, int) and self.hessian_interval >= 1):
            raise ValueError(f"hessian_interval must be an integer >= 1, got {self.hessian_interval!r}.")
        if not self.sophia_rho >= 0:
            raise ValueError(f"sophia_rho must be >= 0, got {self.sophia_rho}.")
        if self.uses_sophia:
            for key, name in (("rho", "sophia_rho"), ("hessian_interval", "hessian_interval")):
                if key in (self.unlearn_optim_args or {}):
                    raise ValueError(f"Set {name} instead of unlearn_optim_args[{key!r}].")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> InfluenceUnlearningConfig:
        """A config with one of the `LIBU_PRESETS` (`"libu-1"`, `"libu-2"`, `"libu-3"`), then `overrides` on top."""
        if name not in LIBU_PRESETS:
            raise ValueError(f"Unknown LIBU preset {name!r}. Choose one of: {', '.join(LIBU_PRESETS)}.")
        return cls(**{**LIBU_PRESETS[name], **overrides})

    @property
    def unlearn_optim_kwargs(self) -> dict[str, Any]:
        kwargs = super().unlearn_optim_kwargs
        if self.uses_sophia:
            kwargs = {"rho": self.sophia_rho, "hessian_interval": self.hessian_interval, **kwargs}
        return kwargs

    @property
    def effective_influence_lr(self) -> float:
        return self.learning_rate if self.influence_lr is None else self.influence_lr

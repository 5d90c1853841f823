"""Configuration of the unlearning trainers: `TrainingArguments` plus the method's documented hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

# What each method optimises (see ../shared/docs/LUME.md and `UnlearningTrainer.compute_loss`).
METHODS = {
    "npo": "NPO on the forget set + retain_nll_weight * retain NLL + retain_kl_weight * retain KL",
    "ga": "gradient ascent: minus the forget NLL",
    "gd": "gradient difference: minus the forget NLL + retain_nll_weight * retain NLL",
    "kl": "KL minimisation: minus the forget NLL + retain_kl_weight * retain KL",
}
NPO_LEVELS = ("sequence", "token")
REFERENCES = ("auto", "base", "adapter_copy")


@dataclass
class UnlearningConfig(TrainingArguments):
    r"""
    Configuration of [`UnlearningTrainer`]: everything of [`~transformers.TrainingArguments`] plus the unlearning
    method and its hyperparameters.

    Parameters:
        method (`str`, *optional*, defaults to `"npo"`):
            Unlearning objective: `"npo"` (NPO on the forget set plus the weighted retain NLL and retain KL; with both
            weights 0 it is plain NPO), `"ga"` (gradient ascent), `"gd"` (gradient difference) or `"kl"` (KL
            minimisation), exactly as in the SemEval-2025 Task 4 (LUME) definitions.
        beta (`float`, *optional*, defaults to `0.5`):
            Inverse temperature of the NPO loss. As beta tends to 0 the NPO gradient tends to gradient ascent's.
        npo_level (`str`, *optional*, defaults to `"sequence"`):
            `"sequence"`: log pi(y|x) is the sum of the answer tokens' log-probs and the NPO loss is averaged over
            forget rows. `"token"`: the NPO loss is applied to each answer token and averaged over answer tokens
            (as in the NPO+LoRA submission's code).
        retain_nll_weight (`float`, *optional*, defaults to `1.0`):
            Weight (gamma) of the mean token NLL on the retain answers, used by `"npo"` and `"gd"`.
        retain_kl_weight (`float`, *optional*, defaults to `0.0`):
            Weight (delta) of KL(pi_theta || pi_ref) on the retain answers, over the full vocabulary and averaged
            over retain answer tokens; used by `"npo"` and `"kl"`.
        loss_on_prompt (`bool`, *optional*, defaults to `False`):
            Whether the labels cover the `input` tokens too. By default only the `output` tokens and the final EOS
            carry loss.
        max_length (`int`, *optional*, defaults to `512`):
            Maximum tokens of a sequence (`input` + `output` + EOS). Longer rows are truncated with a warning,
            keeping the answer tokens first; no row is dropped.
        precompute_ref_log_probs (`bool`, *optional*, defaults to `False`):
            Compute the NPO reference log-probs of every forget row once before training (one pass over the forget
            set) instead of at every step. Gives the same loss; saves a forward pass per step when the retain KL is
            off.
        reference (`str`, *optional*, defaults to `"auto"`):
            Where the reference distribution pi_ref comes from for a peft model. `"base"`: the model with its adapter
            disabled (no copy of the model). `"adapter_copy"`: the adapter as it was before training, copied into a
            frozen adapter named `ref_adapter_name` (right when the model arrives with an already-trained adapter).
            `"auto"`: `"base"` when every LoRA `B` matrix is zero (a fresh adapter), `"adapter_copy"` otherwise.
            Ignored when `ref_model` is given to the trainer.
        ref_adapter_name (`str`, *optional*, defaults to `"ref"`):
            Name of the frozen adapter that holds the reference in `"adapter_copy"` mode.
        remove_unused_columns (`bool`, *optional*, defaults to `False`):
            Changed from the `TrainingArguments` default: the trainer builds its own paired forget/retain batches,
            whose columns the model's `forward` does not name.
        learning_rate (`float`, *optional*, defaults to `1e-4`):
            Changed from the `TrainingArguments` default (5e-5) to the NPO+LoRA submission's value.
        logging_steps (`float`, *optional*, defaults to `10`):
            Changed from the `TrainingArguments` default (500): unlearning runs are short.
    """

    method: str = field(
        default="npo",
        metadata={"help": "Unlearning objective.", "choices": list(METHODS)},
    )
    beta: float = field(
        default=0.5,
        metadata={"help": "Inverse temperature of the NPO loss. As beta tends to 0 NPO tends to gradient ascent."},
    )
    npo_level: str = field(
        default="sequence",
        metadata={
            "help": "'sequence': log pi(y|x) sums the answer tokens' log-probs, NPO averaged over forget rows. "
            "'token': NPO per answer token, averaged over answer tokens.",
            "choices": list(NPO_LEVELS),
        },
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
        metadata={"help": "Maximum tokens per sequence; longer rows are truncated with a warning, answer kept first."},
    )
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata={"help": "Compute the NPO reference log-probs of the forget set once before training."},
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

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(
                f"Unknown unlearning method {self.method!r}. Choose one of: {', '.join(METHODS)}."
            )
        if self.npo_level not in NPO_LEVELS:
            raise ValueError(f"npo_level must be one of {NPO_LEVELS}, got {self.npo_level!r}.")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}.")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0 (the NPO temperature), got {self.beta}.")
        for name in ("retain_nll_weight", "retain_kl_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2 tokens, got {self.max_length}.")
        if self.method == "kl" and self.retain_kl_weight == 0:
            raise ValueError(
                "method='kl' with retain_kl_weight=0 is plain gradient ascent: set retain_kl_weight > 0 "
                "(e.g. 1.0) or use method='ga'."
            )
        if self.precompute_ref_log_probs and self.method != "npo":
            raise ValueError(
                f"precompute_ref_log_probs=True only applies to method='npo' (method={self.method!r} has no NPO "
                "reference log-probs to precompute)."
            )

    @property
    def uses_retain_nll(self) -> bool:
        return self.method in ("npo", "gd") and self.retain_nll_weight > 0

    @property
    def uses_retain_kl(self) -> bool:
        return self.method in ("npo", "kl") and self.retain_kl_weight > 0

    @property
    def uses_retain(self) -> bool:
        return self.uses_retain_nll or self.uses_retain_kl

    @property
    def needs_reference(self) -> bool:
        return self.method == "npo" or self.uses_retain_kl

"""`UnlearningTrainer`: a `Trainer` that unlearns a forget set while keeping a retain set.

Each optimisation step sees one forget batch and one retain batch. The loss is the registered method's
(`hf_unlearn.methods`, named by `UnlearningConfig.method`): the trainer computes what the method says it needs (one
reference pass over exactly those rows, one policy pass, the retain NLL and KL, hidden states of a layer) and hands
it to the method in a `StepContext`. The loss is made of token means (forget NLL, retain NLL, retain KL, token-level
NPO) and row means (sequence-level NPO); each is normalised by its count over the whole accumulated batch on all
processes (`get_batch_samples`, `StepCounts`), so gradient accumulation and data parallelism give the same update as
one big batch.

The optimizer can be picked by name from `hf_unlearn.optim`'s registry (`UnlearningConfig.unlearn_optim`, e.g.
Sophia). Work beyond the step's own forward and backward (Sophia's Hessian refresh; the influence step of
[`InfluenceUnlearningTrainer`]) runs in one place, `run_extra_passes`, at the start of each optimisation step.
"""

from __future__ import annotations

import copy
import logging
import math
from collections import defaultdict

import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, Trainer, TrainerCallback

from .calibration import CalibrationLevels, floored_min_k_score
from .checkpoint import resolve_resume, save_checkpoint_atomically
from .config import UnlearningConfig
from .data import (
    ChunkedForgetRetainSampler,
    ForgetRetainDataset,
    ForgetRetainSampler,
    UnlearningCollator,
    document_units,
    pad_features,
    tokenize_dataset,
    tokenize_documents,
    validate_rows,
)
from .losses import (
    IGNORE_INDEX,
    answer_kl,
    answer_log_probs,
    answer_positions,
    log_softmax_,
    mean_token_nll,
    nll_sum,
    scatter_answers,
    token_log_probs,
)
from .methods import (
    FORGET_ROWS,
    FORGET_TOKENS,
    RETAIN_ROWS,
    RETAIN_TOKENS,
    Needs,
    ReferenceOutputs,
    StepContext,
    StepCounts,
)
from .optim import causal_lm_gnb_loss, get_optimizer_cls, unwrap_optimizer
from .quiet import peft_wrapping
from .reference import Reference, is_peft_model
from .schedule import (
    chunk_of_step,
    chunk_step_bounds,
    chunked_lr_scheduler,
    freeze_all_but_last_layers,
    last_layer_indices,
    reset_optimizer_state,
)

logger = logging.getLogger(__name__)


def concat_rows(parts: list[tuple[torch.Tensor, ...]], pad_token_id: int) -> tuple[torch.Tensor, ...]:
    """Stack `(input_ids, attention_mask[, labels])` batches of different widths into one right-padded batch."""
    width = max(part[0].shape[1] for part in parts)
    pad_values = (pad_token_id, 0, IGNORE_INDEX)[: len(parts[0])]
    return tuple(
        torch.cat([torch.nn.functional.pad(part[k], (0, width - part[k].shape[1]), value=value) for part in parts])
        for k, value in enumerate(pad_values)
    )


def _vocab_rows(model) -> int:
    """Rows of the output embedding: its full size even where ZeRO-3 left this process an empty placeholder."""
    weight = model.get_output_embeddings().weight
    return getattr(weight, "ds_shape", weight.shape)[0]


def _narrow(rows: torch.Tensor, width: int) -> torch.Tensor:
    """`rows[:, :width]`, or `rows` itself when it is that wide already (no slice for autograd to undo)."""
    return rows if rows.shape[1] == width else rows[:, :width]


def warn_overlap(forget, retain) -> int:
    """Warn about forget rows also in the retain set (same input and output), by count only: their ascent and
    descent terms cancel (with `gd` the pair's loss is 0), so they are not unlearned. Returns the count."""
    retain_pairs = set(zip(retain["input"], retain["output"]))
    count = sum(pair in retain_pairs for pair in zip(forget["input"], forget["output"]))
    if count:
        logger.warning(
            "%d of %d forget rows are also in the retain set (same input and output): the forget and retain terms "
            "pull them in opposite directions and they will not be unlearned. Remove them from one of the sets.",
            count, len(forget),
        )
    return count


def hessian_optimizer(optimizer) -> torch.optim.Optimizer | None:
    """The optimizer under accelerate's wrapper if it wants a Gauss-Newton-Bartlett Hessian refresh from the training
    loop (SophiaG's protocol: `should_update_hessian`, `update_hessian`, `hessian_estimator == "gnb"`), else None."""
    inner = unwrap_optimizer(optimizer) if optimizer is not None else None
    wants = all(hasattr(inner, name) for name in ("should_update_hessian", "update_hessian"))
    return inner if wants and getattr(inner, "hessian_estimator", "gnb") == "gnb" else None


class _TrainBeginCallback(TrainerCallback):
    """Runs the passes before the first step once the model is prepared (after DeepSpeed/DDP wrapping): the one pass
    over the forget set of `precompute_ref_log_probs`, then the method's own `setup`."""

    def __init__(self, trainer: UnlearningTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if args.precompute_ref_log_probs:
            self.trainer.precompute_reference_log_probs()
        calibration = self.trainer.calibration
        if calibration is not None and calibration.values is None:  # not restored from a checkpoint
            pre = self.trainer.pre_finetuning_model if self.trainer.needs.calibration_pre else None
            calibration.measure_all(self.trainer._policy, self.trainer.processing_class.pad_token_id, pre)
        self.trainer.method.setup(self.trainer)


class UnlearningTrainer(Trainer):
    """Unlearn `forget_dataset` while keeping `retain_dataset`, with one of the methods of [`UnlearningConfig`].

    Args:
        model: a peft model (only the adapter trains; the reference is the model with the adapter disabled), a plain
            causal LM (with `peft_config` to wrap it in LoRA, or with `ref_model` for the methods that need a
            reference), or a Hub id / path loaded with `AutoModelForCausalLM`.
        args: an [`UnlearningConfig`].
        forget_dataset / retain_dataset: `datasets.Dataset`s with string `input` and `output` columns (e.g. from
            [`load_lume`]). The retain set is required by the methods that use it.
        processing_class: the tokenizer. It needs an EOS token (it ends every answer); a tokenizer without a pad
            token gets EOS as pad token, with a warning.
        ref_model: a frozen reference model, for a plain (non-peft) `model`. Never needed with a peft model.
        pre_finetuning_model: the model `model` was fine-tuned from (a model or its path or Hub id), for the methods
            that read it on the forget documents (`"pre_finetuning_distill"`): a model that never saw them. Same
            tokenizer; kept frozen.
        calibration_dataset: documents the model never saw, of the same kind as the forget set, for the methods that
            read their NLL (`"anchored"`): a list of strings, a `datasets.Dataset` with a `text` (or `document`)
            column, or one of `input`/`output` rows (grouped into documents as `forget_unit="documents"` does).
            Keep them apart from the documents a reported membership attack uses.
        peft_config: a `peft.PeftConfig` to wrap a plain `model` with (as in trl).
        callbacks, optimizers, optimizer_cls_and_kwargs: as in `Trainer`; an optimizer given here takes priority over
            `args.unlearn_optim`. A given optimizer with SophiaG's Hessian protocol is refreshed like a named one.
    """

    _tag_names = ["hf_unlearn", "unlearning"]
    # compute_loss normalises by the counts of the whole accumulated batch itself.
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: PreTrainedModel | torch.nn.Module | str,
        args: UnlearningConfig | None = None,
        forget_dataset=None,
        retain_dataset=None,
        processing_class=None,
        ref_model: PreTrainedModel | None = None,
        peft_config=None,
        calibration_dataset=None,
        pre_finetuning_model: PreTrainedModel | str | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers=(None, None),
        optimizer_cls_and_kwargs=None,
        **kwargs,
    ):
        if args is None:
            args = UnlearningConfig(output_dir="unlearning_output")
        if not isinstance(args, UnlearningConfig):
            raise TypeError(
                f"args must be an UnlearningConfig (it extends TrainingArguments), got {type(args).__name__}."
            )
        if processing_class is None:
            raise ValueError("processing_class (the tokenizer) is required to tokenise the forget and retain sets.")
        if isinstance(model, str):
            from .pretrained import load_causal_lm, resolve_model_path

            model = load_causal_lm(resolve_model_path(model), "model", dtype="auto")
        if peft_config is not None:
            if is_peft_model(model):
                raise ValueError("The model is already a peft model; do not pass peft_config as well.")
            from peft import get_peft_model
            from transformers.trainer_utils import enable_full_determinism, set_seed

            # The LoRA weights are drawn here, before Trainer seeds anything: seed as Trainer will, so `args.seed`
            # also fixes the adapter's initialisation.
            enable_full_determinism(args.seed) if args.full_determinism else set_seed(args.seed)
            if args.train_last_layers is not None:  # layer focus: the LoRA goes on the last k decoder layers only
                peft_config = copy.copy(peft_config)
                peft_config.layers_to_transform = last_layer_indices(model, args.train_last_layers)
            with peft_wrapping():
                model = get_peft_model(model, peft_config)
        elif args.train_last_layers is not None:
            if is_peft_model(model):
                raise ValueError(
                    "train_last_layers with a model that already has its adapter: pass the plain model and "
                    "peft_config= (the LoRA is then put on the last layers only), or leave train_last_layers=None."
                )
            freeze_all_but_last_layers(model, args.train_last_layers)
        if args.gradient_checkpointing and is_peft_model(model):
            # With a frozen base, the checkpointed blocks would otherwise see inputs that need no grad.
            model.enable_input_require_grads()
        self.tokenizer_pad_token_check(processing_class)

        # One instance of the method for the run: it may hold state that `setup` fixes (RMU's steering vector).
        self.method = args.unlearning_method
        self.needs: Needs = self.method.needs()
        self.method.check_model(model)
        self.reference = Reference.resolve(
            model, ref_model, args.reference, args.ref_adapter_name, needed=self.needs.reference
        )
        self.ref_model = ref_model
        self.pre_finetuning_model = self._load_pre_finetuning_model(pre_finetuning_model, model, args.method)
        self.group_names: dict[str, int] = {}  # documents' kinds, numbered as the forget and calibration sets name them
        train_dataset = self._build_train_dataset(forget_dataset, retain_dataset, processing_class, args)
        self.calibration = self._build_calibration(calibration_dataset, processing_class, args)

        super().__init__(
            model=model,
            args=args,
            data_collator=UnlearningCollator(processing_class.pad_token_id),
            train_dataset=train_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            **kwargs,
        )
        if self.ref_model is not None:
            self.ref_model = self._prepare_ref_model(self.ref_model)
            self.reference.ref_model = self.ref_model
        if self.pre_finetuning_model is not None:
            self.pre_finetuning_model = self._prepare_ref_model(self.pre_finetuning_model)
            self.pre_reference = Reference("model", ref_model=self.pre_finetuning_model)
        self.add_callback(_TrainBeginCallback(self))
        if self.calibration is not None:
            self.add_callback(self.calibration)  # saved with every checkpoint (an ExportableState)
        if args.max_unlearning_time is not None:
            from .callbacks import TimeBudgetCallback

            # Added first, so its clock also counts the LUME callbacks' evaluation before the first step.
            self.callback_handler.callbacks.insert(0, TimeBudgetCallback(self, args.max_unlearning_time))
        self._metric_sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.args.device))
        self._metric_steps = 0  # optimiser steps since the last training log
        self._step_begins = False  # set by get_batch_samples: the next training_step is a step's first micro-batch
        self._calibration_due = False  # set by training_step: this step's calibration documents are still to measure
        self.hessian_refreshes = 0
        self.chunk_restarts = 0
        self.chunk_bounds = self._chunk_bounds()  # None without forget_chunk_size; checked here, before training
        if self.chunk_bounds is not None and args.chunk_restart_optimizer and self.is_deepspeed_enabled:
            raise ValueError(
                "chunk_restart_optimizer=True resets the optimizer's state, which DeepSpeed owns: set it to False or "
                "use DDP (or a single process)."
            )
        if args.forget_chunk_size is not None and args.num_train_epochs != 1 and args.max_steps <= 0:
            logger.warning("With forget_chunk_size one epoch is the whole chunked schedule: num_train_epochs=%s runs "
                           "it %s times.", args.num_train_epochs, args.num_train_epochs)
        if args.uses_sophia and args.unlearn_optim_kwargs.get("hessian_estimator", "gnb") == "gnb":
            self._check_extra_passes_supported("Sophia's Gauss-Newton-Bartlett Hessian refresh")

    def _check_extra_passes_supported(self, what: str) -> None:
        # The extra passes read `p.grad` of the model's own parameters and hand them to the optimizer (or add to the
        # parameters); DeepSpeed and FSDP shard or flatten those, and ZeRO keeps master weights of its own.
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            raise ValueError(
                f"{what} is not supported with DeepSpeed or FSDP: they shard or flatten the parameters it reads. Use "
                "DDP (or a single process); for Sophia alone, unlearn_optim_args={'hessian_estimator': 'sq_grad', "
                "'bs': <tokens per step>} refreshes the Hessian inside the optimizer step instead."
            )

    # ---- setup -------------------------------------------------------------------------------------------------

    @staticmethod
    def tokenizer_pad_token_check(tokenizer) -> None:
        if tokenizer.eos_token_id is None:
            # Every answer ends with EOS and carries loss on it: without one the first batch fails in the collator.
            raise ValueError(
                "The tokenizer has no EOS token (tokenizer.eos_token is None): every answer ends with EOS. Set "
                "tokenizer.eos_token to the token that ends an answer (e.g. the chat template's end-of-turn token)."
            )
        if tokenizer.pad_token is None:
            logger.warning("The tokenizer has no pad token: using its EOS token %r as pad token.", tokenizer.eos_token)
            tokenizer.pad_token = tokenizer.eos_token

    def _uses_retain_set(self, args: UnlearningConfig) -> bool:
        """Whether the retain set is tokenised and paired with the forget rows."""
        return self.needs.uses_retain

    def _build_train_dataset(self, forget, retain, tokenizer, args: UnlearningConfig) -> ForgetRetainDataset:
        import datasets

        if forget is None:
            raise ValueError("forget_dataset is required: the rows to unlearn, with 'input' and 'output' columns.")
        if isinstance(forget, datasets.IterableDataset):
            if args.precompute_ref_log_probs:
                raise ValueError(
                    "precompute_ref_log_probs=True needs a map-style forget_dataset (one pass over a known set of "
                    "rows), but got an IterableDataset. Materialise it with `Dataset.from_list(list(dataset))` or "
                    "set precompute_ref_log_probs=False."
                )
            forget = datasets.Dataset.from_list(list(forget))
        if args.forget_unit == "documents":
            texts, groups = document_units(forget, "forget_dataset")
            forget_features = tokenize_documents(texts, tokenizer, "forget_dataset", args.max_length,
                                                 self._group_ids(groups))
        else:
            validate_rows(forget, "forget_dataset")
            forget_features = tokenize_dataset(forget, tokenizer, "forget_dataset", args.max_length,
                                               args.loss_on_prompt)
        retain_features = None
        if self._uses_retain_set(args):
            if retain is None:
                settings = ", ".join(f"{k}={v}" for k, v in self.method.hyperparameters().items())
                raise ValueError(
                    f"method={args.method!r} with {settings} uses the retain set, but retain_dataset is None."
                )
            if isinstance(retain, datasets.IterableDataset):
                retain = datasets.Dataset.from_list(list(retain))
            validate_rows(retain, "retain_dataset")
            if "input" in forget.column_names:
                warn_overlap(forget, retain)
            retain_features = tokenize_dataset(
                retain, tokenizer, "retain_dataset", args.max_length, args.loss_on_prompt
            )
        return ForgetRetainDataset(forget_features, retain_features)

    def _group_ids(self, groups: list[str] | None) -> list[int] | None:
        """Documents' kinds (`rows_to_units`: "Task3/document", ...) as integers shared by forget and calibration."""
        if groups is None:
            return None
        return [self.group_names.setdefault(g, len(self.group_names)) for g in groups]

    def _build_calibration(self, calibration, tokenizer, args: UnlearningConfig) -> CalibrationLevels | None:
        """The calibration documents, tokenised as whole documents, for a method that reads their NLL."""
        batch = self.needs.calibration_batch
        if batch is None:
            return None
        if calibration is None:
            raise ValueError(
                f"method={args.method!r} reads the NLL of calibration documents: pass calibration_dataset= (documents "
                "the model never saw, of the same kind as the forget set)."
            )
        texts, groups = document_units(calibration, "calibration_dataset")
        features = tokenize_documents(texts, tokenizer, "calibration_dataset", args.max_length, self._group_ids(groups))
        if len(features) < 2:
            raise ValueError(f"calibration_dataset has {len(features)} document(s); the unseen level needs at least 2.")
        return CalibrationLevels(features, batch, self.needs.calibration_min_k, self.needs.calibration_min_k_floor)

    def _load_pre_finetuning_model(self, pre, model, method: str):
        """The frozen model from before fine-tuning, if the method reads it (refused, naming the fix, when it is
        missing or its vocabulary is not the model's); None otherwise."""
        if not self.needs.forget_pre_logits:
            if pre is not None:
                logger.warning("pre_finetuning_model is given but method=%r does not read it; it is not loaded.",
                               method)
            return None
        if pre is None:
            raise ValueError(
                f"method={method!r} distils the forget documents toward the model from before fine-tuning: pass "
                "pre_finetuning_model= (a model, a local path or a Hub id; --pre-finetuning-model on the command line)."
            )
        if isinstance(pre, str):
            from .pretrained import load_causal_lm, resolve_model_path

            pre = load_causal_lm(resolve_model_path(pre), "pre_finetuning_model", dtype="auto")
        if is_peft_model(pre):
            raise ValueError("pre_finetuning_model must be a plain model, not a peft model (merge its adapter first).")
        ours, theirs = _vocab_rows(model), _vocab_rows(pre)
        if ours != theirs:
            raise ValueError(
                f"pre_finetuning_model has a vocabulary of {theirs} tokens and the model {ours}: it must be the model "
                "the model was fine-tuned from, with the same tokenizer."
            )
        pre.eval()
        pre.requires_grad_(False)
        return pre

    def _prepare_ref_model(self, ref_model):
        if self.is_deepspeed_enabled:
            from trl.models.utils import prepare_deepspeed

            return prepare_deepspeed(ref_model, self.accelerator)
        return self.accelerator.prepare_model(ref_model, evaluation_mode=True)

    def _get_train_sampler(self, train_dataset=None) -> ForgetRetainSampler | ChunkedForgetRetainSampler:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return self._make_sampler(dataset)

    def _make_sampler(self, dataset: ForgetRetainDataset) -> ForgetRetainSampler | ChunkedForgetRetainSampler:
        args = self.args
        num_retain = len(dataset.retain) if dataset.retain else 0
        seed = args.data_seed if args.data_seed is not None else args.seed
        if args.forget_chunk_size is not None:
            return ChunkedForgetRetainSampler(
                len(dataset.forget), num_retain, args.forget_chunk_size, args.retain_per_forget, args.epochs_per_chunk,
                seed=seed,
            )
        return ForgetRetainSampler(len(dataset.forget), num_retain, seed=seed, retain_per_forget=args.retain_per_forget)

    # ---- the chunked schedule ---------------------------------------------------------------------------------

    def _chunk_bounds(self) -> list[int] | None:
        """Steps at which the chunks start within one pass of the schedule (see `schedule.chunk_step_bounds`)."""
        if self.args.forget_chunk_size is None:
            return None
        rows_per_step = (
            self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        )
        return chunk_step_bounds(self._make_sampler(self.train_dataset).chunk_lengths(), rows_per_step)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """`Trainer.create_scheduler`; with `chunk_restart_optimizer`, the schedule restarts with each chunk."""
        if self.lr_scheduler is None and self.args.forget_chunk_size is not None and self.args.chunk_restart_optimizer:
            self.lr_scheduler = chunked_lr_scheduler(optimizer or self.optimizer, self.args, self.chunk_bounds)
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    def restart_chunk_if_due(self) -> bool:
        """At the first step of every chunk but the first, reset the optimizer's state (its schedule restarts by
        itself, `create_scheduler`). A function of the global step only, so a resumed run restarts where the
        uninterrupted one does."""
        if self.chunk_bounds is None or not self.args.chunk_restart_optimizer:
            return False
        step = self.state.global_step
        if step == 0 or chunk_of_step(step, self.chunk_bounds)[0] != step:
            return False
        reset_optimizer_state(unwrap_optimizer(self.optimizer))
        self.chunk_restarts += 1
        return True

    # ---- checkpoints ------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """`Trainer.train`; `resume_from_checkpoint=True` takes the newest *complete* checkpoint (`checkpoint.py`)."""
        resume_from_checkpoint = resolve_resume(self, resume_from_checkpoint)
        if self.calibration is not None:
            self.calibration.values = None  # measured at the start, unless the checkpoint holds them
            if resume_from_checkpoint:
                self.calibration.load_from_checkpoint(str(resume_from_checkpoint))
        return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)

    def _save_checkpoint(self, model, trial):
        # Written into a staging folder and renamed: a kill during a save never leaves a partial checkpoint-N.
        save_checkpoint_atomically(self, trial)

    # ---- the optimizer ----------------------------------------------------------------------------------------

    @staticmethod
    def get_optimizer_cls_and_kwargs(args, model=None):
        """The registered optimizer named by `args.unlearn_optim`, else `TrainingArguments.optim` as in `Trainer`.

        `Trainer.create_optimizer` calls this only when neither `optimizers=` nor `optimizer_cls_and_kwargs=` was
        given to the trainer, so those keep priority. `weight_decay` reaches the optimizer through the Trainer's
        parameter groups. For Sophia, `bs` defaults to an upper bound of the tokens per step; it is only the unit of
        the Hessian estimate, because `refresh_hessian` rescales each refresh by the tokens it used.
        """
        if getattr(args, "unlearn_optim", None) is None:
            return Trainer.get_optimizer_cls_and_kwargs(args, model)
        optimizer_cls = get_optimizer_cls(args.unlearn_optim)
        kwargs = {"lr": args.learning_rate}
        if args.uses_sophia:
            rows_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            rows_per_forget = 1 + (args.retain_per_forget if args.uses_retain else 0)
            kwargs.update(bs=rows_per_step * rows_per_forget * args.max_length, seed=args.seed)
        kwargs.update(args.unlearn_optim_kwargs)
        return optimizer_cls, kwargs

    # ---- work beyond the step's own forward and backward --------------------------------------------------------

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._step_begins:  # the first micro-batch of an optimisation step: its gradients are still zero
            self._step_begins = False
            self._calibration_due = self.needs.calibration_grad
            self.restart_chunk_if_due()
            self.run_extra_passes(inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    def run_extra_passes(self, inputs: dict[str, torch.Tensor]) -> None:
        """Everything a step needs beyond its own forward and backward, in one place, before them.

        Here: the calibration documents' NLL measured again (a no-grad forward over this step's batch of them, for
        `"anchored"`), then Sophia's Hessian refresh when it is due (one extra forward and backward on the step's first
        micro-batch).
        [`InfluenceUnlearningTrainer`] adds its influence step (once per run) before it. Each pass reads `p.grad` and
        leaves the gradients zero again, so the step's own backward accumulates exactly as without it.
        """
        if self.calibration is not None and self.needs.calibration_refresh and not self.needs.calibration_grad:
            # (with calibration_grad they are measured in the step's own pass)
            self.calibration.refresh(self._policy, self.processing_class.pad_token_id, self.state.global_step)
        optimizer = hessian_optimizer(self.optimizer)
        if optimizer is not None and optimizer.should_update_hessian(self.state.global_step):
            self.refresh_hessian(optimizer, inputs)

    def take_gradients(self, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
        """The gradients of `params` that extra backward passes accumulated in `p.grad`, summed over processes; the
        model's gradients are zero again afterwards.

        The extra passes run the unwrapped model, so DDP neither synchronises nor complains: the sum is taken here.
        """
        grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]
        self._policy.zero_grad(set_to_none=True)
        if self.accelerator.num_processes > 1:
            flat = self.accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="sum")
            grads = [part.view_as(g) for part, g in zip(flat.split([g.numel() for g in grads]), grads)]
        return grads

    def refresh_hessian(self, optimizer, inputs: dict[str, torch.Tensor]) -> None:
        """One Gauss-Newton-Bartlett refresh of Sophia's Hessian estimate on the rows of `inputs` (a micro-batch).

        The rows are the forget rows and, when the method trains on them, the retain rows: the curvature of the
        model's output distribution on exactly the inputs whose loss the step changes. The labels are sampled from
        the model itself, so no answer text enters the estimate. The loss is the mean over the sampled tokens of all
        processes (N), and the squared gradient is scaled by N / bs, so that Sophia's `rho * bs * h` is the paper's
        `rho * EMA(N * g_hat^2)` whatever `bs` was set to.
        """
        inputs = self._prepare_inputs(inputs)
        parts = [(inputs["forget_input_ids"], inputs["forget_attention_mask"], inputs["forget_labels"])]
        if self.needs.uses_retain and "retain_input_ids" in inputs:
            parts.append((inputs["retain_input_ids"], inputs["retain_attention_mask"], inputs["retain_labels"]))
        ids, mask, labels = concat_rows(parts, self.processing_class.pad_token_id)
        local = labels[:, 1:].ne(IGNORE_INDEX).sum()
        total = self.accelerator.reduce(local.clone(), reduction="sum") if self.accelerator.num_processes > 1 else local
        if total.item() == 0:
            return
        # Seeded by the step (and process), so a resumed run samples the same labels.
        seed = (self.args.seed * 1_000_003 + self.state.global_step) * 1_009 + self.accelerator.process_index
        generator = torch.Generator(ids.device).manual_seed(seed)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        policy = self._policy
        policy.train()
        with self.compute_loss_context_manager():
            logits = policy(input_ids=ids, attention_mask=mask, use_cache=False).logits
            loss = causal_lm_gnb_loss(logits, labels, mask, generator=generator) * (local / total)
        loss.backward()
        grads = iter(self.take_gradients(params))
        groups = optimizer.param_groups
        optimizer.update_hessian([next(grads) * math.sqrt(total.item() / g["bs"]) for g in groups for _ in g["params"]])
        self.hessian_refreshes += 1

    # ---- the reference ----------------------------------------------------------------------------------------

    @property
    def _policy(self):
        """The unwrapped model, on which `disable_adapter()` and adapter switching work."""
        return self.accelerator.unwrap_model(self.model_wrapped if hasattr(self, "model_wrapped") else self.model)

    @torch.no_grad()
    def reference_outputs(
        self,
        inputs: dict[str, torch.Tensor],
        forget_logp: bool = False,
        forget_logits: bool = False,
        retain_logp: bool = False,
        retain_hidden_layer: int | None = None,
    ) -> ReferenceOutputs:
        """One reference pass over the rows that need it (forget rows, retain rows or both, in one batch).

        Gives the forget rows' token log-probs `(batch, seq - 1)` and/or their logits at the answer positions
        `(N, vocab)`, the retain rows' log-softmax at their answer positions `(N, vocab)` (for the KL) and the retain
        rows' output hidden states of decoder layer `retain_hidden_layer` (for RMU). The output layer runs on the
        answer positions whose logits are read only (`Reference.answer_outputs`), which keeps the vocabulary-sized
        tensors of the pass to those tokens (and to none when only hidden states are read).
        """
        use_forget, use_retain = forget_logp or forget_logits, retain_logp or retain_hidden_layer is not None
        parts = [name for name, wanted in (("forget", use_forget), ("retain", use_retain)) if wanted]
        if not parts:
            return ReferenceOutputs()
        keys = ("input_ids", "attention_mask", "labels")
        batches = [tuple(inputs[f"{name}_{key}"] for key in keys) for name in parts]
        ids, mask, labels = concat_rows(batches, self.processing_class.pad_token_id) if len(batches) > 1 else batches[0]
        n_forget_rows = batches[0][0].shape[0] if use_forget else 0
        if use_retain and not retain_logp:  # the retain rows' logits are not read: no output layer on them
            labels = labels.clone()
            labels[n_forget_rows:] = IGNORE_INDEX
        index = answer_positions(labels)
        logits, hidden = self.reference.answer_outputs(self._policy, ids, mask, index, retain_hidden_layer)
        n_forget = int(index[0].lt(n_forget_rows).sum())  # rows come first in `index`
        out = ReferenceOutputs()
        if forget_logits:
            out.forget_logits = logits[:n_forget]
        if forget_logp:
            forget_labels = batches[0][2]
            forget_index = answer_positions(forget_labels)
            picked = answer_log_probs(logits[:n_forget], forget_labels[:, 1:][forget_index])
            out.forget_logp = scatter_answers(picked, forget_index, (forget_labels.shape[0], forget_labels.shape[1] - 1))
        if retain_logp:
            out.retain_logp = log_softmax_(logits[n_forget:])
        if retain_hidden_layer is not None:
            out.retain_hidden = hidden[n_forget_rows:, : batches[-1][0].shape[1]]
        return out

    @torch.no_grad()
    def reference_log_probs(
        self, inputs: dict[str, torch.Tensor], forget: bool, retain: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The forget rows' reference token log-probs `(batch, seq - 1)` and the retain rows' reference log-softmax at
        their answer positions `(N, vocab)`, or None each (`reference_outputs` with those two)."""
        out = self.reference_outputs(inputs, forget_logp=forget, retain_logp=retain)
        return out.forget_logp, out.retain_logp

    @torch.no_grad()
    def precompute_reference_log_probs(self) -> None:
        """Store the reference log-probs of every forget row in the dataset (one pass over the forget set), in the
        form the method asks for (`UnlearningMethod.precomputed_reference`: NPO at sequence level keeps one number).

        Every process computes all rows, in the same order, so the result is identical everywhere and ZeRO-3's
        collective parameter gathers stay in step.
        """
        dataset: ForgetRetainDataset = self.train_dataset
        if all("ref_logp" in row for row in dataset.forget):
            return
        collator = self.data_collator
        loader = DataLoader(
            list(range(len(dataset.forget))),
            batch_size=self.args.per_device_eval_batch_size,
            collate_fn=lambda idx: (idx, collator([dataset[i] for i in idx])),
        )
        for indices, batch in loader:
            batch = {k: v.to(self.args.device) for k, v in batch.items() if k.startswith("forget_")}
            token_logp = self.reference_outputs(batch, forget_logp=True).forget_logp
            token_mask = batch["forget_labels"][:, 1:].ne(IGNORE_INDEX).to(token_logp.dtype)
            for row, i in enumerate(indices):
                length = len(dataset.forget[i]["input_ids"]) - 1  # aligned with the shifted labels
                value = self.method.precomputed_reference(token_logp[row, :length], token_mask[row, :length])
                dataset.forget[i]["ref_logp"] = value

    # ---- normalisation over the accumulated batch ---------------------------------------------------------------

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Collect the micro-batches of one optimiser step and count their forget/retain answer tokens and rows,
        summed over processes, so every term is a mean over the whole step (`StepCounts`, given to `compute_loss` as
        `num_items_in_batch`)."""
        batch_samples = []
        for _ in range(num_batches):
            try:
                batch_samples.append(next(epoch_iterator))
            except StopIteration:
                break
        counts = self._count_items(batch_samples, device)
        self._metric_steps += 1
        self._step_begins = True
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        return batch_samples, StepCounts(counts)

    @staticmethod
    def _count_items(batches: list[dict], device) -> torch.Tensor:
        counts = torch.zeros(4, dtype=torch.float64)
        for batch in batches:
            counts[FORGET_TOKENS] += batch["forget_labels"][:, 1:].ne(IGNORE_INDEX).sum().item()
            counts[FORGET_ROWS] += batch["forget_labels"].shape[0]
            if "retain_labels" in batch:
                counts[RETAIN_TOKENS] += batch["retain_labels"][:, 1:].ne(IGNORE_INDEX).sum().item()
                counts[RETAIN_ROWS] += batch["retain_labels"].shape[0]
        return counts.to(device)

    # ---- the loss ----------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The method's loss on one micro-batch, normalised by the counts of the whole step (see module docstring).

        Called outside the training loop (no counts given), it is the mean over this batch alone.
        """
        needs = self.needs
        if isinstance(num_items_in_batch, StepCounts):
            counts, scale = num_items_in_batch.values, float(self.accelerator.num_processes)
        else:
            counts, scale = self._count_items([inputs], inputs["forget_input_ids"].device), 1.0
        counts = StepCounts(counts.clamp(min=1).to(torch.float32))

        forget_ids, forget_mask = inputs["forget_input_ids"], inputs["forget_attention_mask"]
        forget_labels = inputs["forget_labels"]
        use_retain = needs.uses_retain and "retain_input_ids" in inputs
        parts = [(forget_ids, forget_mask)]
        if use_retain:
            parts.append((inputs["retain_input_ids"], inputs["retain_attention_mask"]))
        pad_id = self.processing_class.pad_token_id
        calibration_step = None
        if self._calibration_due:  # the step's calibration documents join its first micro-batch's policy pass
            self._calibration_due = False
            calibration_step = self.calibration.indices(self.state.global_step)
            features = [self.calibration.features[i] for i in calibration_step]
            cal_ids, cal_mask, cal_labels = (t.to(forget_ids.device) for t in pad_features(features, pad_id))
            parts.append((cal_ids, cal_mask))
        ids, mask = concat_rows(parts, pad_id) if len(parts) > 1 else parts[0]

        # The reference pass first: its outputs are reduced to what the loss reads and the rest freed before the
        # policy's graph exists, so it adds almost nothing to the step's peak memory.
        precomputed = "forget_ref_logp" in inputs
        reference = self.reference_outputs(
            inputs,
            forget_logp=needs.forget_ref_log_probs and not precomputed,
            forget_logits=needs.forget_ref_logits,
            retain_logp=use_retain and needs.retain_kl,
            retain_hidden_layer=needs.hidden_layer if use_retain and needs.retain_hidden else None,
        )
        if needs.forget_ref_log_probs and precomputed:
            reference.forget_logp = inputs["forget_ref_logp"]
        if needs.forget_pre_logits:
            reference.forget_pre_logits = self.pre_reference.answer_logits(
                self.pre_finetuning_model, forget_ids, forget_mask, answer_positions(forget_labels)
            )

        # One forward of the policy over forget and retain rows together.
        hidden_layer = needs.hidden_layer
        extra = {"output_hidden_states": True} if hidden_layer is not None else {}
        outputs = model(input_ids=ids, attention_mask=mask, use_cache=False, **extra)
        logits = outputs.logits
        n_forget, forget_width = forget_ids.shape
        # One split of the (batch, seq, vocab) logits into the parts' rows: its backward writes one tensor of the
        # logits' size, where a slice per part would each allocate and add one (a quarter of a small model's step).
        pieces = iter(logits.split([part[0].shape[0] for part in parts]) if len(parts) > 1 else (logits,))
        forget_logits = _narrow(next(pieces), forget_width)
        forget_logp, forget_tok_mask = token_log_probs(forget_logits, forget_labels)
        ctx = StepContext(
            counts=counts,
            forget_labels=forget_labels,
            forget_logits=forget_logits,
            forget_logp=forget_logp,
            forget_mask=forget_tok_mask,
            forget_nll=nll_sum(forget_logp, forget_tok_mask) / counts.forget_tokens,
            reference=reference,
            num_processes=self.accelerator.num_processes,
        )
        retain_piece = next(pieces) if use_retain else None
        if calibration_step is not None:
            cal_piece = _narrow(next(pieces), cal_ids.shape[1])
            cal_logp, cal_tok_mask = token_log_probs(cal_piece, cal_labels)
            step_nll = mean_token_nll(cal_logp, cal_tok_mask)
            self.calibration.values[calibration_step] = step_nll.detach().float().cpu()
            # their latest Min-K%++ scores from the same pass, where the method reads the latest ones
            if self.calibration.min_k is not None and needs.calibration_refresh:
                with torch.no_grad():
                    score = floored_min_k_score(cal_piece.detach(), cal_labels, self.calibration.min_k,
                                                self.calibration.min_k_floor)
                self.calibration.values_min_k[calibration_step] = score.float().cpu()
            ctx.calibration_step_nll = step_nll
            ctx.calibration_step_start = self.calibration.start[calibration_step].to(step_nll.device, step_nll.dtype)
            if needs.calibration_kl:
                ctx.calibration_step_kl = self._calibration_kl(cal_piece, cal_ids, cal_mask, cal_labels)
        if self.calibration is not None:
            ctx.calibration_nll = self.calibration.values.to(forget_logits.device)
            ctx.calibration_start = self.calibration.start.to(forget_logits.device)
            if self.calibration.pre is not None:
                ctx.calibration_pre = self.calibration.pre.to(forget_logits.device)
            if self.calibration.start_min_k is not None:
                ctx.calibration_start_min_k = self.calibration.start_min_k.to(forget_logits.device)
            if self.calibration.pre_min_k is not None:
                ctx.calibration_pre_min_k = self.calibration.pre_min_k.to(forget_logits.device)
            if self.calibration.values_min_k is not None:
                ctx.calibration_min_k = self.calibration.values_min_k.to(forget_logits.device)
            ctx.calibration_group = self.calibration.groups
            ctx.forget_group = inputs.get("forget_group")
        if hidden_layer is not None:
            hidden = outputs.hidden_states[hidden_layer + 1]
            ctx.forget_hidden = hidden[:n_forget, :forget_width]
        if use_retain:
            retain_ids, retain_labels = inputs["retain_input_ids"], inputs["retain_labels"]
            ctx.retain_labels = retain_labels
            ctx.retain_logits = _narrow(retain_piece, retain_ids.shape[1])
            ctx.retain_mask = retain_labels[:, 1:].ne(IGNORE_INDEX).to(forget_tok_mask.dtype)
            if needs.retain_nll:
                retain_logp, retain_tok_mask = token_log_probs(ctx.retain_logits, retain_labels)
                ctx.retain_nll = nll_sum(retain_logp, retain_tok_mask) / counts.retain_tokens
            if needs.retain_kl:
                kl = answer_kl(ctx.retain_logits, reference.retain_logp, retain_labels)
                ctx.retain_kl = kl.sum() / counts.retain_tokens
            if needs.retain_hidden:
                ctx.retain_hidden = hidden[n_forget : n_forget + retain_ids.shape[0], : retain_ids.shape[1]]

        loss = self.method.loss(ctx)
        terms = {"forget_nll": ctx.forget_nll, **ctx.terms}
        terms.update({name: value for name in ("retain_nll", "retain_kl") if (value := getattr(ctx, name)) is not None})
        if not torch.isfinite(loss.detach()).all():
            self._raise_non_finite(terms)
        for name, value in terms.items():
            self.log_metric(name, value)
        # Data parallel averages gradients over processes; the terms above are this process's share of a global mean.
        loss = loss * scale
        return (loss, {"logits": logits, **terms}) if return_outputs else loss

    def _calibration_kl(self, logits, ids, mask, labels) -> torch.Tensor:
        """Each calibration document's mean token KL(pi_theta || pi_ref), `(n,)`: its reference log-softmax from a
        no-grad pass of the reference (the adapter disabled) over these documents alone."""
        ref_logits, _ = self.reference.answer_outputs(self._policy, ids, mask, answer_positions(labels))
        kl = answer_kl(logits, log_softmax_(ref_logits), labels)
        tok_mask = labels[:, 1:].ne(IGNORE_INDEX).to(kl.dtype)
        return (kl * tok_mask).sum(-1) / tok_mask.sum(-1).clamp(min=1)

    def _raise_non_finite(self, terms: dict[str, torch.Tensor]) -> None:
        """Stop before a non-finite loss reaches the weights; the checkpoints saved so far stay as they are."""
        import glob
        import os

        values = ", ".join(f"{name}={value.item():.4g}" for name, value in terms.items())
        checkpoints = sorted(
            glob.glob(os.path.join(self.args.output_dir, "checkpoint-*")), key=lambda p: int(p.rsplit("-", 1)[-1])
        )
        kept = f"the last good checkpoint is {checkpoints[-1]}" if checkpoints else "no checkpoint had been saved yet"
        raise FloatingPointError(
            f"Non-finite loss at step {self.state.global_step + 1} ({values}). Training stopped before this update; "
            f"{kept}. Lower learning_rate or max_grad_norm, or raise beta, and resume from the checkpoint."
        )

    # ---- logging -----------------------------------------------------------------------------------------------

    def log_metric(self, name: str, value: torch.Tensor) -> None:
        """Log `value` next to `loss` as `name`: for a subclass's own loss term, as the built-in terms are logged.

        Call it once per micro-batch from `compute_loss` with the micro-batch's share of the step's mean (as the
        built-in terms are: normalised by the whole accumulated batch's counts); the shares are summed over the
        micro-batches and processes of a step and averaged over the steps since the last log. Ignored outside
        training (evaluation calls `compute_loss` too).
        """
        if self.model.training:
            self._metric_sums[name] += value.detach()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean of each loss term since the last training log (`forget_nll`, `npo_loss`, ...)."""
        if "loss" in logs and self._metric_sums:  # a training log, which every process reaches
            names = sorted(self._metric_sums)
            values = torch.stack([self._metric_sums[n] for n in names])
            if self.accelerator.num_processes > 1:
                values = self.accelerator.reduce(values, reduction="sum")
            steps = max(self._metric_steps, 1)
            logs.update({name: value / steps for name, value in zip(names, values.tolist())})
            self._metric_sums.clear()
            self._metric_steps = 0
        super().log(logs, start_time)

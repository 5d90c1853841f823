"""Stop unlearning once the forget documents look unseen: a membership-inference stopping rule for any method.

Every `every_n_steps` optimisation steps the callback measures, without gradient, the mean token NLL of each forget
document and each *calibration* document (never seen, of the same kind), and the loss attack's AUC between them
(score = -NLL; 1.0: the forget documents are plainly more likely, 0.5: alike, 0.0: plainly less likely). Training
stops once the AUC is within `0.5 +- auc_band` (Jang et al. 2023 unlearn until memorisation reaches the unseen level),
or once the retain documents' mean NLL has risen by more than `max_retain_rise` nats per token over its value at
the start (an absolute rise: a memorised text starts near 0, where any relative bound is either too tight or too loose)
at `retain_patience` checks in a row (unlearning often lifts the retain NLL for a few steps before the retain terms
pull it back: SmolLM2 distilled toward its base, retain documents 0.35 -> 1.83 nats at step 10, back later).
At the end, the best state seen (the AUC closest to 0.5 among the checks whose retain NLL was acceptable; of equal
ones the latest, so an attack that never moved does not send the run back to its start) is put back: only the
trainable parameters are kept, so with LoRA a state is the adapter's weights.

The calibration documents steer the stop; a reported attack must use other unseen documents.
"""

from __future__ import annotations

import logging

import torch
from transformers import TrainerCallback

from .calibration import documents_nll
from .data.collator import tokenize_documents
from .metrics.mia.auc import membership_auc

logger = logging.getLogger(__name__)


class UnseenLevelStoppingCallback(TrainerCallback):
    """See the module docstring.

    Args:
        trainer: the `Trainer` it is added to (its model, tokenizer and `max_length` are used).
        forget_documents: the whole texts being unlearned.
        calibration_documents: texts the model never saw, of the same kind (at least 2).
        retain_documents: texts whose NLL must not rise too far (optional: without them only the AUC stops training).
        every_n_steps: optimisation steps between checks (a check is one no-grad pass over all the documents).
        auc_band: stop once `|AUC - 0.5| <= auc_band`; 0 never stops on the AUC (the best state is still restored).
        max_retain_rise: stop once the retain NLL exceeds its value at the start by more than this (nats per token).
        retain_patience: ... at this many checks in a row (1: at the first). A state over the bound is never kept.
        restore_best: put back the best state at the end of training.
    """

    def __init__(self, trainer, forget_documents, calibration_documents, retain_documents=None,
                 every_n_steps: int = 5, auc_band: float = 0.05, max_retain_rise: float = 0.5,
                 restore_best: bool = True, retain_patience: int = 1):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if not 0 <= auc_band < 0.5:
            raise ValueError(f"auc_band must be in [0, 0.5), got {auc_band}")
        if max_retain_rise <= 0:
            raise ValueError(f"max_retain_rise must be > 0, got {max_retain_rise}")
        if retain_patience < 1:
            raise ValueError(f"retain_patience must be >= 1, got {retain_patience}")
        tokenizer, length = trainer.processing_class, trainer.args.max_length
        self.trainer = trainer
        self.forget = tokenize_documents(forget_documents, tokenizer, "forget documents", length)
        self.calibration = tokenize_documents(calibration_documents, tokenizer, "calibration documents", length)
        if len(self.calibration) < 2:
            raise ValueError("the stopping rule needs at least 2 calibration documents")
        self.retain = tokenize_documents(retain_documents, tokenizer, "retain documents", length) \
            if retain_documents else None
        self.every_n_steps, self.auc_band = every_n_steps, auc_band
        self.max_retain_rise, self.restore_best = max_retain_rise, restore_best
        self.retain_patience, self._over = retain_patience, 0  # checks in a row over the retain bound
        self.history: list[dict[str, float]] = []
        self.best: dict[str, float] | None = None
        self.stopped: str | None = None  # why training stopped early, if it did
        self._best_state: dict[str, torch.Tensor] | None = None
        self._retain_start: float | None = None

    def _trainable(self) -> dict[str, torch.nn.Parameter]:
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        return {name: p for name, p in model.named_parameters() if p.requires_grad}

    def measure(self) -> dict[str, float]:
        """The check's numbers under the current model: the AUC, the mean NLLs and the retain NLL."""
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        pad = self.trainer.processing_class.pad_token_id
        forget = documents_nll(model, self.forget, pad)
        calibration = documents_nll(model, self.calibration, pad)
        out = {"unseen/auc": membership_auc(-forget.numpy(), -calibration.numpy()),
               "unseen/forget_nll": forget.mean().item(), "unseen/calibration_nll": calibration.mean().item()}
        if self.retain is not None:
            out["unseen/retain_nll"] = documents_nll(model, self.retain, pad).mean().item()
        return out

    def _check(self, state, control, final: bool = False) -> None:
        values = self.measure()
        values["step"] = state.global_step
        if self._retain_start is None:
            self._retain_start = values.get("unseen/retain_nll")
        retain_ok = self._retain_start is None or \
            values["unseen/retain_nll"] <= self._retain_start + self.max_retain_rise
        self.history.append(values)
        distance = abs(values["unseen/auc"] - 0.5)
        # A tie goes to the later state: where the attack has not moved (a method that forgets the text but not the
        # membership), restoring the start would undo the unlearning the run did.
        if retain_ok and (self.best is None or distance <= abs(self.best["unseen/auc"] - 0.5)):
            self.best = values
            self._best_state = {name: p.detach().clone() for name, p in self._trainable().items()}
        self.trainer.log({k: v for k, v in values.items() if k != "step"})
        if final or control.should_training_stop:
            return
        self._over = 0 if retain_ok else self._over + 1
        if self._over >= self.retain_patience:
            self.stopped = (f"retain NLL rose by more than {self.max_retain_rise:g} nats "
                            f"({self._retain_start:.3f} -> {values['unseen/retain_nll']:.3f})"
                            + (f" at {self._over} checks in a row" if self.retain_patience > 1 else ""))
        elif self.auc_band > 0 and distance <= self.auc_band:
            self.stopped = f"forget documents' AUC against the calibration documents {values['unseen/auc']:.3f}"
        if self.stopped:
            logger.info("Stopping at step %d: %s.", state.global_step, self.stopped)
            control.should_training_stop = True

    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer.is_deepspeed_enabled or self.trainer.is_fsdp_enabled:
            raise ValueError("UnseenLevelStoppingCallback keeps and restores the trainable parameters, which DeepSpeed "
                             "and FSDP shard: use DDP or a single process, or restore_best=False and no callback.")
        self._check(state, control)  # the starting point: the retain level, and the AUC before unlearning

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every_n_steps == 0:
            self._check(state, control)

    def on_train_end(self, args, state, control, **kwargs):
        if not self.history or self.history[-1]["step"] != state.global_step:
            self._check(state, control, final=True)
        if self.restore_best and self._best_state is not None and self.best["step"] != state.global_step:
            with torch.no_grad():
                for name, p in self._trainable().items():
                    p.copy_(self._best_state[name])
            logger.info("Restored the state of step %d (AUC %.3f against the calibration documents).",
                        self.best["step"], self.best["unseen/auc"])

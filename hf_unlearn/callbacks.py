"""LUME evaluation during training, as `TrainerCallback`s that log like the loss does.

Each callback holds the trainer, scores `trainer.model` every N epochs or steps (and once before the first step, for
the "before" point of the curves), and logs through `trainer.log(...)`, so the scores land in
`trainer.state.log_history` and in TensorBoard / W&B beside the loss. Scoring runs in evaluation mode without
gradients and restores training mode. In multi-process runs the rows are split across processes and the results
gathered, so every process logs the same numbers. Under ZeRO-3 (or FSDP) every process makes the same forward passes,
generation and MMLU included, as sharded parameters require (see `hf_unlearn.evaluation`). The trainer's printer shows
each scoring as a small table (`format_score_table`) instead of a one-line dict; the logged values are unchanged.

```python
trainer.add_callback(LumeEvaluationCallback(trainer, forget_rows=forget_val, retain_rows=retain_val,
                                            mia_members=members, mia_nonmembers=nonmembers, every=1))
```
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from .evaluation import evaluate_model
from .metrics.keys import SCORE_PREFIXES, flatten_scores, score_label  # noqa: F401  (score_label: public here)
from .metrics.keys import SINGLE_SCORES as _SINGLE_SCORES

logger = logging.getLogger(__name__)

# Labels and directions come from the one table of result keys (metrics/keys.py).
SINGLE_SCORES = {s.log_key: (s.label, s.better) for s in _SINGLE_SCORES}


def format_score_table(scores: Mapping[str, float], epoch: float | None = None, step: int | None = None) -> str:
    """The flattened scores of one evaluation (`flatten_scores`) as a small table: regurgitation and knowledge per
    split, overall and per task, then the single scores; what the trainer would print as a one-line dict."""
    head = "scores" + (f" at epoch {epoch:g}" if epoch is not None else "") + (f" (step {step})" if step is not None
                                                                              else "")
    tasks = sorted({k.split("/")[2] for k in scores if k.startswith(("lume/forget/", "lume/retain/"))
                    and k.count("/") == 3})
    width = max(24, len(head))  # the row labels' column, so that the numbers sit under their heading
    lines = [f"{head:<{width}} {'all':>6}" + "".join(f" {t:>6}" for t in tasks)]
    shown = set()
    for split in ("forget", "retain"):
        for name in ("regurgitation", "knowledge"):
            keys = [f"lume/{split}/{name}"] + [f"lume/{split}/{t}/{name}" for t in tasks]
            if not any(k in scores for k in keys):
                continue
            cells = "".join(f" {scores[k]:6.3f}" if k in scores else f" {'-':>6}" for k in keys)
            label = f"{split} {name}"
            lines.append(f"  {label:<{width - 2}}{cells}   {'lower' if split == 'forget' else 'higher'} is better")
            shown.update(keys)
    if len(lines) == 1:  # no LUME rows scored: no table header
        lines = [head]
    singles = {k: f"{SINGLE_SCORES[k][0]} {scores[k]:.3f}" for k in SINGLE_SCORES if k in scores}
    plain = [text for k, text in singles.items() if not k.endswith("auc")]
    aucs = [text.removeprefix("MIA ").replace(" AUC", "") for k, text in singles.items() if k.endswith("auc")]
    if plain:
        lines.append("  " + "   ".join(plain))
    if aucs:
        lines.append("  MIA attack AUCs (0.5 is best): " + ", ".join(aucs))
    rest = [f"{k} {v:.4g}" for k, v in scores.items() if k not in shown and k not in singles]
    if rest:
        lines.append("  " + ", ".join(rest))
    return "\n".join(lines)


def _split_scores(logs: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """(the score entries, the rest) of one log."""
    scores = {k: v for k, v in logs.items() if k.startswith(SCORE_PREFIXES) and isinstance(v, (int, float))}
    return scores, {k: v for k, v in logs.items() if k not in scores}


class _ScoreTableMixin:
    """Prints a log that holds scores as `format_score_table` instead of the trainer's one-line dict; the log itself
    (what reaches `log_history` and the report_to loggers) is not changed. Other logs print as before."""

    def _print(self, text: str) -> None:
        bar = getattr(self, "training_bar", None)
        (bar.write if bar is not None else print)(text)  # through the bar, so that it is not broken up

    def on_log(self, args, state, control, logs=None, **kwargs):
        scores, rest = _split_scores(logs or {})
        if not scores:
            return super().on_log(args, state, control, logs=logs, **kwargs)
        if state.is_world_process_zero:
            self._print(format_score_table(scores, rest.get("epoch"), state.global_step))
        if set(rest) - {"epoch", "step", "num_input_tokens_seen"}:
            return super().on_log(args, state, control, logs=rest, **kwargs)
        return None


class ScoreTableProgressCallback(_ScoreTableMixin, ProgressCallback):
    """transformers' `ProgressCallback`, printing scores as a table."""


class ScoreTablePrinterCallback(_ScoreTableMixin, PrinterCallback):
    """transformers' `PrinterCallback` (`disable_tqdm=True`), printing scores as a table."""


def use_score_table_printer(trainer) -> None:
    """Swap the trainer's log printer (`ProgressCallback`, or `PrinterCallback` with `disable_tqdm=True`) for one that
    prints scores as a table; a printer of the user's own (a subclass) is left alone."""
    tables = {ProgressCallback: ScoreTableProgressCallback, PrinterCallback: ScoreTablePrinterCallback}
    callbacks = trainer.callback_handler.callbacks
    for i, callback in enumerate(callbacks):
        if type(callback) in tables:
            swapped = tables[type(callback)].__new__(tables[type(callback)])
            swapped.__dict__.update(callback.__dict__)  # its settings (max_str_len) and its bar, if any
            callbacks[i] = swapped


def _rows(data) -> list[dict] | None:
    """A `datasets.Dataset` or list of dicts as a list of dicts (what the metrics read)."""
    if data is None:
        return None
    return [dict(row) for row in data]


def _documents(data) -> list[str] | None:
    if data is None:
        return None
    return [row["document"] if isinstance(row, Mapping) else row for row in data]


class LumeEvaluationCallback(TrainerCallback):
    """Scores the model with whatever LUME parts it is given and logs them.

    Args:
        trainer: the trainer whose model is scored and through which the scores are logged.
        forget_rows / retain_rows: LUME rows (`id`, `input`, `output`, `task`), e.g. the validation splits: gives
            `lume/task_score` and `lume/{split}/{task}/{regurgitation,knowledge}`.
        mia_members / mia_nonmembers: documents (strings or rows with a `document` field): gives `mia/auc`,
            `mia/score` and the extra attacks' AUCs.
        mmlu: keyword arguments of `hf_unlearn.metrics.evaluate_mmlu` (`data_dir`, `subjects`, `limit`,
            `num_fewshot`): gives `mmlu/acc`. With all three parts, `lume/final_score` too.
        every: score every `every` epochs (`unit="epoch"`) or optimisation steps (`unit="step"`).
        at_start: also score before the first step (logged at step 0).
        max_new_tokens / batch_size: generation settings (the task's script uses 256 new tokens).

    To log scores computed another way on the same schedule, subclass and override `score`.
    """

    def __init__(
        self,
        trainer,
        forget_rows=None,
        retain_rows=None,
        mia_members=None,
        mia_nonmembers=None,
        mmlu: Mapping[str, Any] | None = None,
        every: int = 1,
        unit: str = "epoch",
        at_start: bool = True,
        max_new_tokens: int = 256,
        batch_size: int = 16,
    ):
        if unit not in ("epoch", "step"):
            raise ValueError(f"unit must be 'epoch' or 'step', got {unit!r}.")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}.")
        if (forget_rows is None) != (retain_rows is None):
            raise ValueError("Give both forget_rows and retain_rows (the task score needs both), or neither.")
        if (mia_members is None) != (mia_nonmembers is None):
            raise ValueError("Give both mia_members and mia_nonmembers, or neither.")
        if forget_rows is None and mia_members is None and mmlu is None and type(self).score is \
                LumeEvaluationCallback.score:  # a subclass that scores in its own way needs none of them
            raise ValueError("Nothing to evaluate: give LUME rows, MIA documents or MMLU options.")
        self.trainer = trainer
        self.forget_rows, self.retain_rows = _rows(forget_rows), _rows(retain_rows)
        self.mia_members, self.mia_nonmembers = _documents(mia_members), _documents(mia_nonmembers)
        self.mmlu = dict(mmlu) if mmlu is not None else None
        self.every, self.unit, self.at_start = every, unit, at_start
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.last_results: dict[str, Any] | None = None
        self.last_duration = 0.0  # seconds of the last evaluation: what a time budget reserves for the final one
        self._last_scored_step = -1
        if trainer is not None:
            use_score_table_printer(trainer)  # 25 scores are unreadable as the trainer's one-line dict

    def score(self) -> dict[str, float]:
        """The scores to log now, as flat log keys: the hook a subclass overrides to score in its own way (its
        scores are then timed, logged and scheduled exactly like these)."""
        trainer = self.trainer
        results = evaluate_model(
            trainer.model,
            trainer.processing_class,
            forget_rows=self.forget_rows,
            retain_rows=self.retain_rows,
            mia_members=self.mia_members,
            mia_nonmembers=self.mia_nonmembers,
            mmlu=self.mmlu,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            accelerator=trainer.accelerator,
        )
        self.last_results = results
        return flatten_scores(results)

    def evaluate(self) -> dict[str, float]:
        """Score the trainer's model now (`score`) and log the scores; returns the logged values."""
        trainer = self.trainer
        started = time.monotonic()
        scores = dict(self.score())
        self.last_duration = time.monotonic() - started
        self._last_scored_step = trainer.state.global_step
        # Trainer's on_log clears `should_log`; logging from on_step_end must not swallow the step's loss log.
        should_log = trainer.control.should_log
        trainer.log(dict(scores))
        trainer.control.should_log = should_log
        return scores

    def on_train_begin(self, args, state, control, **kwargs):
        if self.at_start and state.global_step == 0:
            self.evaluate()

    def on_step_end(self, args, state, control, **kwargs):
        if self.unit == "step" and state.global_step % self.every == 0:
            self.evaluate()

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.unit == "epoch" and round(state.epoch or 0) % self.every == 0:
            self.evaluate()

    def on_train_end(self, args, state, control, **kwargs):
        # A run that stops between scheduled points (max_steps, a time budget) still gets its final scores.
        if self._last_scored_step != state.global_step:
            self.evaluate()


class TofuEvaluationCallback(LumeEvaluationCallback):
    """Logs TOFU's scores on the same schedule as `LumeEvaluationCallback` (`hf_unlearn.metrics.tofu.evaluate_tofu`):
    `tofu/forget/{probability,rouge,truth_ratio}`, the nine utility terms, `tofu/model_utility` and, given the retain
    model's truth ratios on the same forget questions, `tofu/forget_quality`.

    Args:
        trainer: the trainer whose model is scored.
        forget / retain / real_authors / world_facts: TOFU rows with their perturbed answers (the `*_perturbed.jsonl`
            files: `question`, `answer`, `perturbed_answer`, and `paraphrased_answer` where the split has it).
        retain_model_truth_ratios: the retain model's truth ratio of each forget question (its `evaluate_tofu`'s
            `tofu/forget/truth_ratios`), for forget quality.
        chat_template: ask the questions through the tokenizer's chat template (else TOFU's plain format).
        every / unit / at_start / max_new_tokens / batch_size: as `LumeEvaluationCallback`'s.
    """

    def __init__(self, trainer, forget, retain, real_authors, world_facts, retain_model_truth_ratios=None,
                 chat_template: bool = True, every: int = 1, unit: str = "epoch", at_start: bool = True,
                 max_new_tokens: int = 64, batch_size: int = 16):
        super().__init__(trainer, every=every, unit=unit, at_start=at_start, max_new_tokens=max_new_tokens,
                         batch_size=batch_size)
        self.splits = {name: _rows(rows) for name, rows in (("forget", forget), ("retain", retain),
                                                             ("real_authors", real_authors),
                                                             ("world_facts", world_facts))}
        self.retain_model_truth_ratios = retain_model_truth_ratios
        self.chat_template = chat_template

    def score(self) -> dict[str, float]:
        from .metrics.tofu import evaluate_tofu

        results = evaluate_tofu(self.trainer.model, self.trainer.processing_class, self.splits["forget"],
                                self.splits["retain"], self.splits["real_authors"], self.splits["world_facts"],
                                self.retain_model_truth_ratios, chat_template=self.chat_template,
                                max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)
        self.last_results = results
        return {k: v for k, v in results.items() if not isinstance(v, list)}  # the per-question ratios stay here


class TimeBudgetCallback(TrainerCallback):
    """Stops training gracefully so that the whole run, final save and final evaluation included, fits a budget.

    The clock starts at `on_train_begin`. After each step the callback stops training when the time used, plus a
    reserve of 1.5 x (the slowest step so far + the last duration of every `LumeEvaluationCallback`), would exceed
    the budget; the Trainer then saves a checkpoint and the LUME callbacks run their final evaluation. In
    multi-process runs the main process decides and every process follows, so none is left waiting.
    """

    def __init__(self, trainer, max_seconds: float):
        self.trainer = trainer
        self.max_seconds = max_seconds
        self.start: float | None = None
        self._last = None
        self._slowest_step = 0.0
        self.stopped_at_step: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = self._last = time.monotonic()

    def _evaluation_reserve(self) -> float:
        return sum(
            cb.last_duration for cb in self.trainer.callback_handler.callbacks if isinstance(cb, LumeEvaluationCallback)
        )

    def on_step_end(self, args, state, control, **kwargs):
        now = time.monotonic()
        self._slowest_step = max(self._slowest_step, now - self._last)
        self._last = now
        reserve = 1.5 * (self._slowest_step + self._evaluation_reserve())
        stop = now - self.start + reserve > self.max_seconds
        accelerator = self.trainer.accelerator
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            box = [stop]
            broadcast_object_list(box, from_process=0)
            stop = box[0]
        if stop and not control.should_training_stop:
            self.stopped_at_step = state.global_step
            logger.warning(
                "max_unlearning_time=%.0fs: stopping after step %d (%.0fs used, %.0fs reserved for saving and the "
                "final evaluation).",
                self.max_seconds,
                state.global_step,
                now - self.start,
                reserve,
            )
            control.should_training_stop = True
            control.should_save = args.save_strategy != "no"
        return control


def _mia_note(log_history: Sequence[Mapping[str, Any]]) -> str | None:
    """What a MIA score of 0 at every point means, from the loss AUCs logged beside it; else None."""
    scores = [entry["mia/score"] for entry in log_history if "mia/score" in entry]
    if not scores or any(abs(v) > 1e-9 for v in scores):
        return None
    aucs = [entry["mia/auc"] for entry in log_history if "mia/auc" in entry]
    span = "" if not aucs else f"{min(aucs):.2f}" + (f" to {max(aucs):.2f}" if max(aucs) > min(aucs) else "")
    if aucs and all(a < 0.5 for a in aucs):
        return ("MIA score 0 throughout: forget documents now have a higher loss than unseen ones,\n"
                f"which gives them away too (loss AUC {span}; 0.5 would be ideal)")
    return ("MIA score 0 throughout: the loss attack still tells forget documents from unseen ones"
            + (f"\n(loss AUC {span}; 0.5 would be ideal)" if aucs else ""))


def plot_history(
    log_history: Sequence[Mapping[str, Any]],
    path: str,
    keys: Sequence[str] | None = None,
    x: str = "epoch",
    title: str | None = None,
):
    """Plot logged scores across training from `trainer.state.log_history` and save a PNG; returns the figure.

    By default plots `lume/task_score`, `lume/forget/regurgitation`, `lume/retain/regurgitation`,
    `lume/forget/knowledge`, `lume/retain/knowledge`, `mia/score`, `mmlu/acc` and `lume/final_score`, whichever were
    logged. `x` is `"epoch"` or `"step"`. Each line is labelled in words (`score_label`), in one panel per direction
    ("lower is better": the forget set; "higher is better": the rest); a MIA score of 0 at every point gets a note
    that says what it means.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(keys) if keys is not None else [
        "lume/task_score",
        "lume/forget/regurgitation",
        "lume/retain/regurgitation",
        "lume/forget/knowledge",
        "lume/retain/knowledge",
        "mia/score",
        "mmlu/acc",
        "lume/final_score",
    ]
    panels: dict[str, list[tuple[str, list]]] = {}  # which way is better -> [(key, points)]
    for key in keys:
        points = [(entry.get(x, 0.0), entry[key]) for entry in log_history if key in entry]
        if points:
            panels.setdefault(score_label(key)[1] or "other scores", []).append((key, points))
    if not panels:
        raise ValueError(f"None of {keys} is in the log history: add a LumeEvaluationCallback to the trainer.")
    order = ["lower is better", "higher is better", "0.5 is best", "other scores"]
    names = sorted(panels, key=order.index)
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 5), squeeze=False)
    mia_note = _mia_note(log_history)
    for ax, name in zip(axes[0], names):
        for key, points in panels[name]:
            ax.plot(*zip(*points), marker="o", label=score_label(key)[0])
        if mia_note and any(key == "mia/score" for key, _ in panels[name]):
            ax.text(0.02, 0.06, mia_note, transform=ax.transAxes, fontsize=7, va="bottom",
                    bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
        ax.set_title({"lower is better": "forget set: lower is better",
                      "higher is better": "retain set and overall: higher is better"}.get(name, name), fontsize=10)
        ax.set_xlabel(x)
        ax.set_ylabel("score")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)  # below: lines stay visible
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig

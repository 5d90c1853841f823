"""Atomic checkpoints and a resume that only picks complete ones.

transformers writes `checkpoint-N` in place, `trainer_state.json` last, so a kill during a save leaves a partial folder
that `resume_from_checkpoint=True` then picks (and crashes on). Here every file of a checkpoint is written into a
staging folder `_tmp-checkpoint-N` beside it, synced, and renamed to `checkpoint-N` in one step: a `checkpoint-N`
folder is always complete. The staging name does not match the Trainer's `checkpoint-*` patterns (rotation, resume,
the Hub push's `ignore_patterns=["_*", ...]`), and a stale one left by a kill is removed when training starts.

`resume_from_checkpoint=True` takes the newest checkpoint that passes `checkpoint_problems` (folders written by plain
transformers or copied by hand may be partial) and logs each newer one it skipped and why.

Each checkpoint also holds `checksums.json`, the SHA-256 of every file in it, written last before the rename: a file
damaged afterwards (a truncated copy, flipped bytes on a bad disk) makes `checkpoint_problems` name it, so
`resume_from_checkpoint=True` falls back to the previous complete checkpoint and an explicit folder is refused.

Each checkpoint also holds `unlearning_fingerprint.json`: hashes of the tokenised forget and retain rows (never their
text) and the settings that define the loss and the sampling order. A resume with other data or settings would not
continue the same run, so it is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil

from transformers.trainer_callback import ExportableState

from .pretrained import file_sha256
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, SaveStrategy, rotate_checkpoints

logger = logging.getLogger(__name__)

STAGING_PREFIX = "_tmp-"
TRAINER_STATE = "trainer_state.json"
CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
FINGERPRINT = "unlearning_fingerprint.json"
CHECKSUMS = "checksums.json"
# What a resumed run must share with the checkpointed one to continue it exactly (max_steps etc. may change), beyond
# the method and its hyperparameters (`UnlearningConfig.method_hyperparameters`).
RUN_SETTINGS = ("loss_on_prompt", "max_length", "seed", "data_seed", "per_device_train_batch_size",
                "gradient_accumulation_steps", "retain_per_forget", "forget_chunk_size", "epochs_per_chunk",
                "chunk_restart_optimizer", "train_last_layers", "learning_rate")


def _rows_hash(rows) -> str | None:
    if rows is None:
        return None
    digest = hashlib.sha256()
    for row in rows:  # one digest of the whole set's token ids and loss masks, no per-row hash and no text
        digest.update(json.dumps([row["input_ids"], row["labels"]]).encode())
    return digest.hexdigest()


def run_fingerprint(trainer) -> dict:
    """Hashes of the tokenised forget and retain rows and the run's settings (see the module docstring)."""
    dataset = trainer.train_dataset
    fingerprint = {
        "forget": _rows_hash(dataset.forget),
        "retain": _rows_hash(dataset.retain),
        "settings": {**trainer.args.method_hyperparameters(),
                     **{name: getattr(trainer.args, name, None) for name in RUN_SETTINGS}},
    }
    calibration = getattr(trainer, "calibration", None)
    if calibration is not None:  # only where there is one, so older checkpoints keep their fingerprint
        fingerprint["calibration"] = _rows_hash(calibration.features)
    return fingerprint


def check_fingerprint(trainer, folder: str) -> None:
    """Refuse to resume from `folder` if its fingerprint differs from this run's (no file: an older checkpoint)."""
    path = os.path.join(folder, FINGERPRINT)
    if not os.path.isfile(path):
        return
    with open(path) as f:
        saved = json.load(f)
    current = json.loads(json.dumps(run_fingerprint(trainer)))  # the same JSON types as the saved one
    differences = [f"the {name} set" for name in ("forget", "retain") if saved.get(name) != current[name]]
    saved_settings = saved.get("settings", {})
    differences += [
        f"{name} ({saved_settings[name]!r} -> {value!r})"
        for name, value in current["settings"].items() if name in saved_settings and saved_settings[name] != value
    ]
    if differences:
        message = (f"Cannot resume from {folder}: this run differs from the checkpointed one in "
                   f"{', '.join(differences)}, so it would not continue the same run.")
        if getattr(trainer.args, "resume_inexact", False):
            logger.warning("%s Resuming anyway (resume_inexact=True).", message.replace("Cannot resume", "Resuming"))
            return
        raise ValueError(message + " Resume with the same data and settings, start a new output_dir, or pass "
                         "resume_inexact=True to resume anyway.")


def checkpoint_problems(folder: str, needs_optimizer: bool = True) -> list[str]:
    """What makes `folder` unusable for an exact resume (empty if nothing): a missing or unreadable trainer state, or,
    when `needs_optimizer`, a missing optimizer or scheduler state (without them a resume silently restarts Adam's
    moments and the schedule)."""
    problems = []
    try:
        with open(os.path.join(folder, TRAINER_STATE)) as f:
            json.load(f)
    except FileNotFoundError:
        problems.append(f"no {TRAINER_STATE}")
    except (OSError, ValueError) as error:
        problems.append(f"unreadable {TRAINER_STATE} ({type(error).__name__})")
    problems += damaged_files(folder)
    # DeepSpeed keeps its optimizer (and often its scheduler) state under global_step*/ instead.
    if needs_optimizer and not any(name.startswith("global_step") for name in _listdir(folder)):
        for name in ("optimizer.pt", "scheduler.pt"):
            if not os.path.isfile(os.path.join(folder, name)):
                problems.append(f"no {name}")
    return problems


def write_checksums(folder: str) -> None:
    """`checksums.json`: the SHA-256 of every file under `folder` (relative paths), written last."""
    sums = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            sums[os.path.relpath(path, folder)] = file_sha256(path)
    sums.pop(CHECKSUMS, None)
    with open(os.path.join(folder, CHECKSUMS), "w") as f:
        json.dump(sums, f, indent=1, sort_keys=True)


def damaged_files(folder: str) -> list[str]:
    """`"<file> damaged (checksum)"` or `"<file> missing"` for each file of `checksums.json` that no longer matches (none
    for a checkpoint written without it). A missing optimizer or scheduler state is `checkpoint_problems`' own case
    (`resume_inexact` may accept it)."""
    path = os.path.join(folder, CHECKSUMS)
    if not os.path.isfile(path):
        return []
    try:
        with open(path) as f:
            sums = json.load(f)
    except (OSError, ValueError):
        return [f"unreadable {CHECKSUMS}"]
    problems = []
    for name, expected in sorted(sums.items()):
        file = os.path.join(folder, name)
        if not os.path.isfile(file):
            if name not in ("optimizer.pt", "scheduler.pt"):
                problems.append(f"{name} missing")
        elif file_sha256(file) != expected:
            problems.append(f"{name} damaged (checksum)")
    return problems


def _listdir(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def last_complete_checkpoint(output_dir: str, needs_optimizer: bool = True) -> str | None:
    """The newest `checkpoint-N` in `output_dir` with no `checkpoint_problems`; each newer one skipped is logged."""
    steps = sorted(
        (int(m.group(1)), name) for name in _listdir(output_dir) if (m := CHECKPOINT_RE.match(name))
        and os.path.isdir(os.path.join(output_dir, name))
    )
    for _, name in reversed(steps):
        folder = os.path.join(output_dir, name)
        problems = checkpoint_problems(folder, needs_optimizer)
        if not problems:
            return folder
        logger.warning("Skipping the incomplete or damaged checkpoint %s (%s); trying the one before.", folder,
                       ", ".join(problems))
    return None


def remove_stale_staging(output_dir: str) -> None:
    """Delete the staging folders a killed save left behind (never a `checkpoint-N`)."""
    for name in _listdir(output_dir):
        if name.startswith(STAGING_PREFIX + PREFIX_CHECKPOINT_DIR):
            logger.warning("Removing %s, left by a save that did not finish.", os.path.join(output_dir, name))
            shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)


def _fsync_tree(folder: str) -> None:
    # Renaming makes the checkpoint atomic for a killed process; syncing first also makes it durable on power loss.
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(staging: str, final: str) -> None:
    """Make the complete folder `staging` appear as `final` in one rename, replacing an older `final` if any."""
    _fsync_tree(staging)
    parent = os.path.dirname(os.path.abspath(final))
    old = None
    if os.path.exists(final):  # re-saving a step (a resume from an earlier checkpoint): move the old one out first
        old = os.path.join(parent, STAGING_PREFIX + "old-" + os.path.basename(final))
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(staging, final)
    _fsync_dir(parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint_atomically(trainer, trial=None) -> str:
    """`Trainer._save_checkpoint` (transformers 5.x), step for step, with every file written into a staging folder that
    is renamed to `checkpoint-N` once all processes have written their part. Returns the checkpoint folder."""
    args, state = trainer.args, trainer.state
    name = f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
    if trainer.hp_search_backend is None and trial is None:
        trainer.store_flos()
    run_dir = trainer._get_output_dir(trial=trial)
    final = os.path.join(run_dir, name)
    staging = os.path.join(run_dir, STAGING_PREFIX + name)

    trainer.save_model(staging, _internal_call=True)
    if not args.save_only_model:
        trainer._save_optimizer_and_scheduler(staging)
        trainer._save_scaler(staging)
        trainer._save_rng_state(staging)

    if args.save_strategy in (SaveStrategy.STEPS, SaveStrategy.EPOCH, SaveStrategy.BEST) and state.best_global_step:
        best = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.best_global_step}")
        # The parent checks that the best folder exists; this one is not renamed yet, but will be.
        if state.best_global_step == state.global_step or os.path.exists(best):
            state.best_model_checkpoint = best

    if args.should_save:
        with open(os.path.join(staging, FINGERPRINT), "w") as f:
            json.dump(run_fingerprint(trainer), f, indent=2)
        for callback in trainer.callback_handler.callbacks + [trainer.control]:
            if isinstance(callback, ExportableState):
                callback_name = type(callback).__name__
                if isinstance(state.stateful_callbacks[callback_name], list):
                    state.stateful_callbacks[callback_name].append(callback.state())
                else:
                    state.stateful_callbacks[callback_name] = callback.state()
        state.save_to_json(os.path.join(staging, TRAINER_STATE))

    trainer.accelerator.wait_for_everyone()  # every process has written its files (rng_state_<rank>.pth, shards)
    if args.should_save:
        write_checksums(staging)
        publish(staging, final)
    trainer.accelerator.wait_for_everyone()  # nobody reads or pushes the checkpoint before it exists

    if args.push_to_hub:
        trainer._push_from_checkpoint(final)
    if args.should_save:
        rotate_checkpoints(
            output_dir=run_dir, save_total_limit=args.save_total_limit,
            best_model_checkpoint=state.best_model_checkpoint, use_mtime=True,
        )
    return final


def resolve_resume(trainer, resume_from_checkpoint):
    """What `Trainer.train` should resume from: `True` becomes the newest complete checkpoint; an explicit folder must
    be complete. Stale staging folders are removed first (main process), since no save is running yet."""
    args = trainer.args
    if args.should_save and os.path.isdir(args.output_dir):
        remove_stale_staging(args.output_dir)
    trainer.accelerator.wait_for_everyone()
    # DeepSpeed and FSDP save their optimizer in their own layout, which `checkpoint_problems` only partly knows.
    needs_optimizer = not args.save_only_model and not trainer.is_fsdp_enabled
    if resume_from_checkpoint is True:
        folder = last_complete_checkpoint(args.output_dir, needs_optimizer) if os.path.isdir(args.output_dir) else None
        if folder is None:
            raise ValueError(f"No complete checkpoint found in output directory ({args.output_dir}).")
        logger.info("Resuming from %s.", folder)
        check_fingerprint(trainer, folder)
        return folder
    if isinstance(resume_from_checkpoint, (str, os.PathLike)):
        problems = checkpoint_problems(str(resume_from_checkpoint), needs_optimizer)
        inexact = [p for p in problems if p in ("no optimizer.pt", "no scheduler.pt")]
        if inexact and len(inexact) == len(problems) and getattr(args, "resume_inexact", False):
            logger.warning("Resuming from %s without an exact state: %s (resume_inexact=True); the optimizer or the "
                           "learning-rate schedule restarts.", resume_from_checkpoint, ", ".join(inexact))
            problems = []
        if problems:
            raise ValueError(
                f"Cannot resume exactly from {resume_from_checkpoint}: {', '.join(problems)}. Pick a complete "
                "checkpoint, resume_from_checkpoint=True for the newest complete one, or resume_inexact=True to resume "
                "without an optimizer or scheduler state."
            )
        check_fingerprint(trainer, str(resume_from_checkpoint))
    return resume_from_checkpoint

"""`hf-unlearn unlearn`: the job of a deletion request, from a model and two files to a merged model and evidence.

    hf-unlearn unlearn --model smollm2 --forget forget.txt --retain retain.jsonl --holdout unseen.txt --output-dir OUT

1. **Data.** `--forget` and `--retain` are LUME-style rows (JSON lines with `input` and `output`) or plain documents (a
   `.txt` file, one document per paragraph, or JSON lines with a `text` field), which
   `hf_unlearn.data.documents.documents_to_rows` turns into sentence-completion rows. Every file is checked before the
   model loads; messages name the file, line and field, never the text.
2. **Training.** LoRA on the model, then `UnlearningTrainer` with the defaults below: NPO + retain NLL + retain KL with
   the settings that were the most selective on the real SmolLM2-135M-Instruct in
   `benchmarks/lume_methods_smollm2.py` (LoRA r 8 on all linear layers, lr 2e-3, beta 0.5, retain NLL 4, retain KL
   3, 5 epochs, batch 4 + 4). With unseen documents (`--holdout`, `--calibration`) the default method is `anchored`
   on whole documents: the forget documents pulled to the level of unseen ones, steered by the calibration half (a
   seeded split of `--holdout`, `hf_unlearn.data.holdout.split_holdout`, or `--calibration`), with the stopping rule
   (`UnseenLevelStoppingCallback`) on the same documents. With `--pre-finetuning-model` (the model this one was
   fine-tuned from) it is `pre_finetuning_distill`: the forget documents distilled toward that model. Any other
   `UnlearningConfig` field: `--trainer-arg NAME=VALUE`.
3. **Evidence.** The model before (the adapter disabled) and after (the adapter merged) is scored on the forget and
   retain rows, and on `--eval-forget` / `--eval-retain` rows it was not given; the membership-inference attacks
   (loss, zlib, Min-K%, Min-K%++, and the share of exposed documents) compare the forget documents with the
   evaluation documents, which steered nothing; the audit (`hf_unlearn.audit.audit_model`) quantizes, relearns and
   probes the unlearned model.
4. **Outputs** in `--output-dir`: `adapter/` (with `unlearning_record.json`), `merged/` (safetensors, tokenizer and a
   model card with the method, its settings, the scores and the audit's verdicts), `unlearn.json` (numbers and
   verdicts, stable keys), `report.md` (the report it prints) and `audit/`, written into a staging folder and moved in
   together at the end (`publish`): a failure leaves the earlier result whole, and one after training keeps the
   adapter in `adapter-unfinished/`. No file it writes holds forget-set text.

Memory: the audit holds the model with its adapter and a merged copy (and a third copy while relearning).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .threads import THREADS_HELP

FORMAT = "hf_unlearn.unlearn"
VERSION = 1
DEFAULT_PROBES = "int8,int4,relearn,prefix50,prefix25,paraphrase"
MARKER = "unlearn.json"  # an output folder holding it was made by this command and may be written again


@dataclass
class UnlearnArguments:
    """What `hf-unlearn unlearn` takes; each field is a `--kebab-case` option (see `--help`)."""

    model: str = field(metadata={"help": "Model to unlearn from: folder, Hub id, or smollm2 (offline)."})
    forget: str = field(metadata={"help": "What to forget: JSON lines with input/output (LUME rows), or documents "
                                          "(.txt, one per paragraph; or JSON lines with a 'text' field)."})
    retain: str = field(metadata={"help": "What to keep, in the same formats: text the model must still know, "
                                          "ideally like the forget set in kind (other people's records, other books)."})
    output_dir: str = field(metadata={"help": "Where adapter/, merged/, unlearn.json, report.md and audit/ go (a new "
                                              "or empty folder, or one this command made)."})
    method: str | None = field(default=None, metadata={
        "help": "Unlearning method (the registry's names: npo, gd, simnpo, anchored, ...). Default: "
                "pre_finetuning_distill with --pre-finetuning-model; else anchored (the forget documents pulled to the "
                "level of unseen ones) when there are calibration documents (--holdout or --calibration); else npo."})
    pre_finetuning_model: str | None = field(default=None, metadata={
        "help": "The model --model was fine-tuned from (folder or Hub id), if you have it: method "
                "pre_finetuning_distill distils the forget documents toward it, a model that never saw them. Same "
                "tokenizer."})
    influence: bool = field(default=False, metadata={
        "help": "LIBU: one influence step (the forget gradient over the retain set's diagonal Fisher) before training, "
                "then the method with the Sophia optimizer (InfluenceUnlearningTrainer); its fields (damping, "
                "influence_lr, hessian_interval, sophia_rho, unlearn_optim, ...) as --trainer-arg."})
    beta: float = field(default=0.5, metadata={"help": "NPO inverse temperature."})
    retain_nll_weight: float = field(default=4.0, metadata={"help": "Weight of the retain NLL term."})
    retain_kl_weight: float = field(default=3.0, metadata={"help": "Weight of the retain KL(model || reference) term."})
    learning_rate: float = field(default=2e-3, metadata={"help": "AdamW learning rate of the LoRA weights."})
    num_train_epochs: float = field(default=5.0, metadata={"help": "Passes over the forget rows."})
    batch_size: int = field(default=4, metadata={"help": "Forget rows (and as many retain rows) per step."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=8, metadata={"help": "LoRA alpha."})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "LoRA target modules (comma-separated "
                                                                            "names, or all-linear; method rmu uses "
                                                                            "its own)."})
    max_length: int = field(default=512, metadata={"help": "Tokens per row at most (longer rows keep their answer)."})
    seed: int = field(default=0, metadata={"help": "Seed of the LoRA initialisation, the row order and the audit."})
    trainer_arg: list[str] = field(default_factory=list, metadata={
        "action": "extend", "metavar": "NAME=VALUE",  # repeatable, or several after one flag
        "help": "Any other UnlearningConfig field (InfluenceUnlearningConfig's with --influence), as NAME=VALUE "
                "(repeatable), e.g. lr_scheduler_type=constant."})
    eval_forget: str | None = field(default=None, metadata={
        "help": "Forget rows or documents not trained on, scored before and after (e.g. other copies or phrasings of "
                "the data): does the forgetting reach them?"})
    eval_retain: str | None = field(default=None, metadata={
        "help": "Retain rows or documents not trained on, scored before and after: is the rest of the model kept?"})
    holdout: str | None = field(default=None, metadata={
        "help": "Documents the model never saw, like the forget ones in kind (.txt, or JSON lines with 'text' or "
                "'document'). Without --calibration they are split by a seeded rule into calibration documents, which "
                "steer training and stopping, and evaluation documents, the reported membership attack's nonmembers "
                "(at least 4 each); with --calibration all of them are the attack's. Without it no MIA is run. A "
                "'task' field on every line matches the documents to the forget documents of that task."})
    calibration: str | None = field(default=None, metadata={
        "help": "Documents the model never saw, like the forget ones in kind, that steer the anchored method and the "
                "stopping rule (never used by the reported attack; --holdout is then all evaluation documents). "
                "Where every JSON line names its 'task' (as LUME's rows do), each forget document is pulled to the "
                "level of its own task's documents."})
    unseen_band: float = field(default=0.05, metadata={
        "help": "With calibration documents: stop once the forget documents' loss AUC against them is within 0.5 +- "
                "this, and keep the best state seen (0: no stopping rule)."})
    stop_check_steps: int = field(default=5, metadata={"help": "Steps between the stopping rule's checks."})
    max_retain_rise: float = field(default=0.5, metadata={
        "help": "The stopping rule also stops once the retain documents' mean NLL has risen by more than this many "
                "nats per token, and keeps the best state before it."})
    retain_patience: int = field(default=1, metadata={
        "help": "The stopping rule stops on the retain rise only at this many checks in a row over --max-retain-rise "
                "(unlearning often lifts the retain NLL for a few steps before the retain terms pull it back)."})
    mia: str | None = field(default=None, metadata={
        "help": "Instead of --holdout: a folder with member.jsonl and nonmember.jsonl (field 'document')."})
    general_text: str | None = field(default=None, metadata={
        "help": "General documents the model should keep being good at, not trained on (.txt, or JSON lines with "
                "'text' or 'document'): their perplexity before and after (refused if it holds a forget document)."})
    general_questions: str | None = field(default=None, metadata={
        "help": "General questions the model should still answer, not trained on (JSON lines with 'question' and "
                "'answer', e.g. TOFU's world_facts.jsonl): the share of replies containing the answer, before and "
                "after (asked through the chat template where the tokenizer has one)."})
    mmlu: str | None = field(default=None, metadata={
        "help": "A local MMLU folder (test.jsonl and dev.jsonl, the cais/mmlu schema): 0-shot MMLU accuracy through "
                "lm-eval before and after."})
    mmlu_limit: int = field(default=5, metadata={
        "help": "With --mmlu: questions per subject (57 subjects; 0: all 14k, hours on a CPU)."})
    probes: str = field(default=DEFAULT_PROBES, metadata={
        "help": "Audit probes, comma-separated (none: no audit): int8, int4, relearn, prefix50, prefix25, paraphrase."})
    relearn_learning_rate: float = field(default=5e-5, metadata={
        "help": "The relearn probe's attacker: constant AdamW learning rate of its fine-tune on half the forget "
                "documents (every weight; higher: a stronger attacker)."})
    relearn_steps: int = field(default=20, metadata={"help": "The relearn probe's fine-tuning steps (4 rows each)."})
    max_words: int = field(default=100, metadata={"help": "Words per sentence-completion row made from a document."})
    prompt_fraction: float = field(default=0.5, metadata={"help": "Share of a row's words given as its prompt."})
    max_new_tokens: int = field(default=128, metadata={"help": "Greedy generation length when scoring."})
    generation_batch_size: int = field(default=16, metadata={"help": "Rows per generation batch when scoring."})
    dtype: str = field(default="float32", metadata={"help": "Load dtype (float32, bfloat16, float16 or auto)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow the model's own code to run."})
    threads: int | None = field(default=None, metadata={"help": THREADS_HELP})
    merge: bool = field(default=True, metadata={
        "help": "Write merged/, the model with the adapter merged in (--no-merge: the adapter only, as "
                "`hf-unlearn compare` runs each setting; merge later with hf-unlearn merge)."})


class UnlearnJobError(RuntimeError):
    """A job that cannot write its folder, or failed after training: the message says what is kept and what to do."""


LOCK = ".hf-unlearn.lock"  # held (flock) while a job writes the folder; released by the OS if the job dies
STAGING = ".staging-"  # + pid: where a job writes its outputs before `publish` moves them in
UNFINISHED = "adapter-unfinished"  # the adapter of a job that failed after training
OUTPUTS = ("adapter", "merged", "audit", "report.md")  # what `publish` replaces, then MARKER


def _ours(name: str) -> bool:
    """A name in an output folder that only this command writes (besides MARKER and OUTPUTS)."""
    return name in (LOCK, UNFINISHED) or name.startswith(STAGING)


def check_output_dir(path: Path) -> None:
    if path.exists() and (not path.is_dir() or (any(not _ours(p.name) for p in path.iterdir())
                                                 and not (path / MARKER).is_file())):
        raise FileExistsError(f"{path} exists and was not made by `hf-unlearn unlearn`: give a new or empty folder.")


def publish(out: Path, staging: Path) -> None:
    """Move a finished job's outputs from `staging` into `out`. Each replaces its earlier version by a rename (the
    same file system), an earlier output that this job did not make (an audit, when this one ran none) goes with the
    result it belonged to, and `unlearn.json` comes last, so that it only ever describes the files beside it. Until
    then the earlier complete result is untouched."""
    replaced = staging / ".replaced"
    replaced.mkdir()
    for name in OUTPUTS:
        if (out / name).exists() or (out / name).is_symlink():
            os.replace(out / name, replaced / name)
        if (staging / name).exists():
            os.replace(staging / name, out / name)
    os.replace(staging / MARKER, out / MARKER)
    shutil.rmtree(out / UNFINISHED, ignore_errors=True)  # superseded by the adapter just published


def keep_unfinished_adapter(out: Path, staging: Path) -> Path | None:
    """After a failure past training: the trained adapter moved to `out/adapter-unfinished` (the earlier results are
    left as they were), or None if it was not saved."""
    if not (staging / "adapter" / "adapter_config.json").is_file():
        return None
    shutil.rmtree(out / UNFINISHED, ignore_errors=True)
    os.replace(staging / "adapter", out / UNFINISHED)
    return out / UNFINISHED


def lock_output_dir(path: Path):
    """Hold an exclusive lock on the output folder for the job's lifetime (the open file is returned: keep it). A
    second job into the same folder is refused at once instead of mixing its files with the first one's."""
    import fcntl

    try:
        path.mkdir(parents=True, exist_ok=True)
        handle = open(path / LOCK, "w")
    except OSError as error:  # read-only, no permission, no space: say so before any model loads
        raise UnlearnJobError(f"cannot write to --output-dir {path}: {error.strerror or error}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FileExistsError(f"{path} is being written by another `hf-unlearn unlearn` job: wait for it to end, or "
                              "give another --output-dir.") from None
    for stale in path.glob(f"{STAGING}*"):  # left by a job that was killed (the lock says none is running)
        shutil.rmtree(stale, ignore_errors=True)
    return handle


def check_job_numbers(args: UnlearnArguments) -> None:
    """Refuse settings that make a run that does nothing, or nothing measurable, before anything loads."""
    positive = {"--num-train-epochs": args.num_train_epochs, "--learning-rate": args.learning_rate,
                "--lora-alpha": args.lora_alpha}
    at_least_one = {"--batch-size": args.batch_size, "--lora-r": args.lora_r, "--max-new-tokens": args.max_new_tokens,
                    "--generation-batch-size": args.generation_batch_size, "--max-words": args.max_words}
    for option, value in positive.items():
        if not value > 0:
            raise ValueError(f"{option} must be positive, got {value}: the run would change nothing")
    for option, value in at_least_one.items():
        if value < 1:
            raise ValueError(f"{option} must be at least 1, got {value}")
    if args.max_length < 2:
        raise ValueError(f"--max-length must be at least 2 tokens, got {args.max_length}")
    if not 0 <= args.unseen_band < 0.5:
        raise ValueError(f"--unseen-band must be in [0, 0.5), got {args.unseen_band}")
    if not args.max_retain_rise > 0:
        raise ValueError(f"--max-retain-rise must be positive, got {args.max_retain_rise}")
    if args.retain_patience < 1:
        raise ValueError(f"--retain-patience must be at least 1, got {args.retain_patience}")
    if args.stop_check_steps < 1:
        raise ValueError(f"--stop-check-steps must be at least 1, got {args.stop_check_steps}")
    if not args.relearn_learning_rate > 0:
        raise ValueError(f"--relearn-learning-rate must be positive, got {args.relearn_learning_rate}")
    if args.relearn_steps < 1:
        raise ValueError(f"--relearn-steps must be at least 1, got {args.relearn_steps}")


def config_class(args: UnlearnArguments):
    """The job's config class: `InfluenceUnlearningConfig` with `--influence` (LIBU), else `UnlearningConfig`."""
    from .config import InfluenceUnlearningConfig, UnlearningConfig

    return InfluenceUnlearningConfig if args.influence else UnlearningConfig


# What the job records of LIBU's settings (`--influence`), besides the method's own.
INFLUENCE_FIELDS = ("damping", "influence_lr", "fisher_num_batches", "unlearn_optim", "sophia_rho", "hessian_interval")


def influence_record(config, trainer) -> dict[str, Any]:
    """LIBU's settings and the norm of its influence step's update (as the trainer logged it)."""
    from .influence import INFLUENCE_RECORD

    norm = next((e[INFLUENCE_RECORD] for e in trainer.state.log_history if INFLUENCE_RECORD in e), None)
    return {**{name: getattr(config, name) for name in INFLUENCE_FIELDS}, "update_norm": norm}


def names_of_libu(config_cls) -> set[str]:
    """InfluenceUnlearningConfig's own fields where the job's config is the plain one (they need --influence)."""
    from .config import InfluenceUnlearningConfig, UnlearningConfig

    if config_cls is InfluenceUnlearningConfig:
        return set()
    return ({f.name for f in dataclasses.fields(InfluenceUnlearningConfig)}
            - {f.name for f in dataclasses.fields(UnlearningConfig)})


def _trainer_overrides(pairs: list[str], config_cls) -> dict[str, Any]:
    names = {f.name: f for f in dataclasses.fields(config_cls)}
    libu_only = names_of_libu(config_cls)
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip().replace("-", "_")
        if sep and name in libu_only:
            raise ValueError(f"--trainer-arg {name}: a setting of LIBU's influence step, which needs --influence")
        if not sep or name not in names:
            raise ValueError(f"--trainer-arg {pair!r}: expected NAME=VALUE with NAME an {config_cls.__name__} field")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value  # a plain string
    return out


def job_method(args: UnlearnArguments) -> str:
    """The method the job runs: `--method`, else pre_finetuning_distill where the model before fine-tuning is given,
    else anchored where there are calibration documents, else npo."""
    if args.method:
        return args.method
    if args.pre_finetuning_model:
        return "pre_finetuning_distill"
    return "anchored" if args.calibration or args.holdout else "npo"


def check_pre_finetuning_model(args: UnlearnArguments, config) -> None:
    """`--pre-finetuning-model` where the method reads it (and only there), a folder or Hub id of the same architecture
    as `--model` where both are here: refused before any model loads."""
    from .pretrained import OFFLINE_MODELS, check_same_architecture, local_architecture, require_path_or_hub_id

    needed = config.unlearning_method.needs().forget_pre_logits
    if needed and not args.pre_finetuning_model:
        raise ValueError(f"method {config.method} distils the forget documents toward the model from before "
                         "fine-tuning: give --pre-finetuning-model (the folder or Hub id --model was fine-tuned from)")
    if args.pre_finetuning_model and not needed:
        raise ValueError(f"--pre-finetuning-model is read by method pre_finetuning_distill only, not "
                         f"{config.method}: drop it, or give --method pre_finetuning_distill")
    if needed:
        if args.pre_finetuning_model not in OFFLINE_MODELS:  # `smollm2` resolves offline, as --model does
            require_path_or_hub_id(args.pre_finetuning_model, "--pre-finetuning-model")
        check_same_architecture(local_architecture(args.model), local_architecture(args.pre_finetuning_model),
                                f"--model {args.model} and --pre-finetuning-model {args.pre_finetuning_model}")


def build_config(args: UnlearnArguments, output_dir: Path):
    """The `UnlearningConfig` of the job (`InfluenceUnlearningConfig` with `--influence`), checked, with the method,
    before any model is loaded."""
    from .quiet import on_terminal

    method = job_method(args)
    settings = dict(output_dir=str(output_dir / "training"), method=method, beta=args.beta,
                    retain_nll_weight=args.retain_nll_weight, retain_kl_weight=args.retain_kl_weight,
                    learning_rate=args.learning_rate, num_train_epochs=args.num_train_epochs,
                    per_device_train_batch_size=args.batch_size, max_length=args.max_length, seed=args.seed,
                    report_to="none", save_strategy="no", logging_steps=10,
                    disable_tqdm=not on_terminal(),  # off a terminal: the logs as plain lines, not bar redraws
                    # the anchored method pulls whole documents to the unseen level, as the attack scores them
                    forget_unit="documents" if method in ("anchored", "pre_finetuning_distill") else "rows")
    config_cls = config_class(args)
    settings.update(_trainer_overrides(args.trainer_arg, config_cls))
    return config_cls(**settings)


def _documents(path: str) -> list[str]:
    from .data.documents import read_documents

    return read_documents(path)[0]


def unseen_documents(args: UnlearnArguments, forget_documents: list[str]):
    """(members, evaluation, calibration) documents: the forget documents and the unseen ones the attack reports on,
    and the unseen ones that steer training and stopping (None each where not given). Every check runs here, before
    the model loads: overlap with the forget documents or between the two sets, and too few documents."""
    from .data import read_mia_documents
    from .data.holdout import check_count, check_unseen, split_holdout

    calibration = _documents(args.calibration) if args.calibration else None
    if calibration is not None:
        check_count(calibration, "--calibration", "calibration")
        check_unseen(calibration, forget_documents, "--calibration")
    if args.mia:
        members, evaluation = read_mia_documents(args.mia)
        if calibration is not None:
            check_unseen(evaluation, calibration, "--mia nonmember.jsonl", "--calibration")
    elif args.holdout:
        if not forget_documents:
            raise ValueError("--holdout needs forget documents to compare with: the forget rows hold no "
                             "sentence-completion row")
        members, evaluation = forget_documents, _documents(args.holdout)
        check_unseen(evaluation, forget_documents, "--holdout")
        if calibration is None:
            calibration, evaluation = split_holdout(evaluation, args.seed)
        else:
            check_count(evaluation, "--holdout", "evaluation")
            check_unseen(evaluation, calibration, "--holdout", "--calibration")
    else:
        members = evaluation = None
    return members, evaluation, calibration


def with_kinds(calibration: list[str] | None, args: UnlearnArguments):
    """The calibration documents, each with its kind (`"<task>/document"`) where their file names every row's task
    (`document_kinds`), so that the forget documents of one LUME task are pulled to the unseen level of that task's
    documents: the tasks' levels differ by more than the gap the attack sees (a templated biography is far more
    predictable than a real document). As given otherwise."""
    from .data.documents import document_kinds

    kinds = document_kinds(args.calibration or args.holdout) if calibration is not None else None
    if not kinds:
        return calibration
    return [{"text": text, "group": kinds[text]} for text in calibration]


def general_sets(args: UnlearnArguments, forget_documents: list[str]):
    """(documents, questions, mmlu options) of the general-ability scores (None each where not given), checked before
    the model loads: files that exist and parse, no forget document among the general ones."""
    from .data.holdout import check_unseen
    from .data.lume import DataValidationError
    from .metrics.general import read_general_questions

    documents = questions = mmlu = None
    if args.general_text:
        if not Path(args.general_text).is_file():
            raise DataValidationError(f"--general-text: file not found: {args.general_text}.")
        documents = _documents(args.general_text)
        check_unseen(documents, forget_documents, "--general-text")
    if args.general_questions:
        questions = read_general_questions(args.general_questions)
    if args.mmlu:
        if not (Path(args.mmlu) / "test.jsonl").is_file():
            raise DataValidationError(f"--mmlu {args.mmlu}: expected a folder with test.jsonl and dev.jsonl (the "
                                      "cais/mmlu schema).")
        if args.mmlu_limit < 0:
            raise ValueError(f"--mmlu-limit must be >= 0, got {args.mmlu_limit}")
        mmlu = {"data_dir": args.mmlu, "limit": args.mmlu_limit or None}
    return documents, questions, mmlu


def _delta_line(label: str, before: float | None, after: float | None, better: str) -> str | None:
    if before is None or after is None:
        return None  # not measured (e.g. knowledge without question rows): said once in the caveats
    return f"  {label:<30} {before:6.3f} -> {after:6.3f}   ({better} is better)"


KNOWN = 0.5  # a regurgitation below this before unlearning: the model hardly reproduced the text at all
KEPT = 0.1  # retain scores may fall by at most this
BROKEN = 0.5  # retain scores that fall to under this share of their value: the model itself is broken
UNSEEN_AUC = 0.1  # the loss attack's AUC within 0.5 +- this: the forget documents look unseen
GENERAL_DROP = 0.05  # general knowledge and MMLU may fall by at most this
PPL_RISE = 0.2  # the general documents' perplexity may rise by at most this share


def general_losses(before: dict, after: dict) -> list[str]:
    """What the model lost of its general ability, in words (empty: kept, or not measured)."""
    from .metrics.general import general_shortfalls

    out = []
    for key in general_shortfalls(before, after, GENERAL_DROP, PPL_RISE):
        b, a = before[key], after[key]
        if key == "general/ppl":
            out.append(f"the general documents' perplexity rose by {a / b - 1:.0%} ({b:.1f} -> {a:.1f})")
        else:
            label = "general knowledge" if key == "general/knowledge" else "MMLU accuracy"
            out.append(f"{label} fell by {b - a:.2f} ({b:.2f} -> {a:.2f})")
    return out


def overall_verdict(result: dict) -> dict[str, str]:
    """The report's first line, from the numbers only: was the text `forgotten` ("yes", "partly", "no", or "nothing
    to forget" when the model did not reproduce it before), was the rest `kept` ("yes", "no", "broken": retain scores
    at under half their value, or "not measured"), and how strong is the `evidence` ("strong": a membership attack on
    unseen documents says the forget documents look unseen and the audit ran; "weak": one of those is missing or
    says otherwise, or there was nothing to forget; "missing": neither was run). `line` says it in words."""
    before, after = result["scores"]["before"], result["scores"]["after"]
    fb, fa = before.get("forget/regurgitation"), after.get("forget/regurgitation")
    if fb is None or fb < KNOWN:
        forgotten = "nothing to forget"
    elif fa <= 0.5 * fb:
        forgotten = "yes"
    elif fb - fa >= 0.05:
        forgotten = "partly"
    else:
        forgotten = "no"
    retain = [(before[k], after[k]) for k in ("retain/regurgitation", "retain/knowledge")
              if before.get(k) is not None and after.get(k) is not None]
    if not retain:
        kept = "not measured"
    elif any(b > 0 and a < BROKEN * b for b, a in retain):
        kept = "broken"
    else:
        kept = "yes" if all(b - a <= KEPT for b, a in retain) else "no"
    if kept == "yes" and general_losses(before, after):
        kept = "no"
    auc, audited = after.get("mia/auc"), bool(result.get("audit"))
    if auc is None and not audited:
        evidence = "missing"
    elif forgotten != "nothing to forget" and audited and auc is not None and abs(auc - 0.5) <= UNSEEN_AUC:
        evidence = "strong"
    else:
        evidence = "weak"
    words = {"yes": "forgotten", "partly": "partly forgotten", "no": "not forgotten",
             "nothing to forget": "nothing to forget (the model did not reproduce the forget text before)"}
    kept_words = {"yes": "the rest kept", "no": "the rest not fully kept", "broken": "the model broken",
                  "not measured": "the rest not measured"}
    line = f"Verdict: {words[forgotten]}; {kept_words[kept]}; evidence {evidence}"
    if auc is not None:
        line += (f" (the forget documents {'look unseen' if abs(auc - 0.5) <= UNSEEN_AUC else 'still stand out'} "
                 f"to a membership attack: AUC {auc:.2f})")
    return {"forgotten": forgotten, "kept": kept, "evidence": evidence, "line": line + "."}


GLOSSARY = [
    "regurgitation: how much of each forget (or retain) text the model writes back when given its beginning "
    "(ROUGE-L recall, 0 to 1); knowledge: the share of questions about it answered exactly.",
    "MIA AUC: how well a membership-inference attack tells the forget documents from documents the model never saw "
    "(0.5: it cannot; 1.0: the forget documents are plainly more likely; 0.0: plainly less likely, which shows too). "
    "loss, zlib, Min-K% and Min-K%++ are four such attacks; exposed: the share of forget documents scored more likely "
    "than 95% of the unseen ones (about 0.05 when they look unseen).",
    "int8 / int4: the unlearned model's weights rounded to 8 or 4 bits, as for a smaller download; relearn: a short "
    "fine-tune on some forget documents, scored on the others; prefix50 / prefix25: the prompts cut to a half or a "
    "quarter; paraphrase: the questions asked in other words.",
]


def caveats(result: dict) -> list[str]:
    """Plain-language warnings on how strong the evidence is (from the numbers only)."""
    out = []
    before, after = result["scores"]["before"], result["scores"]["after"]
    fr_b, fr_a = before.get("forget/regurgitation"), after.get("forget/regurgitation")
    if fr_b is not None and fr_b < KNOWN:
        out.append(f"Before unlearning the model reproduced little of the forget rows (regurgitation {fr_b:.2f}): "
                   "there was little to forget, and low scores after it are no evidence of forgetting.")
    rr_b = before.get("retain/regurgitation")
    if rr_b is not None and rr_b < KNOWN:
        out.append(f"Before unlearning the model reproduced little of the retain rows too (regurgitation {rr_b:.2f}): "
                   "keeping them is weak evidence that the rest of the model was kept.")
    if fr_b is not None and fr_b >= KNOWN and fr_a is not None and fr_a > 0.5 * fr_b:
        out.append(f"Forget regurgitation fell by less than half ({fr_b:.2f} -> {fr_a:.2f}): try more epochs or a "
                   "higher learning rate.")
    for key in ("retain/regurgitation", "retain/knowledge"):
        if before.get(key) is not None and after.get(key) is not None and before[key] - after[key] > 0.1:
            out.append(f"{key.replace('/', ' ')} fell by {before[key] - after[key]:.2f}: the model lost some of what it "
                       "should keep; raise retain_nll_weight / retain_kl_weight or lower the learning rate.")
    for loss in general_losses(before, after):
        out.append(f"{loss[0].upper()}{loss[1:]}: the model lost some of its general ability; lower the learning rate "
                   "or raise retain_kl_weight.")
    auc = after.get("mia/auc")
    if auc is None:
        out.append("No membership-inference attack was run: give --holdout documents the model never saw.")
    elif auc > 0.7:
        out.append(f"The loss attack still tells the forget documents from unseen ones (AUC {auc:.2f}; 0.5 means "
                   "they look unseen): a determined attacker could tell they were trained on.")
    for name, probe in (result.get("audit") or {}).get("probes", {}).items():
        if probe.get("recovered") is not None and probe["recovered"] >= 0.2:
            out.append(f"{name}: {probe['recovered']:.0%} of the forgetting comes back under this attack.")
    if not result.get("eval_rows"):
        out.append("Only the rows given were scored: copies of the data elsewhere (other phrasings, other documents) "
                   "are not measured; give them with --eval-forget.")
    if not any(k.endswith("knowledge") for k in before):
        out.append("No question rows: knowledge (exact-match answers) was not measured, only regurgitation.")
    return out


def format_report(result: dict) -> str:
    """The one-screen report `hf-unlearn unlearn` prints and writes to report.md."""
    before, after = result["scores"]["before"], result["scores"]["after"]
    rows = result["rows"]
    epochs = result['training']['num_train_epochs']
    lines = [overall_verdict(result)["line"], "",
             f"hf-unlearn unlearn: {result['model']} with {result['method']} "
             f"({', '.join(f'{k} {v}' for k, v in result['method_settings'].items() if k != 'method')})"
             + (", after LIBU's influence step" if result["training"].get("influence") else "") + ", "
             f"lr {result['training']['learning_rate']}, {epochs:g} epoch{'' if epochs == 1 else 's'}, "
             f"{result['train_seconds']:.0f} s of training",
             f"  {rows['forget']} forget rows ({rows['forget_documents']} documents), {rows['retain']} retain rows", "",
             f"  {'':<30} {'before':>6}    {'after':>6}",
             "Forgotten (the rows it was asked to forget)",
             _delta_line("forget regurgitation", before.get("forget/regurgitation"), after.get("forget/regurgitation"),
                         "lower"),
             _delta_line("forget knowledge", before.get("forget/knowledge"), after.get("forget/knowledge"), "lower"),
             "Kept (the rows it was asked to keep)",
             _delta_line("retain regurgitation", before.get("retain/regurgitation"), after.get("retain/regurgitation"),
                         "higher"),
             _delta_line("retain knowledge", before.get("retain/knowledge"), after.get("retain/knowledge"), "higher")]
    if result.get("eval_rows"):
        lines.append("Not given to the method (--eval-forget / --eval-retain)")
        for key, better in (("forget/regurgitation", "lower"), ("forget/knowledge", "lower"),
                            ("retain/regurgitation", "higher"), ("retain/knowledge", "higher")):
            b, a = before.get(f"eval/{key}"), after.get(f"eval/{key}")
            if b is not None:
                lines.append(_delta_line(f"{key.replace('/', ' ')}", b, a, better))
    general = [(key, label, better) for key, label, better in (
        ("general/ppl", "general text perplexity", "lower"), ("general/knowledge", "general knowledge", "higher"),
        ("general/mmlu", "MMLU accuracy (0-shot)", "higher")) if before.get(key) is not None]
    if general:
        lines.append("General ability (--general-text / --general-questions / --mmlu, not trained on)")
        lines += [_delta_line(label, before[key], after.get(key), better) for key, label, better in general]
    lines.append("Evidence")
    if after.get("mia/auc") is not None:
        mia = result.get("mia") or {}
        if mia:
            lines.append(f"  membership attacks: {mia['members']} forget documents against {mia['nonmembers']} unseen "
                         f"documents ({mia['nonmembers_from']}; never used in training or stopping)")
        lines.append(_delta_line("MIA loss AUC (0.5: unseen)", before.get("mia/auc"), after["mia/auc"], "closer to 0.5"))
        for key, label in (("mia/zlib_auc", "MIA zlib AUC"), ("mia/min_k_auc", "MIA Min-K% AUC"),
                           ("mia/min_k_plus_plus_auc", "MIA Min-K%++ AUC")):
            lines.append(_delta_line(label, before.get(key), after.get(key), "closer to 0.5"))
        lines.append(_delta_line("exposed forget documents", before.get("mia/exposed_share"),
                                 after.get("mia/exposed_share"), "about 0.05"))
    else:
        lines.append("  MIA: not run (no --holdout)")
    stopping = result.get("stopping")
    if stopping and stopping.get("best"):
        best, calibration = stopping["best"], result["calibration"]
        lines.append(f"  stopping rule: {stopping['stopped'] or 'did not stop early'}; kept step {best['step']} (loss AUC "
                     f"{best['unseen/auc']:.3f} against the {calibration['documents']} calibration documents of "
                     f"{calibration['from']}, which steered training)")
    for probe in (result.get("audit") or {}).get("probes", {}).values():
        lines.append(f"  {probe['verdict']}")
    notes = result.get("caveats") or []
    if notes:
        lines += ["", "Caveats"] + [f"- {c}" for c in notes]
    lines += ["", "What the words mean"] + [f"- {g}" for g in GLOSSARY]
    if result["paths"]:  # none in a record whose files were temporary
        lines += ["", "Files"] + [f"  {k}: {v}" for k, v in result["paths"].items()]
    return "\n".join(line for line in lines if line is not None)


def run_unlearn(args: UnlearnArguments, progress=print, before: dict[str, float] | None = None) -> dict[str, Any]:
    """Run the job (see the module docstring); returns what `unlearn.json` holds. `before`: the model's scores before
    unlearning on these files and settings, already known (`hf-unlearn compare` scores them once for all its runs
    of a seed); without audit probes they are not computed again."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer

    from .audit import PROBES, audit_model, write_audit
    from .audit.relearn import RelearnConfig
    from .audit.run import score_rows
    from .config import describe_lora_targets
    from .data.documents import document_of, load_rows, rows_to_documents
    from .stopping import UnseenLevelStoppingCallback
    from .metrics.general import general_scores
    from .hub import check_output_folder, merge_adapter, merge_and_save, save_training_record, training_record
    from .pretrained import load_causal_lm, resolve_model_path
    from .influence import InfluenceUnlearningTrainer
    from .trainer import UnlearningTrainer

    out = Path(args.output_dir)
    check_output_dir(out)
    check_output_folder(out / "merged")
    check_job_numbers(args)
    probes = [] if args.probes.strip().lower() in ("", "none") else [p.strip() for p in args.probes.split(",")
                                                                       if p.strip()]
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        raise ValueError(f"unknown probe(s) {', '.join(unknown)}; known: {', '.join(PROBES)} (or none)")
    if args.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ValueError(f"--dtype must be auto, float32, bfloat16 or float16, not {args.dtype!r}")

    # Everything a user gave is checked before the model loads.
    split = dict(max_words=args.max_words, prompt_fraction=args.prompt_fraction)
    forget, forget_documents = load_rows(args.forget, "forget", **split)
    retain, retain_documents = load_rows(args.retain, "retain", **split)
    eval_forget = load_rows(args.eval_forget, "eval-forget", **split)[0] if args.eval_forget else []
    eval_retain = load_rows(args.eval_retain, "eval-retain", **split)[0] if args.eval_retain else []
    members, nonmembers, calibration = unseen_documents(args, forget_documents)
    general_text, general_questions, mmlu = general_sets(args, forget_documents)
    config = build_config(args, out)
    if config.unlearning_method.needs().calibration_batch and calibration is None:
        raise ValueError(f"method {config.method} pulls the forget documents to the level of unseen ones: give "
                         "--holdout (split into calibration and evaluation documents) or --calibration")
    check_pre_finetuning_model(args, config)
    # Whole documents (plain ones as given; LUME rows grouped by document) for the attack and for training on them.
    plain = all(r.get("document") is not None for r in forget)
    whole = forget_documents if plain else rows_to_documents(forget, questions=False)
    documents = len({document_of(r, i) for i, r in enumerate(forget)})
    if "relearn" in probes and documents < 2:
        probes.remove("relearn")  # it holds out whole documents: one document leaves nothing to measure
        progress("[unlearn] the relearning probe needs at least 2 forget documents: skipped")

    lock = lock_output_dir(out)  # held until the job ends: a second job into this folder is refused
    try:
        started = time.time()
        path = resolve_model_path(args.model, log=progress)
        dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
        model = load_causal_lm(path, "--model", dtype=dtype, trust_remote_code=args.trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=args.trust_remote_code)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        modules = args.lora_target_modules
        if config.method == "rmu":  # RMU's own choice of weights: down_proj of its layer and the two before it
            from .methods.rmu import rmu_lora_config

            lora = rmu_lora_config(config.rmu_layer, r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0,
                                   task_type="CAUSAL_LM")
            modules = describe_lora_targets(lora)
        else:
            lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                              target_modules=modules if modules == "all-linear" else [m.strip() for m in modules.split(",")])
        columns = lambda rows: Dataset.from_list([{"input": r["input"], "output": r["output"]} for r in rows])  # noqa: E731
        if config.forget_unit == "documents":  # rows are grouped into documents (and question texts) by the trainer
            forget_data = Dataset.from_dict({"text": forget_documents}) if plain else Dataset.from_list(
                [{k: r[k] for k in ("id", "input", "output", "task") if k in r} for r in forget])
        else:
            forget_data = columns(forget)
        pre_model = None
        if config.unlearning_method.needs().forget_pre_logits:
            pre_path = resolve_model_path(args.pre_finetuning_model, log=progress)
            pre_model = load_causal_lm(pre_path, "--pre-finetuning-model", dtype=dtype,
                                       trust_remote_code=args.trust_remote_code)
        trainer_cls = InfluenceUnlearningTrainer if args.influence else UnlearningTrainer
        trainer = trainer_cls(model=model, args=config, forget_dataset=forget_data,
                              retain_dataset=columns(retain), processing_class=tokenizer, peft_config=lora,
                              calibration_dataset=with_kinds(calibration, args), pre_finetuning_model=pre_model)
        stopping = None
        if calibration is not None and args.unseen_band > 0:
            stopping = UnseenLevelStoppingCallback(trainer, whole, calibration, retain_documents or None,
                                                   every_n_steps=args.stop_check_steps, auc_band=args.unseen_band,
                                                   max_retain_rise=args.max_retain_rise,
                                                   retain_patience=args.retain_patience)
            trainer.add_callback(stopping)
        progress(f"[unlearn] training {config.method} on {len(forget_data)} forget "
                 f"{'documents' if config.forget_unit == 'documents' else 'rows'} and {len(retain)} retain rows"
                 + (f", {len(calibration)} calibration documents" if calibration is not None else ""))
        train_started = time.time()
        trainer.train()
        train_seconds = time.time() - train_started
        # Every output is written into a staging folder in `out` (the same file system: renames are atomic) and
        # moved in at the end, so a failure at any stage leaves the earlier complete result, never a half one.
        staging = out / f"{STAGING}{os.getpid()}"
        staging.mkdir()
        try:  # the adapter, scoring, audit, merged model and report, all written into `staging`, then moved in
            adapter_dir = staging / "adapter"
            trainer.save_model(adapter_dir)
            # The adapter names the model as the user did (a Hub id, "smollm2", or the folder's absolute path), so
            # that `hf-unlearn merge` and `evaluate` find it from anywhere (set after saving: peft would look it up).
            local = Path(args.model).expanduser()
            base_name = str(local.resolve()) if local.exists() else args.model
            adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
            adapter_config["base_model_name_or_path"] = base_name
            (adapter_dir / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
            save_training_record(trainer, adapter_dir)
            record_path = adapter_dir / "unlearning_record.json"
            record = {**json.loads(record_path.read_text()), "base_model": base_name}
            record_path.write_text(json.dumps(record, indent=2))
            peft_model = trainer.accelerator.unwrap_model(trainer.model)
            peft_model.eval()
            unlearned = merge_adapter(copy.deepcopy(peft_model))  # what a user ships: the merged weights
            unlearned.eval()
            # the scores before unlearning, where given, stand for the original model's (not with probes: those need
            # its outputs row by row)
            reuse = before is not None and not probes
            with peft_model.disable_adapter():  # the model before unlearning, without a second copy
                audit = audit_model(unlearned, peft_model, tokenizer, forget, retain, members, nonmembers,
                                    probes=probes,
                                    max_new_tokens=args.max_new_tokens, batch_size=args.generation_batch_size,
                                    progress=progress, max_length=args.max_length,
                                    relearn_config=RelearnConfig(max_length=args.max_length,
                                                                 learning_rate=args.relearn_learning_rate,
                                                                 steps=args.relearn_steps),
                                    original_scores=before if reuse else None)
                scores = {"before": dict(audit["models"]["original"]), "after": dict(audit["models"]["unlearned"])}
                # the models to score on the rows below: only the unlearned one where the scores before are given
                models = [("after", unlearned)] if reuse else [("before", peft_model), ("after", unlearned)]
                if eval_forget or eval_retain:
                    progress("[unlearn] scoring the rows not given to the method")
                    for name, m in models:
                        extra = score_rows(m, tokenizer, eval_forget, eval_retain, args.max_new_tokens,
                                           args.generation_batch_size, max_length=args.max_length)
                        scores[name].update({f"eval/{k}": v for k, v in extra.items()})
                if general_text or general_questions or mmlu:
                    progress("[unlearn] scoring general ability")
                    for name, m in models:
                        scores[name].update(general_scores(m, tokenizer, general_text, general_questions, mmlu,
                                                           batch_size=args.generation_batch_size))
            del unlearned

            method = config.unlearning_method
            result: dict[str, Any] = {
                "format": FORMAT, "version": VERSION, "model": args.model, "method": config.method,
                **({"pre_finetuning_model": args.pre_finetuning_model} if args.pre_finetuning_model else {}),
                "method_settings": config.method_hyperparameters(),
                "training": {"learning_rate": config.learning_rate, "num_train_epochs": config.num_train_epochs,
                             "batch_size": args.batch_size, "lora_r": args.lora_r, "lora_alpha": args.lora_alpha,
                             "lora_target_modules": modules, "seed": args.seed, "steps": trainer.state.global_step,
                             **({"influence": influence_record(config, trainer)} if args.influence else {})},
                "paper": method.paper,
                "rows": {"forget": len(forget), "retain": len(retain),
                         "forget_documents": documents},
                "eval_rows": ({"forget": len(eval_forget), "retain": len(eval_retain)}
                              if (eval_forget or eval_retain) else None),
                "mia": {"members": len(members), "nonmembers": len(nonmembers),
                        "nonmembers_from": ("--mia" if args.mia else "--holdout" if args.calibration
                                            else "--holdout, evaluation half (seeded split)")} if members else None,
                "general": {"documents": len(general_text or []), "questions": len(general_questions or []),
                            "mmlu_limit": mmlu and args.mmlu_limit} if (general_text or general_questions or mmlu)
                else None,
                "calibration": {"documents": len(calibration), "from": "--calibration" if args.calibration
                                else "--holdout, calibration half (seeded split)"} if calibration is not None else None,
                "stopping": {"band": args.unseen_band, "every_n_steps": args.stop_check_steps,
                             "max_retain_rise": args.max_retain_rise, "retain_patience": args.retain_patience,
                             "stopped": stopping.stopped,
                             "checks": [{k: round(v, 4) for k, v in h.items()} for h in stopping.history],
                             "best": stopping.best} if stopping is not None else None,
                "scores": scores, "train_seconds": train_seconds,
                "audit": {"probes": {k: {x: v[x] for x in ("verdict", "recovered", "forgotten_share") if x in v}
                                     for k, v in audit["probes"].items()},
                          "settings": audit["settings"], "seconds": audit["seconds"]} if probes else None,
            }
            result["caveats"] = caveats(result)
            result["verdict"] = overall_verdict(result)

            record = training_record(trainer)
            record["base_model"] = base_name
            record["scores"] = {k: {"first": scores["before"][k], "final": v, "step": trainer.state.global_step}
                                for k, v in scores["after"].items() if k in scores["before"]}
            paths = {"adapter": str(out / "adapter")}
            if args.merge:
                merge_and_save(trainer, staging / "merged", tokenizer=tokenizer, record=record,
                               audit=audit if probes else None)
                paths["merged model"] = str(out / "merged")
            if probes:
                audit_paths = write_audit(audit, staging / "audit")
                paths["audit"] = str(out / "audit" / audit_paths["markdown"].name)
            paths.update({"report": str(out / "report.md"), "numbers": str(out / MARKER)})
            result["paths"] = paths
            result["seconds"] = time.time() - started
            (staging / MARKER).write_text(json.dumps(result, indent=1) + "\n")
            (staging / "report.md").write_text(format_report(result) + "\n")
            publish(out, staging)
            return result
        except Exception as error:
            kept = keep_unfinished_adapter(out, staging)
            finish = (f"the trained adapter is kept in {kept}: finish without training again with hf-unlearn merge "
                      f"--adapter {kept} --output MERGED, then hf-unlearn audit --model MERGED --original {args.model}"
                      if kept is not None else "the trained adapter could not be saved")
            raise UnlearnJobError(f"training finished, but the job failed after it ({type(error).__name__}: {error}). "
                               f"The earlier results in {out} are as they were; {finish}") from error
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        lock.close()

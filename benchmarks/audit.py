"""Does our LoRA unlearning survive int8 and int4 quantization, relearning, shorter prompts and paraphrases?

    python benchmarks/audit.py --model tiny                       # the tiny comparison target (lume_methods.py)
    python benchmarks/audit.py --model smollm2 -- --anchor_weight 1 --learning_rate 2e-3 --beta 1 \\
        --retain_nll_weight 4 --retain_kl_weight 3              # the SmolLM2 target (lume_methods_smollm2.py)
    python benchmarks/audit.py --model tofu                       # a tiny target that memorised TOFU (paraphrases)

For each method (`--methods`, default NPO+NLL+KL and GD) and seed it unlearns the forget_train subset from the
benchmark's cached target with that benchmark's settings (everything after `--` goes to its Settings), merges the
adapter, and runs `hf_unlearn.audit.audit_model` on the given subsets (forget_train and retain_train rows, the MIA
members against the nonmembers): int8 and int4 round-to-nearest quantization, a relearning fine-tune on half the
forget documents measured on the other half, prompts cut to 50% and 25%, questions asked through their paraphrase.
LUME rows carry no paraphrases, so that probe is reported as not run for tiny and smollm2; `--model tofu` is for it:
the tiny comparison's architecture and settings, with a tokenizer trained on TOFU's text, memorising TOFU's forget01
(2 fictitious authors, 40 questions, each with TOFU's paraphrased question) and the first 2 authors as retain rows
(`tofu_rows`); MIA members are the forget rows' texts, nonmembers holdout01's.

It writes `benchmarks/results/audit.{md,json}` (one section per model and method, kept from earlier invocations for
the other model) and `audit_<model>_<method>.png`. Numbers, verdicts and settings only: no row text.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


lume_methods = _load("lume_methods")

from hf_unlearn.audit import PROBES, RelearnConfig, audit_model, judge, verdicts  # noqa: E402
from hf_unlearn.audit.run import audit_markdown, audit_plot  # noqa: E402

DEFAULT_METHODS = ("npo_nll_kl", "gd")


TOFU = lume_methods.REPO_ROOT.parent / "shared" / "data" / "tofu"
TOFU_ROWS_PER_AUTHOR = 20  # full.jsonl holds 200 fictitious authors x 20 questions, in author order


def tofu_rows(tofu_dir: Path = TOFU, retain_authors: int = 2) -> tuple[list[dict], list[dict], list[str], list[str]]:
    """TOFU's forget01 (the last 2 authors' 40 questions, with their `paraphrased_question`) and the first
    `retain_authors` authors' questions as rows (`id`, `input` = question, `output` = answer, `task`, `document` = the
    author); the forget rows' and holdout01's question + answer texts as MIA members and nonmembers.

    The ids end in `sc1`, so an answer is scored by ROUGE-L recall (TOFU's own metric) as regurgitation; exact match of
    a whole-sentence answer would say little. The relearning attack holds out whole authors."""
    full = lume_methods.read_jsonl(tofu_dir / "full.jsonl")
    index = {row["question"]: i for i, row in enumerate(full)}

    def row(source: dict, i: int) -> dict:
        author = i // TOFU_ROWS_PER_AUTHOR
        return {"id": f"tofu{author:03d}q{i % TOFU_ROWS_PER_AUTHOR:02d}sc1", "input": source["question"],
                "output": source["answer"], "task": "tofu", "document": f"author{author:03d}",
                **({"paraphrased_question": source["paraphrased_question"]} if "paraphrased_question" in source else {})}

    forget = [row(r, index[r["question"]]) for r in lume_methods.read_jsonl(tofu_dir / "forget01_perturbed.jsonl")]
    retain = [row(r, i) for i, r in enumerate(full[: retain_authors * TOFU_ROWS_PER_AUTHOR])]
    holdout = lume_methods.read_jsonl(tofu_dir / "holdout01.jsonl")
    return (forget, retain, [f"{r['input']} {r['output']}" for r in forget],
            [f"{r['question']} {r['answer']}" for r in holdout])


def prepare(model: str, rest: list[str]):
    """(benchmark module, its settings, target folder, a function (key, seed, work_dir) -> trainer, (forget, retain)
    rows, (MIA members, nonmembers), generation cap)."""
    if model == "smollm2":
        bench = _load("lume_methods_smollm2")
        parser = argparse.ArgumentParser()
        bench.lume_methods.add_dataclass_arguments(parser, bench.Settings)
        settings = bench.Settings(**bench.lume_methods.dataclass_overrides(parser.parse_args(rest), bench.Settings))
        data = bench.load_data(settings)
        _, tokenizer, info = bench.load_or_build_target(settings, data)
        subset, target_dir = data.subset, info["cache_dir"]

        def trainer(key, seed, work):
            return bench.build_trainer(key, seed, settings, data, target_dir, work)
    else:
        bench = lume_methods
        parser = argparse.ArgumentParser()
        bench.add_dataclass_arguments(parser, bench.Settings)
        settings = bench.Settings(**bench.dataclass_overrides(parser.parse_args(rest), bench.Settings))
        if model == "tofu":
            forget, retain, members, nonmembers = tofu_rows()
            plain = [{k: r[k] for k in ("id", "input", "output", "task")} for r in forget + retain]  # what trains
            subset = bench.Subset({"forget_train": plain[: len(forget)], "retain_train": plain[len(forget):],
                                   "forget_validation": [], "retain_validation": []}, members, nonmembers, [])
            texts = [f"{r['question']} {r['answer']}" for r in bench.read_jsonl(TOFU / "full.jsonl")]
            _, tokenizer, info = bench.load_or_build_target(settings, subset, TOFU, corpus="tofu",
                                                            tokenizer_texts=texts)
        else:
            subset = bench.select_subset(bench.DEFAULT_DATA, settings.docs_per_task, settings.num_members,
                                         settings.num_utility_documents)
            _, tokenizer, info = bench.load_or_build_target(settings, subset, bench.DEFAULT_DATA)
        target_dir = info["cache_dir"]

        def trainer(key, seed, work):
            return bench.build_trainer(key, seed, settings, subset, target_dir, work)
    if model != "tofu":
        forget, retain = subset.rows["forget_train"], subset.rows["retain_train"]
        members, nonmembers = subset.members, subset.nonmembers
    caps = lume_methods.generation_caps(tokenizer, subset)
    return bench, settings, target_dir, trainer, (forget, retain), (members, nonmembers), max(caps.values())


def main(argv=None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    mine = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "smollm2", "tofu"), default="tiny",
                        help="tiny and smollm2: the LUME comparisons' targets; tofu: a tiny target that memorised "
                        "TOFU's forget01 and two retain authors (its questions carry paraphrases).")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), help="Method keys of the benchmark.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probes", default=",".join(PROBES))
    for f in dataclasses.fields(RelearnConfig):
        parser.add_argument(f"--relearn_{f.name}", type=type(f.default), default=f.default, help=f.metadata["help"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="", help="Appended to the section names (e.g. for other relearn settings).")
    parser.add_argument("--output-dir", default=str(HERE / "results"))
    parser.add_argument("--report", action="store_true",
                        help="Only judge audit.json's runs again (current verdicts) and rewrite audit.md.")
    args = parser.parse_args(mine)
    if args.report:  # the verdicts judged again from the stored scores (they may come from an earlier version)
        path = Path(args.output_dir) / "audit.json"
        record = json.loads(path.read_text())
        for results in record["runs"].values():
            judge(results)
        path.write_text(json.dumps(record, indent=1) + "\n")
        write_markdown(record, Path(args.output_dir))
        return record
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    bench, settings, target_dir, make_trainer, (forget, retain), (members, nonmembers), cap = prepare(args.model, rest)
    relearn = RelearnConfig(**{f.name: getattr(args, f"relearn_{f.name}") for f in dataclasses.fields(RelearnConfig)})
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "audit.json"
    record = json.loads(json_path.read_text()) if json_path.is_file() else {"runs": {}}
    for key in args.methods:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="audit-") as work:
            trainer = make_trainer(key, args.seed, Path(work))
            trainer.train()
        train_seconds = time.perf_counter() - started
        unlearned = trainer.model.merge_and_unload().eval()
        original = AutoModelForCausalLM.from_pretrained(target_dir, use_safetensors=True).eval()
        results = audit_model(unlearned, original, trainer.processing_class, forget, retain, members, nonmembers,
                              probes=[p for p in args.probes.split(",") if p], relearn_config=relearn,
                              max_new_tokens=cap, batch_size=16)
        name = f"{args.model}/{key}{args.tag}"
        results["benchmark"] = {"model": args.model, "method": key, "seed": args.seed,
                                "settings": dataclasses.asdict(settings), "train_seconds": train_seconds,
                                "audit_seconds": time.perf_counter() - started - train_seconds,
                                "threads": torch.get_num_threads()}
        record["runs"][name] = results
        stem = "_".join(filter(None, ["audit", args.model, key, re.sub(r"[^A-Za-z0-9.-]+", "_", args.tag).strip("_")]))
        results["benchmark"]["plot"] = f"{stem}.png"
        audit_plot(results, out_dir / f"{stem}.png")
        print("\n".join(verdicts(results)), flush=True)
        del unlearned, original, trainer
    json_path.write_text(json.dumps(record, indent=1) + "\n")
    write_markdown(record, out_dir)
    return record


ATTACKS = ("int8", "int4", "relearn")


def attack_cell(probe: dict | None) -> str:
    """One cell of the summary: the share that comes back, and what the verdict says about the attack itself."""
    if probe is None:
        return ""
    if probe.get("recovered") is None:
        return "nothing forgotten"
    cell = f"{max(probe['recovered'], 0):.0%} back"
    if "breaks the original model too" in probe["verdict"]:
        return cell + "; breaks the original too: no test"
    return cell + ("; damages the model" if "damages the model" in probe["verdict"] else "")


def write_markdown(record: dict, out_dir: Path) -> None:
    lines = ["# Does the forgetting hold? Audits of LoRA unlearning", "",
             "`python benchmarks/audit.py` (see its docstring): each method unlearns the forget_train subset of the "
             "benchmark's memorised target, the adapter is merged, and `hf_unlearn.audit.audit_model` scores the "
             "target, the unlearned model and each attack on the given forget and retain rows.", "",
             "## Summary: what each attack brings back", "",
             "Forget and retain regurgitation of the target -> the unlearned model; for each attack, the share of the "
             "forgotten forget regurgitation that comes back (under 20%: the forgetting survives; "
             "from 50%: it does not), and whether the attack broke the original model too (the quantization control) "
             "or took the retain regurgitation down by more than 0.2 (it damages the model).", "",
             "| run | forget reg. | retain reg. | " + " | ".join(ATTACKS) + " |",
             "|---|---|---|" + "---|" * len(ATTACKS)]
    for name, results in record["runs"].items():
        o, u = results["models"]["original"], results["models"]["unlearned"]
        lines.append(f"| {name} | " + " | ".join(f"{o[k]:.2f} -> {u[k]:.2f}" for k in ("forget/regurgitation",
                                                                                     "retain/regurgitation"))
                     + " | " + " | ".join(attack_cell(results["probes"].get(a)) for a in ATTACKS) + " |")
    lines.append("")
    for name, results in record["runs"].items():
        b = results["benchmark"]
        lines += [f"## {name} (seed {b['seed']}; training {b['train_seconds']:.0f} s, audit {b['audit_seconds']:.0f} s, "
                  f"{b['threads']} thread(s))", "", audit_markdown(results).split("\n", 2)[2].replace("## ", "### "), "",
                  f"![{name}]({b['plot']})", ""]
    (out_dir / "audit.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()

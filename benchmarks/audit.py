"""Does LoRA unlearning on SmolLM2 survive int8 and int4 quantization, relearning and shorter prompts?

    python benchmarks/audit.py -- --anchor_weight 1 --learning_rate 2e-3 --beta 1 --retain_nll_weight 4 \\
        --retain_kl_weight 3                                     # the target of benchmarks/lume_methods_smollm2.py

For each method (`--methods`, default NPO+NLL+KL and GD) and seed it unlearns the forget_train subset from the SmolLM2
comparison's cached target with that benchmark's settings (everything after `--` goes to its Settings), merges the
adapter, and runs `hf_unlearn.audit.audit_model` on the given subsets (forget_train and retain_train rows, the MIA
members against the nonmembers): int8 and int4 round-to-nearest quantization, a relearning fine-tune on half the
forget documents measured on the other half, prompts cut to 50% and 25% (LUME rows carry no paraphrases). The small
model's audits are experiment files run by `hf-unlearn compare`: benchmarks/experiments/audit_tiny.yaml (LUME rows)
and audit_tofu_tiny.yaml (TOFU, with the paraphrase probe); SmolLM2 on TOFU is audit_tofu_smollm2.yaml.

It writes `benchmarks/results/audit.{md,json}` (one section per method, kept from earlier invocations) and
`audit_smollm2_<method>.png`. Numbers, verdicts and settings only: no row text.
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

from hf_unlearn.audit import PROBES, RelearnConfig, audit_model, judge, verdicts  # noqa: E402
from hf_unlearn.audit.run import audit_markdown, audit_plot  # noqa: E402

DEFAULT_METHODS = ("npo_nll_kl", "gd")
MODEL = "smollm2"


def prepare(rest: list[str]):
    """(its settings, target folder, a function (key, seed, work_dir) -> trainer, (forget, retain) rows, (MIA
    members, nonmembers), generation cap) of the SmolLM2 comparison's target."""
    spec = importlib.util.spec_from_file_location("lume_methods_smollm2", HERE / "lume_methods_smollm2.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["lume_methods_smollm2"] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    parser = argparse.ArgumentParser()
    bench.add_dataclass_arguments(parser, bench.Settings)
    settings = bench.Settings(**bench.dataclass_overrides(parser.parse_args(rest), bench.Settings))
    data = bench.load_data(settings)
    _, tokenizer, info = bench.load_or_build_target(settings, data)
    target_dir = info["cache_dir"]

    def trainer(key, seed, work):
        return bench.build_trainer(key, seed, settings, data, target_dir, work)

    rows = (data.subset.rows["forget_train"], data.subset.rows["retain_train"])
    caps = bench.generation_caps(tokenizer, data.subset)
    members = data.subset.members  # against as many nonmembers, the first of the comparison's (as audit.md was made)
    return settings, target_dir, trainer, rows, (members, data.nonmembers[: len(members)]), max(caps.values())


def main(argv=None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    mine = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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

    settings, target_dir, make_trainer, (forget, retain), (members, nonmembers), cap = prepare(rest)
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
        name = f"{MODEL}/{key}{args.tag}"
        results["benchmark"] = {"model": MODEL, "method": key, "seed": args.seed,
                                "settings": dataclasses.asdict(settings), "train_seconds": train_seconds,
                                "audit_seconds": time.perf_counter() - started - train_seconds,
                                "threads": torch.get_num_threads()}
        record["runs"][name] = results
        stem = "_".join(filter(None, ["audit", MODEL, key, re.sub(r"[^A-Za-z0-9.-]+", "_", args.tag).strip("_")]))
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

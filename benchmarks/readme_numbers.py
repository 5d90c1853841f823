"""The demo numbers the README quotes: run the embedded demo (`hf_unlearn.support.demo.run_demo`, full settings) once per
seed and print its before/after scores, their spread over the runs and the time each run took.

    python benchmarks/readme_numbers.py                      # seeds 0 1 2; writes benchmarks/results/demo.md
    python benchmarks/readme_numbers.py --seeds 0 0 --output-dir outputs/readme_numbers

Each run writes the demo's own files (results.json, scores.md, the adapter, its data) to OUTPUT_DIR/run<i>-seed<s>.
A seed whose target model is not cached yet first memorises it (a few minutes), which is in its time; a repeated seed
uses the cache. HF_UNLEARN_DEMO_QUICK=1 runs the quick configuration instead (mechanics only: the numbers then mean
nothing, and the report says so).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROWS = [  # (label, key in the demo's before/after scores)
    ("forget regurgitation", "lume/forget/regurgitation"),
    ("forget knowledge", "lume/forget/knowledge"),
    ("retain regurgitation", "lume/retain/regurgitation"),
    ("retain knowledge", "lume/retain/knowledge"),
    ("task score", "lume/task_score"),
    ("MIA loss AUC", "mia/auc"),
]


def report(runs: list[dict], quick: bool) -> str:
    """A markdown report of the runs: one column per run, then the mean and the range of the 'after' values."""
    head = [f"run {i} (seed {r['seed']})" for i, r in enumerate(runs)]
    lines = ["# The embedded demo over seeds (`python benchmarks/readme_numbers.py`)", ""]
    if quick:
        lines += ["**Quick configuration (HF_UNLEARN_DEMO_QUICK=1): mechanics only, not the README's numbers.**", ""]
    lines += ["Before -> after unlearning, on the train rows (`hf_unlearn/support/demo.py` has the settings).", "",
              "| score | " + " | ".join(head) + " | mean after | range after |",
              "|---|" + "---:|" * (len(runs) + 2)]
    for label, key in ROWS:
        after = [r["after"][key] for r in runs]
        cells = [f"{r['before'][key]:.3f} -> {r['after'][key]:.3f}" for r in runs]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {statistics.mean(after):.3f} | "
                     f"{min(after):.3f}-{max(after):.3f} |")
    lines.append("| selective (forget halved, retain within 0.1) | "
                 + " | ".join("yes" if r["selectivity"]["selective"] else "no" for r in runs) + " | | |")
    lines.append("| target model | " + " | ".join("cached" if r["target"]["from_cache"] else
                                                 f"memorised in {r['target']['memorise_seconds']:.0f} s" for r in runs)
                 + " | | |")
    lines.append("| time of the run | " + " | ".join(f"{r['timings']['total_seconds']:.0f} s" for r in runs) + " | | |")
    lines += ["", f"torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}; load average at the end: "
              f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="One run per seed (default 0 1 2).")
    parser.add_argument("--output-dir", default="outputs/readme_numbers", help="Where each run's files go.")
    parser.add_argument("--report", default=str(Path(__file__).parent / "results" / "demo.md"),
                        help="Where the markdown report is written (default benchmarks/results/demo.md).")
    args = parser.parse_args(argv)

    from hf_unlearn.support.demo import run_demo

    runs = []
    for i, seed in enumerate(args.seeds):
        result = run_demo(output_dir=str(Path(args.output_dir) / f"run{i}-seed{seed}"), seed=seed)
        runs.append({"seed": seed, **result})
    quick = os.environ.get("HF_UNLEARN_DEMO_QUICK") == "1"
    text = report(runs, quick)
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(text)
    print("\n" + text + f"\nwritten to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

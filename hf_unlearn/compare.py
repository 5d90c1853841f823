"""`hf-unlearn compare`: which method and settings forget *your* data selectively, on *your* model.

    hf-unlearn compare --experiment my_experiment.yaml --output-dir compare_out

An experiment is a small YAML file (or the same as a dict, `load_experiment`):

    model: smollm2                      # what `hf-unlearn unlearn --model` takes
    data:                               # the files `hf-unlearn unlearn` reads; paths relative to this file
      forget: forget.jsonl
      retain: retain.jsonl
      holdout: unseen.txt               # optional: membership attack (and the anchored method's calibration)
      general_questions: facts.jsonl    # optional: general ability kept? (also general_text: documents, mmlu: folder)
    seeds: [0, 1, 2]
    settings:                           # shared by every run: `hf-unlearn unlearn` options or UnlearningConfig fields
      num_train_epochs: 5
    runs:
      - name: npo_nll_kl                # a row of the report
        method: npo
        settings: {beta: 1.0, retain_nll_weight: 4.0, retain_kl_weight: 3.0}
      - method: anchored
        grid: {learning_rate: [1.0e-3, 2.0e-3]}   # one row per combination
    checks: {forget_ratio: 0.5, retain_drop: 0.1, mia_band: null, general_drop: 0.05, ppl_rise: 0.2}

Instead of `model:`, a `target:` recipe (`hf_unlearn.target.TargetRecipe`) builds the model that memorises the data, and
with `retain_model: true` the same recipe without `data.forget`: every run then also gets PrivLeak against it, and with
a `tofu:` section (`TofuSpec`) TOFU's forget quality and model utility (docs/compare.md).

Each run is `hf_unlearn.unlearn.run_unlearn` (the job `hf-unlearn unlearn` runs, so a run is scored exactly as a
deletion request is), without merging and, unless the settings ask for them, without the audit's probes. Its numbers
go to `runs/<key>.json`, the key a hash of the run's settings, the data files' contents and the package version: a
finished run is not run again when the comparison is resumed or extended, and a changed file or setting is a new run.
The model before unlearning is scored once (per seed where the seed picks the attack's documents) and read by the
other runs from `before/`. Every record holds the environment (package versions, torch threads, device).
`compare.md` (with `compare.png` and `compare.json`) has the mean and spread over seeds of each row, the checks each
run failed, the recommended setting and the `hf-unlearn unlearn` command that reproduces it. No forget text is
written anywhere: scores and settings only.

`--jobs N` runs N settings at once, each in its own process with `--threads` torch threads (default: the cores
divided among the jobs). On a cluster, give each node its own slice of the experiment (a `runs:` list each, the same
`--output-dir` on a shared file system): the records are keyed files, so the last `compare` over the whole experiment
only writes the report. A scheduler (SLURM array jobs, Ray tasks) can do the same by running one run each.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import write_text_atomic

FORMAT = "hf_unlearn.compare"
VERSION = 1
DATA_FIELDS = ("forget", "retain", "holdout", "calibration", "eval_forget", "eval_retain", "mia",
               "pre_finetuning_model", "general_text", "general_questions", "mmlu")
TOP_FIELDS = {"model", "target", "tofu", "lume", "data", "seeds", "settings", "runs", "checks", "name", "description"}
TOFU_FIELDS = {"data": str, "forget_split": str, "max_new_tokens": int, "chat_template": bool, "max_rows": int}
RUN_FIELDS = {"name", "method", "settings", "grid"}
# Report columns: (label, key in the job's before/after scores).
COLUMNS = [("forget regurgitation", "forget/regurgitation"), ("forget knowledge", "forget/knowledge"),
           ("retain regurgitation", "retain/regurgitation"), ("retain knowledge", "retain/knowledge"),
           ("task score", "task_score"),
           # the rows not given to the method (data.eval_forget / eval_retain: e.g. LUME's validation split)
           ("not given: forget regurgitation", "eval/forget/regurgitation"),
           ("not given: forget knowledge", "eval/forget/knowledge"),
           ("not given: retain regurgitation", "eval/retain/regurgitation"),
           ("not given: retain knowledge", "eval/retain/knowledge"), ("not given: task score", "eval/task_score"),
           ("MIA AUC", "mia/auc"), ("zlib AUC", "mia/zlib_auc"), ("Min-K% AUC", "mia/min_k_auc"),
           ("Min-K%++ AUC", "mia/min_k_plus_plus_auc"), ("exposed", "mia/exposed_share"), ("PrivLeak", "privleak"),
           ("forget quality", "tofu/forget_quality"), ("model utility", "tofu/model_utility"),
           ("general ppl", "general/ppl"), ("general knowledge", "general/knowledge"), ("MMLU", "general/mmlu"),
           ("utility (ppl before / ppl)", "utility"),
           ("final (task, MIA, MMLU)", "final"), ("final (task, MIA, utility)", "final_utility"),
           ("not given: final (task, MIA, utility)", "eval/final_utility"),
           # the audit's probes, where the settings ask for them (`probes: int4,relearn,...`): the share of the
           # forgetting an attack brings back, and the share forgotten on the probe's prompts
           *((f"{probe}: comes back", f"audit/{probe}/recovered") for probe in ("int8", "int4", "relearn")),
           *((f"{probe}: forgotten", f"audit/{probe}/forgotten") for probe in ("prefix50", "prefix25", "paraphrase"))]
# Settings that say where a run writes or how fast it goes, not what it computes (not in the run's key).
NOT_IN_KEY = {"output_dir", "threads"}


@dataclass
class Checks:
    """What a run must show to count as selective (the project's bars on the real model).

    Parameters:
        forget_ratio: forget regurgitation (and knowledge, where there are question rows) after at most this share
            of its value before.
        retain_drop: each retain score (regurgitation, knowledge) at most this much below its value before.
        mia_band: if set, the loss attack's AUC within 0.5 +- this (needs `data.holdout` or `data.mia`).
        general_drop: general knowledge and MMLU at most this much below their values before (where measured:
            `data.general_questions`, `data.mmlu`; None: not checked).
        ppl_rise: the general documents' perplexity at most this share above its value before (where measured:
            `data.general_text`; None: not checked).
    """

    forget_ratio: float = 0.5
    retain_drop: float = 0.1
    mia_band: float | None = None
    general_drop: float | None = 0.05
    ppl_rise: float | None = 0.2

    def failed(self, before: Mapping[str, float], after: Mapping[str, float]) -> list[str]:
        """The checks a run failed, in words (empty: selective)."""
        out = []
        fb, fa = before.get("forget/regurgitation"), after.get("forget/regurgitation")
        if fb is None or fa is None or fa > self.forget_ratio * fb:
            out.append(f"forget regurgitation at most {self.forget_ratio:g}x its value before")
        kb, ka = before.get("forget/knowledge"), after.get("forget/knowledge")
        if kb is not None and ka is not None and ka > self.forget_ratio * kb:  # where there are question rows
            out.append(f"forget knowledge at most {self.forget_ratio:g}x its value before")
        for key in ("retain/regurgitation", "retain/knowledge"):
            if before.get(key) is not None and after.get(key) is not None and before[key] - after[key] > \
                    self.retain_drop:
                out.append(f"{key.replace('/', ' ')} within {self.retain_drop:g}")
        from .metrics.general import general_shortfalls

        for key in general_shortfalls(before, after, self.general_drop, self.ppl_rise):
            out.append(f"general perplexity within +{self.ppl_rise:.0%}" if key == "general/ppl" else
                       f"{'general knowledge' if key == 'general/knowledge' else 'MMLU'} within {self.general_drop:g}")
        if self.mia_band is not None:
            auc = after.get("mia/auc")
            if auc is None or abs(auc - 0.5) > self.mia_band:
                out.append(f"MIA AUC within 0.5 +- {self.mia_band:g}")
        return out


@dataclass
class RunSpec:
    """One row of the comparison: a method with its settings (one combination of a grid)."""

    name: str
    method: str
    settings: dict[str, Any]


@dataclass
class Experiment:
    """A parsed experiment file (see the module docstring)."""

    model: str | None
    data: dict[str, str]
    seeds: list[int]
    settings: dict[str, Any]
    runs: list[RunSpec]
    checks: Checks
    name: str = "experiment"
    source: str = "<dict>"
    target: Any = None  # a `hf_unlearn.target.TargetRecipe`: build `model` from it
    tofu: dict[str, Any] | None = None  # TOFU's scores for every run (see `TofuSpec`)
    lume: Any = None  # a `hf_unlearn.data.lume_subset.LumeSubset`: the data files are written from it
    base_dir: Path = field(default_factory=Path.cwd)
    slices: dict[str, Any] = field(default_factory=dict)  # data names given as slices or lists: their `Slice`s


@dataclass
class TofuSpec:
    """An experiment's `tofu:` section: TOFU's forget quality and model utility for every run (and the model before),
    computed by `hf_unlearn.metrics.tofu.evaluate_tofu`, forget quality against the target recipe's retain model.

    Parameters:
        data: the TOFU folder ({forget_split}_perturbed.jsonl, retain_perturbed.jsonl, real_authors_perturbed.jsonl,
            world_facts_perturbed.jsonl), relative to the experiment file.
        forget_split: forget01, forget05 or forget10: the questions whose truth ratios are compared.
        max_new_tokens: the longest generated answer (ROUGE).
        chat_template: ask the questions through the tokenizer's chat template, as the model was fine-tuned (false:
            TOFU's plain `Question: ...\nAnswer: `, the prompt of TOFU rows given as data files).
        max_rows: score only the first this many questions of each split (0: all; the retain split has 400).
    """

    data: str
    forget_split: str = "forget01"
    max_new_tokens: int = 64
    chat_template: bool = True
    max_rows: int = 0


def _unlearn_fields() -> dict[str, dataclasses.Field]:
    from .unlearn import UnlearnArguments

    return {f.name: f for f in dataclasses.fields(UnlearnArguments)}


def _coerce(value: Any, kind: Any, where: str, source: str) -> Any:
    """A setting's value as its field's type (YAML reads 3e-3 as a string): refused, naming it, if it is not one."""
    if value is None or kind is None:
        return value
    # a string annotation, or the type itself (HfArgumentParser resolves the dataclasses' annotations in place)
    name = kind if isinstance(kind, str) else getattr(kind, "__name__", None) or str(kind)
    base = name.replace("typing.", "").replace(" | None", "").replace("Optional[", "").rstrip("]").strip()
    try:
        if base == "float" and not isinstance(value, bool):
            return float(value)
        if base == "int" and not isinstance(value, bool) and float(value) == int(float(value)):
            return int(float(value))
        if base == "bool" and isinstance(value, (bool, str)):
            if isinstance(value, bool) or value.lower() in ("true", "false"):
                return value if isinstance(value, bool) else value.lower() == "true"
            raise ValueError
        if base == "str":
            return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: {where}: must be {base}, got {type(value).__name__}") from None
    if base in ("float", "int", "bool"):
        raise ValueError(f"{source}: {where}: must be {base}, got {type(value).__name__}")
    return value


def _field_types() -> dict[str, Any]:
    """Every setting an experiment may give (`hf-unlearn unlearn` options and UnlearningConfig fields, LIBU's with
    `influence: true`) and its type."""
    from .config import InfluenceUnlearningConfig

    types = {f.name: f.type for f in dataclasses.fields(InfluenceUnlearningConfig)}
    types.update({name: f.type for name, f in _unlearn_fields().items()})
    return types


def _check_settings(settings: Any, where: str, source: str) -> dict[str, Any]:
    """Settings keys must be `hf-unlearn unlearn` options or UnlearningConfig fields (a typo is refused, not
    ignored); data paths and the output folder are the experiment's own."""
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise ValueError(f"{source}: {where} must be a mapping of setting names to values")
    types = _field_types()
    for key in settings:
        if key in DATA_FIELDS or key in ("model", "output_dir", "method", "seed", "trainer_arg"):
            raise ValueError(f"{source}: {where}.{key}: set {key} "
                             + ("under data:" if key in DATA_FIELDS else "at the top level" if key == "model"
                                else "as the run's method:" if key == "method" else "under seeds:" if key == "seed"
                                else "with --output-dir" if key == "output_dir" else "as a setting of its own"))
        if key not in types:
            raise ValueError(f"{source}: {where}.{key}: unknown setting (neither an `hf-unlearn unlearn` option nor "
                             "an UnlearningConfig field)")
    return {key: _coerce(value, types.get(key), f"{where}.{key}", source) for key, value in settings.items()}


def load_experiment(experiment: str | Path | Mapping[str, Any]) -> Experiment:
    """Parse and check an experiment (a YAML file or its dict) before any run: every error names the field."""
    from .methods import METHOD_REGISTRY as METHODS

    if isinstance(experiment, Mapping):
        raw, source, base = dict(experiment), "<dict>", Path.cwd()
    else:
        import yaml

        path = Path(experiment)
        if not path.is_file():
            raise FileNotFoundError(f"experiment file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            mark = getattr(error, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise ValueError(f"{path}: not a readable YAML file{where}") from None
        source, base = str(path), path.resolve().parent
    if not isinstance(raw, Mapping):
        raise ValueError(f"{source}: an experiment is a mapping with runs:, seeds:, ...")
    unknown = sorted(set(raw) - TOP_FIELDS)
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(TOP_FIELDS))})")
    data = raw.get("data") or {}
    if not isinstance(data, Mapping) or set(data) - set(DATA_FIELDS):
        bad = sorted(set(data) - set(DATA_FIELDS)) if isinstance(data, Mapping) else ["(not a mapping)"]
        raise ValueError(f"{source}: data: unknown field(s) {', '.join(bad)} (known: {', '.join(DATA_FIELDS)})")
    from .data.slices import Slice, is_slice, parse_slice

    slices: dict[str, list[Slice]] = {}
    data = dict(data)
    for key, value in list(data.items()):
        # {file: x.jsonl, rows: 40, skip: 0}: some of the file's rows; a list of files and slices: their rows in turn
        if is_slice(value) or isinstance(value, list):
            items = value if isinstance(value, list) else [value]
            if not items or not all(is_slice(v) or (isinstance(v, str) and v.endswith(".jsonl")) for v in items):
                raise ValueError(f"{source}: data.{key}: a list of JSON-lines files (.jsonl) or slices of them")
            where = f"{source}: data.{key}"
            pieces = [parse_slice(v, where if len(items) == 1 else f"{where}[{i}]") if is_slice(v) else Slice(v, None)
                      for i, v in enumerate(items)]
            for piece in pieces:
                piece.file = str((base / piece.file).resolve())
            data[key], slices[key] = pieces[0].file, pieces
    data = {k: (v if k == "pre_finetuning_model" and not (base / str(v)).exists() else str((base / str(v)).resolve()))
            for k, v in data.items() if v is not None}
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                              for s in seeds):
        raise ValueError(f"{source}: seeds: a non-empty list of integers, e.g. [0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{source}: seeds: each seed once")
    shared = _check_settings(raw.get("settings"), "settings", source)
    runs_raw = raw.get("runs")
    if not isinstance(runs_raw, list) or not runs_raw:
        raise ValueError(f"{source}: runs: a non-empty list of runs (each with a method:)")
    runs: list[RunSpec] = []
    for i, run in enumerate(runs_raw):
        where = f"runs[{i}]"
        if not isinstance(run, Mapping):
            raise ValueError(f"{source}: {where}: a mapping with method: (and name:, settings:, grid:)")
        bad = sorted(set(run) - RUN_FIELDS)
        if bad:
            raise ValueError(f"{source}: {where}: unknown field(s) {', '.join(bad)} (known: "
                             f"{', '.join(sorted(RUN_FIELDS))})")
        method = run.get("method")
        if method not in METHODS:
            raise ValueError(f"{source}: {where}.method: unknown method {method!r} (known: "
                             f"{', '.join(sorted(METHODS))})")
        settings = {**shared, **_check_settings(run.get("settings"), f"{where}.settings", source)}
        grid = run.get("grid") or {}
        if not isinstance(grid, Mapping):
            raise ValueError(f"{source}: {where}.grid: a mapping of setting names to lists of values")
        _check_settings({k: None for k in grid}, f"{where}.grid", source)  # the keys, before their values
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"{source}: {where}.grid.{key}: a non-empty list of values")
        types = _field_types()
        grid = {key: [_coerce(v, types[key], f"{where}.grid.{key}", source) for v in values]
                for key, values in grid.items()}
        name = str(run.get("name") or method)
        combos = list(itertools.product(*grid.values())) if grid else [()]
        for combo in combos:
            chosen = dict(zip(grid, combo))
            label = name + (" (" + ", ".join(f"{k} {v}" for k, v in chosen.items()) + ")" if chosen else "")
            runs.append(RunSpec(label, method, {**settings, **chosen}))
    names = [r.name for r in runs]
    twice = sorted(n for n in names if names.count(n) > 1)
    if twice:
        raise ValueError(f"{source}: runs: two runs are named the same ({twice[0]}): give each a name:")
    checks_raw = raw.get("checks") or {}
    known = {f.name for f in dataclasses.fields(Checks)}
    if not isinstance(checks_raw, Mapping) or set(checks_raw) - known:
        bad = sorted(set(checks_raw) - known) if isinstance(checks_raw, Mapping) else ["(not a mapping)"]
        raise ValueError(f"{source}: checks: unknown field(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")
    model = raw.get("model")
    if model is not None and (base / str(model)).exists():  # a folder beside the file (else a Hub id, or smollm2)
        model = str((base / str(model)).resolve())
    target = None
    if raw.get("target") is not None:
        from .target import parse_recipe

        if model is not None:
            raise ValueError(f"{source}: give model: (a model that already knows the data) or target: (a recipe that "
                             "builds one), not both")
        target = parse_recipe(raw["target"], source)
        if (base / target.base).exists():
            target.base = str((base / target.base).resolve())
        for entries in (target.memorise, target.anchor):  # slices' files relative to this file, as data's are
            for entry in entries:
                if not isinstance(entry, str):
                    entry.file = str((base / entry.file).resolve())
    tofu = _parse_tofu(raw.get("tofu"), base, source)
    lume = _parse_lume(raw.get("lume"), base, source, data)
    if tofu is not None and not (target is not None and target.retain_model):
        raise ValueError(f"{source}: tofu: forget quality is measured against a retain model: give target: with "
                         "retain_model: true")
    return Experiment(model=None if model is None else str(model), data=data, seeds=list(seeds), settings=shared,
                      runs=runs, checks=Checks(**checks_raw), name=str(raw.get("name") or Path(source).stem),
                      source=source, target=target, tofu=tofu, lume=lume, base_dir=base, slices=slices)


def _parse_lume(raw: Any, base: Path, source: str, data: Mapping[str, str]):
    """A `lume:` section as a `LumeSubset` (its folder relative to the experiment file); the data names it writes
    may not also be given under `data:`."""
    if raw is None:
        return None
    from .data.lume_subset import DATA_NAMES, LumeSubset

    known = [f.name for f in dataclasses.fields(LumeSubset)]
    if not isinstance(raw, Mapping) or set(raw) - set(known) or "data" not in raw:
        bad = sorted(set(raw) - set(known)) if isinstance(raw, Mapping) else ["(not a mapping)"]
        raise ValueError(f"{source}: lume: a mapping with data: (the LUME folder) and {', '.join(known[1:])}"
                         + (f"; unknown field(s) {', '.join(bad)}" if bad else ""))
    try:
        spec = LumeSubset(**{**raw, "data": str((base / str(raw["data"])).resolve())})
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    written = set(DATA_NAMES) | {"mia", "calibration", "general_text"}
    both = sorted(written & set(data))
    if both:
        raise ValueError(f"{source}: data.{both[0]}: lume: writes it from the LUME subset; give one or the other")
    return spec


def _parse_tofu(raw: Any, base: Path, source: str) -> dict[str, Any] | None:
    """An experiment's `tofu:` section, checked (see `TofuSpec`)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not raw.get("data"):
        raise ValueError(f"{source}: tofu: a mapping with data: (a TOFU folder) and optionally forget_split:")
    bad = sorted(set(raw) - set(TOFU_FIELDS))
    if bad:
        raise ValueError(f"{source}: tofu: unknown field(s) {', '.join(bad)} (known: {', '.join(TOFU_FIELDS)})")
    for key, kind in TOFU_FIELDS.items():
        if key in raw and (not isinstance(raw[key], kind) or (kind is int and isinstance(raw[key], bool))):
            raise ValueError(f"{source}: tofu.{key}: must be {kind.__name__}")
    spec = dataclasses.asdict(TofuSpec(**raw))
    spec["data"] = str((base / spec["data"]).resolve())
    return spec


def _file_digest(path: str) -> str:
    """sha256 of a file (of every file, in name order, for a folder): a changed data file is a new run."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p] if p.is_file() else []
    for q in files:
        h.update(q.name.encode())
        h.update(q.read_bytes())
    return h.hexdigest()


def run_key(model: str, data: Mapping[str, str], spec: RunSpec, seed: int,
            scoring: Mapping[str, Any] | None = None) -> str:
    """The key of one run: its method, settings, seed, model, the data files' contents and the package version (and
    `scoring`, what else scores it: the retain model and TOFU's settings, so a run scored without them is run
    again)."""
    from . import __version__

    data = run_data(data, spec.method)
    what = {"model": model, "method": spec.method, "seed": seed, "version": __version__,
            "settings": {k: v for k, v in sorted(spec.settings.items()) if k not in NOT_IN_KEY},
            "data": {k: _file_digest(v) if Path(v).exists() else v for k, v in sorted(data.items())},
            **({"scoring": dict(scoring)} if scoring else {})}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


# The `hf-unlearn unlearn` options that change how the model before unlearning is scored.
SCORING = ("max_new_tokens", "generation_batch_size", "max_length", "max_words", "prompt_fraction", "mmlu_limit",
           "dtype", "trust_remote_code")


def before_key(model: str, data: Mapping[str, str], seed: int, job) -> str:
    """The key of the model's scores before unlearning: the model, the data files' contents, the scoring options of
    `job` and the package version, and the seed only where it picks the attack's documents (the seeded halves of a
    holdout file). Every method and setting of a comparison shares them."""
    from . import __version__

    seeded = "holdout" in data and "calibration" not in data and "mia" not in data
    data = {k: v for k, v in data.items() if k != "pre_finetuning_model"}  # read by training only
    what = {"model": model, "version": __version__, "scoring": {k: getattr(job, k) for k in SCORING},
            "data": {k: _file_digest(v) if Path(v).exists() else v for k, v in sorted(data.items())},
            **({"seed": seed} if seeded else {})}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def job_arguments(model: str, data: Mapping[str, str], spec: RunSpec, seed: int, output_dir: str,
                  threads: int | None = None):
    """The `UnlearnArguments` of one run: settings that are `hf-unlearn unlearn` options set directly, the rest as
    `--trainer-arg NAME=VALUE`; no merge, and no audit unless the settings ask for probes."""
    from .unlearn import UnlearnArguments

    fields = _unlearn_fields()
    direct = {k: v for k, v in spec.settings.items() if k in fields and k != "threads"}
    # JSON for what is not a string, as --trainer-arg reads it back (None -> null, True -> true)
    extra = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in spec.settings.items() if k not in fields]
    data = run_data(data, spec.method)
    return UnlearnArguments(model=model, output_dir=output_dir, method=spec.method, seed=seed, threads=threads,
                            **{"probes": "none", "merge": False, **direct},
                            trainer_arg=extra, **{k: v for k, v in data.items()})


def check_run_settings(experiment: Experiment) -> None:
    """Every run's job configuration built and its method's settings checked, as the job checks them, before the
    first run (a value the method refuses would otherwise end the comparison at that run, after the ones before it)."""
    from .unlearn import build_config, check_job_numbers

    for spec in experiment.runs:
        job = job_arguments(experiment.model or "target", experiment.data, spec, experiment.seeds[0], os.devnull)
        try:
            check_job_numbers(job)
            build_config(job, Path(os.devnull))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{experiment.source}: run {spec.name!r}: {error}") from None


def run_data(data: Mapping[str, str], method: str) -> dict[str, str]:
    """The experiment's data as a run of `method` gets it: the model from before fine-tuning only where the method
    reads it (the job refuses it elsewhere, and it is no part of the other runs' keys)."""
    return {k: v for k, v in data.items() if k != "pre_finetuning_model" or reads_pre_finetuning_model(method)}


@functools.lru_cache(maxsize=None)
def reads_pre_finetuning_model(method: str) -> bool:
    """Whether method `method` (at its defaults) reads the model from before fine-tuning (asked once a method: each
    run's key and job arguments ask it)."""
    from .config import UnlearningConfig

    config = UnlearningConfig(output_dir=os.devnull, method=method, report_to="none", use_cpu=True)
    return config.unlearning_method.needs().forget_pre_logits


def environment() -> dict[str, Any]:
    """What produced a number: package versions, torch threads, the device, the machine."""
    import importlib.metadata as md

    import torch

    versions = {}
    for name in ("hf_unlearn", "torch", "transformers", "peft", "accelerate", "datasets"):
        try:
            versions[name] = md.version(name.replace("_", "-"))
        except md.PackageNotFoundError:
            versions[name] = None
    return {"versions": versions, "python": platform.python_version(), "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
            "platform": platform.platform()}


def run_one(payload: dict[str, Any]) -> dict[str, Any]:
    """One run (in this process or a worker's): the unlearn job into `runs/<key>/`, its record to `runs/<key>.json`."""
    from .threads import configure_threads
    from .unlearn import run_unlearn

    spec = RunSpec(**payload["spec"])
    folder = Path(payload["runs_dir"]) / payload["key"]
    if folder.exists():  # an earlier try of this run stopped before its record (compare's own folder): anew
        shutil.rmtree(folder)
    configure_threads(payload["threads"])
    job = job_arguments(payload["model"], payload["data"], spec, payload["seed"], str(folder), payload["threads"])
    # the model before unlearning is the same for every run (of a seed, where the seed picks the attack's
    # documents): scored by the first run, read by the others
    key = before_key(payload["model"], payload["data"], payload["seed"], job)
    known = Path(payload["runs_dir"]).parent / "before" / f"{key}.json"
    before = json.loads(known.read_text()) if known.is_file() else None
    log = open(folder.with_suffix(".log"), "w")
    try:
        result = run_unlearn(job, progress=lambda line: print(line, file=log, flush=True), before=before)
        if before is None:
            known.parent.mkdir(exist_ok=True)
            write_text_atomic(known, json.dumps(result["scores"]["before"]) + "\n")
        if payload.get("retain_model"):
            before, after = reference_scores(payload, job, result["paths"]["adapter"], result["scores"]["after"])
            result["scores"]["before"].update(before)
            result["scores"]["after"].update(after)
    finally:
        log.close()
    for probe, found in ((result.get("audit") or {}).get("probes") or {}).items():  # as scores: a column each
        for field_name, key in (("recovered", "recovered"), ("forgotten_share", "forgotten")):
            if found.get(field_name) is not None:
                result["scores"]["after"][f"audit/{probe}/{key}"] = found[field_name]
    record = {"format": FORMAT, "version": VERSION, "key": payload["key"], "name": spec.name, "method": spec.method,
              "settings": spec.settings, "seed": payload["seed"], "model": payload["model"],
              "scores": result["scores"], "verdict": result["verdict"], "train_seconds": result["train_seconds"],
              "seconds": result["seconds"], "steps": result["training"]["steps"],
              "method_settings": result["method_settings"], "environment": environment()}
    if result.get("audit"):  # the probes' verdicts in words (numbers and settings only, no row text)
        record["audit_verdicts"] = [p["verdict"] for p in result["audit"]["probes"].values() if p.get("verdict")]
    write_text_atomic(folder.with_suffix(".json"), json.dumps(record, indent=1, default=str) + "\n")
    return record


def _load(model: str, adapter: str | None = None):
    """(model, tokenizer) in float32, with `adapter` merged into it."""
    import torch

    from .pretrained import load_model_and_tokenizer

    net, tokenizer = load_model_and_tokenizer(model, dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        from .quiet import peft_wrapping

        with peft_wrapping():
            net = PeftModel.from_pretrained(net, adapter).merge_and_unload()
    return net.eval(), tokenizer


def _tofu_scores(net, tokenizer, spec: Mapping[str, Any], reference_ratios=None) -> dict[str, Any]:
    from .cli import _tofu_rows
    from .metrics.tofu import evaluate_tofu

    rows = _tofu_rows(spec["data"], spec["forget_split"], spec.get("max_rows", 0))
    return evaluate_tofu(net, tokenizer, rows["forget"], rows["retain"], rows["real_authors"], rows["world_facts"],
                         reference_ratios, chat_template=spec["chat_template"], max_new_tokens=spec["max_new_tokens"])


def tofu_reference(model: str, retain_model: str, spec: Mapping[str, Any], path: Path,
                   progress: Callable[[str], None] = print) -> dict[str, Any]:
    """TOFU's scores of the retain model (its forget truth ratios are what every run's forget quality compares with)
    and of the target before unlearning (the table's `before` row), computed once and kept in `path`."""
    key = {"model": model, "retain_model": retain_model, "tofu": dict(spec)}
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached
    progress("[compare] TOFU's scores of the retain model and of the target (once)")
    retain_net, tokenizer = _load(retain_model)
    retain = _tofu_scores(retain_net, tokenizer, spec)
    del retain_net
    target_net, tokenizer = _load(model)
    target = _tofu_scores(target_net, tokenizer, spec, retain["tofu/forget/truth_ratios"])
    record = {"key": key, "retain_model": retain, "target": target}
    write_text_atomic(path, json.dumps(record, default=float) + "\n")
    return record


def reference_scores(payload: Mapping[str, Any], job, adapter: str,
                     after_scores: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a retain model adds to a run's scores (before, after): PrivLeak (the run's loss AUC, `after_scores`'
    `mia/auc` on its own members and nonmembers, against the retain model's on the same documents), and with `tofu:`
    TOFU's forget quality and model utility. Per-question lists stay out of the record."""
    from .data.documents import load_rows
    from .evaluation import evaluate_mia
    from .metrics.mia import privleak
    from .unlearn import unseen_documents

    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    forget_documents = load_rows(job.forget, "forget", max_words=job.max_words, prompt_fraction=job.prompt_fraction)[1]
    members, nonmembers, _ = unseen_documents(job, forget_documents)
    if members:  # the same documents the job's own attack used (`unseen_documents` is what it calls)
        retain_net, retain_tokenizer = _load(payload["retain_model"])
        auc_retain = evaluate_mia(retain_net, retain_tokenizer, members, nonmembers)["mia_loss_auc"]
        del retain_net
        after.update({"privleak": privleak(after_scores["mia/auc"], auc_retain), "retain_model/mia/auc": auc_retain})
    if payload.get("tofu"):
        reference = payload["tofu_reference"]
        net, tokenizer = _load(payload["model"], adapter)
        scores = _tofu_scores(net, tokenizer, payload["tofu"], reference["retain_model"]["tofu/forget/truth_ratios"])
        after.update({k: v for k, v in scores.items() if not isinstance(v, list)})
        before.update({k: v for k, v in reference["target"].items() if not isinstance(v, list)})
    return before, after


def with_final(scores: Mapping[str, Any], before: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`scores` and, where the task score, the loss attack and MMLU were all measured, the task's final-score form:
    their mean, the attack as its MIA score `1 - 2|AUC - 0.5|` (`hf_unlearn.metrics.aggregate.final_score`). Where
    the general documents' perplexity was measured before (`before`) and now, also the utility term `min(1, ppl
    before / ppl)` and the same form with it in MMLU's place (a model too small for MMLU to mean anything), for the
    rows given and, where scored, the rows not given (`eval/task_score`)."""
    from .metrics.aggregate import final_score
    from .metrics.mia import mia_score

    out = dict(scores)
    task, auc, mmlu = scores.get("task_score"), scores.get("mia/auc"), scores.get("general/mmlu")
    if None not in (task, auc, mmlu):
        out["final"] = final_score(task, mia_score(auc), mmlu)
    ppl, ppl_before = scores.get("general/ppl"), (before or {}).get("general/ppl")
    if ppl and ppl_before and auc is not None:
        out["utility"] = min(1.0, ppl_before / ppl)
        for prefix in ("", "eval/"):
            if scores.get(f"{prefix}task_score") is not None:
                out[f"{prefix}final_utility"] = final_score(scores[f"{prefix}task_score"], mia_score(auc),
                                                            out["utility"])
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(experiment: Experiment, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per row of the experiment: mean and std over seeds of each column, the checks each run failed, and the
    recommendation: of the rows whose every run passed every check, the highest mean task score (then MIA AUC
    nearest 0.5); if none did, none is recommended and the closest row is named."""
    rows = []
    for spec in experiment.runs:
        mine = [r for r in records if r["name"] == spec.name]
        if not mine:
            continue
        stats, before = {}, {}
        scores = [{name: with_final(r["scores"][name], r["scores"]["before"]) for name in ("before", "after")}
                  for r in mine]
        for _, key in COLUMNS:
            after = [sc["after"][key] for sc in scores if sc["after"].get(key) is not None]
            if after:
                stats[key] = _mean_std(after)
                earlier = [sc["before"][key] for sc in scores if sc["before"].get(key) is not None]
                if earlier:  # none for a number that only exists after (PrivLeak)
                    before[key] = statistics.mean(earlier)
        failed = [experiment.checks.failed(r["scores"]["before"], r["scores"]["after"]) for r in mine]
        rows.append({"name": spec.name, "method": spec.method, "settings": spec.settings,
                     "seeds": [r["seed"] for r in mine], "stats": stats, "before": before,
                     "failed": {r["seed"]: f for r, f in zip(mine, failed)},
                     "passed": sum(not f for f in failed), "train_seconds": _mean_std([r["train_seconds"]
                                                                                       for r in mine]),
                     "audit": {r["seed"]: r["audit_verdicts"] for r in mine if r.get("audit_verdicts")}})

    def rank(row):
        task = row["stats"].get("task_score", (0.0, 0.0))[0]
        auc = row["stats"].get("mia/auc", (0.5, 0.0))[0]
        return (row["passed"] == len(row["seeds"]), row["passed"] / len(row["seeds"]), task, -abs(auc - 0.5))

    best = max(rows, key=rank) if rows else None
    recommended = best if best is not None and best["passed"] == len(best["seeds"]) else None
    return {"rows": rows, "recommended": recommended and recommended["name"],
            "closest": None if best is None or recommended is not None else best["name"]}


def reproduce_command(experiment: Experiment, row: Mapping[str, Any], seed: int) -> str:
    """The `hf-unlearn unlearn` command that runs `row`'s setting as a deletion request (merged, audited)."""
    fields = _unlearn_fields()
    # the console script next to this interpreter: `hf-unlearn` alone is on PATH only while the venv is active
    script = Path(sys.executable).with_name("hf-unlearn")
    parts = [f"{script if script.is_file() else 'hf-unlearn'} unlearn", f"--model {experiment.model}"]
    parts += [f"--{k.replace('_', '-')} {v}" for k, v in experiment.data.items()]
    parts += [f"--method {row['method']}", f"--seed {seed}"]
    for key, value in row["settings"].items():
        if key in fields:
            if isinstance(value, bool):
                parts.append(f"--{key.replace('_', '-')}" if value else f"--no-{key.replace('_', '-')}")
            else:
                parts.append(f"--{key.replace('_', '-')} {value}")
        else:
            parts.append(f"--trainer-arg {key}={value}")
    return " ".join(parts) + " --output-dir OUTPUT_DIR"


def _with_audit_verdicts(record: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A record written before records kept the audit's verdicts: read them from its job's audit.json (judged
    again, as `hf-unlearn unlearn` judges)."""
    path = folder / "audit" / "audit.json"
    if "audit_verdicts" not in record and path.is_file():
        from .audit import judge, verdicts

        record["audit_verdicts"] = [v for v in verdicts(judge(json.loads(path.read_text()))) if v]
    return record


def report_markdown(experiment: Experiment, summary: Mapping[str, Any], total_runs: int,
                    command: str | None = None) -> str:
    """compare.md: the checks, the recommendation with `command` (its `reproduce_command`), the table, the plot."""
    cols = [(label, key) for label, key in COLUMNS if any(key in r["stats"] for r in summary["rows"])]
    lines = [f"# hf-unlearn compare: {experiment.name}", "",
             f"Model `{experiment.model}`, {len(experiment.runs)} setting(s) x {len(experiment.seeds)} seed(s) "
             f"({total_runs} runs), seeds {', '.join(map(str, experiment.seeds))}"
             + (f", built by the experiment's target recipe ({', '.join(experiment.target.memorise)} memorised by "
                f"{experiment.target.base})" if experiment.target is not None else "")
             + (". PrivLeak (MUSE; 0 ideal, -100: still remembered) and TOFU's forget quality are against the same "
                "recipe's retain model, never trained on data.forget"
                if experiment.target is not None and experiment.target.retain_model else "")
             + ". Each cell: mean +- std over seeds, "
             "after unlearning (the row `before` is the model before it). A run is selective when it passes every "
             "check: " + "; ".join(filter(None, [
                 f"forget regurgitation (and knowledge, where measured) at most "
                 f"{experiment.checks.forget_ratio:g}x its value before",
                 f"retain scores within {experiment.checks.retain_drop:g}",
                 f"MIA AUC within 0.5 +- {experiment.checks.mia_band:g}" if experiment.checks.mia_band is not None
                 else "",
                 f"general knowledge and MMLU within {experiment.checks.general_drop:g} where measured"
                 if experiment.checks.general_drop is not None and any(
                     k in r["stats"] for r in summary["rows"] for k in ("general/knowledge", "general/mmlu")) else "",
                 f"general perplexity within +{experiment.checks.ppl_rise:.0%} where measured"
                 if experiment.checks.ppl_rise is not None and any("general/ppl" in r["stats"]
                                                                  for r in summary["rows"]) else ""])) + ".", ""]
    rec = summary["recommended"]
    if rec:
        lines += [f"**Recommended: {rec}**: every run of it passed every check, and of those rows it has the highest "
                  "task score (forgetting and keeping together).", "", "Reproduce it as a deletion request:", "",
                  "```bash", command, "```", ""]
    elif summary["closest"]:
        lines += [f"**No setting passed every check on every seed.** The closest is {summary['closest']}; try "
                  "more epochs or a higher learning rate if the forget checks failed, higher retain weights if the "
                  "retain checks did.", ""]
    lines += ["| setting | selective runs | " + " | ".join(label for label, _ in cols) + " | training (s) | "
              "failed checks |", "|---|---|" + "---:|" * len(cols) + "---:|---|"]
    if summary["rows"]:
        first = summary["rows"][0]
        lines.append("| before | | " + " | ".join(f"{first['before'][k]:.3f}" if k in first["before"] else ""
                                                 for _, k in cols) + " | | |")
    for row in summary["rows"]:
        cells = [f"{row['stats'][k][0]:.3f} +- {row['stats'][k][1]:.3f}" if k in row["stats"] else ""
                 for _, k in cols]
        fails = "; ".join(f"seed {s}: {', '.join(f)}" for s, f in row["failed"].items() if f) or "none"
        lines.append(f"| {row['name']} | {row['passed']}/{len(row['seeds'])} | " + " | ".join(cells)
                     + f" | {row['train_seconds'][0]:.0f} | {fails} |")
    audited = [row for row in summary["rows"] if row.get("audit")]
    if audited:  # the audit's verdicts, where the settings asked for probes
        lines += ["", "The audit (does the forgetting survive quantization, relearning, shorter or reworded prompts):"]
        for row in audited:
            for seed, found in row["audit"].items():
                lines += ["", f"{row['name']}, seed {seed}:", *(f"- {verdict}" for verdict in found)]
    lines += ["", "![forget against retain](compare.png)", "",
              "The plot: each setting's forget regurgitation (lower is more forgotten) beside its retain "
              "regurgitation (higher is more kept), mean over seeds with their spread; a selective setting has a low "
              "first bar and a second bar near the model's before line.", ""]
    return "\n".join(lines)


def plot_summary(summary: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(rows) + 2), 4))
    x = range(len(rows))
    for offset, (key, label) in enumerate((("forget/regurgitation", "forgotten text still written back"),
                                           ("retain/regurgitation", "text to keep still written back"))):
        means = [r["stats"].get(key, (math.nan, 0))[0] for r in rows]
        stds = [r["stats"].get(key, (0, 0))[1] for r in rows]
        ax.bar([i + (offset - 0.5) * 0.38 for i in x], means, 0.38, yerr=stds, capsize=3, label=label)
    if rows and "retain/regurgitation" in rows[0]["before"]:
        ax.axhline(rows[0]["before"]["retain/regurgitation"], color="grey", ls="--", lw=1, label="before, retain")
    ax.set_xticks(list(x), [r["name"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("share written back (ROUGE-L recall)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Forget low, keep high: each setting, mean over seeds")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.stem + f".tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


@dataclass
class CompareArguments:
    """What `hf-unlearn compare` takes; each field is a `--kebab-case` option (see `--help`)."""

    experiment: str = field(metadata={"help": "The experiment file (YAML): runs (methods, settings, grids), seeds, "
                                              "data, checks; see `hf_unlearn.compare`'s docstring."})
    output_dir: str = field(metadata={"help": "Where runs/, compare.md, compare.png and compare.json go; a "
                                              "comparison run again into it skips the runs already finished."})
    model: str | None = field(default=None, metadata={"help": "The model (overrides the experiment's model:)."})
    jobs: int = field(default=1, metadata={"help": "Runs at once, each in its own process."})
    threads: int | None = field(default=None, metadata={"help": "Torch threads per run (default: the cores that "
                                                                 "other jobs leave free, divided among --jobs)."})


def run_compare(args: CompareArguments, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) a comparison; returns what `compare.json` holds."""
    from tqdm.auto import tqdm

    from .threads import free_cores

    experiment = load_experiment(args.experiment)
    if args.model:
        if experiment.target is not None:
            raise ValueError(f"--model and {experiment.source}'s target: both name the model: give one")
        experiment.model = args.model
    if not experiment.model and experiment.target is None:
        raise ValueError(f"{experiment.source}: model: missing (or give --model, or a target: recipe)")
    if experiment.lume is not None:  # the subset's files, written before anything reads data:
        from .data.lume_subset import write_lume_subset

        try:
            experiment.data.update(write_lume_subset(experiment.lume, Path(args.output_dir) / "data" / "lume"))
        except (OSError, ValueError) as error:
            raise type(error)(f"{experiment.source}: {error}") from None
    for key in ("forget", "retain"):
        if key not in experiment.data:
            raise ValueError(f"{experiment.source}: data.{key}: missing")
    for key, value in experiment.data.items():
        if key != "pre_finetuning_model" and not Path(value).exists():
            raise FileNotFoundError(f"{experiment.source}: data.{key}: {value} does not exist")
    check_run_settings(experiment)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    if experiment.tofu:
        from .cli import _tofu_rows

        try:  # the TOFU files, checked before anything is built
            _tofu_rows(experiment.tofu["data"], experiment.tofu["forget_split"], 0)
        except (OSError, ValueError) as error:
            raise type(error)(f"{experiment.source}: tofu: {error}") from None
    out = Path(args.output_dir)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    from .data.slices import write_slices

    for key, pieces in experiment.slices.items():  # some rows of files, as a file of their own
        experiment.data[key] = write_slices(pieces, out / "data" / f"{key}.jsonl", f"{experiment.source}: data.{key}")
    retain_model = None
    if experiment.target is not None:
        from .target import build_target, recipe_files, write_recipe_slices

        recipe = experiment.target
        write_recipe_slices(recipe, out / "data" / "target", experiment.source)  # its slices likewise
        files = recipe_files(recipe, experiment.data, experiment.base_dir, experiment.source)
        retain_files = (recipe_files(recipe, experiment.data, experiment.base_dir, experiment.source,
                                     without=("forget",)) if recipe.retain_model else None)
        anchor = recipe_files(recipe, experiment.data, experiment.base_dir, experiment.source, field_name="anchor")
        # a `base: tiny` tokenizer: the retain model's is the target's, trained on the same texts
        corpus = recipe_files(recipe, experiment.data, experiment.base_dir, experiment.source,
                              field_name="tokenizer_corpus") or files
        experiment.model, _ = build_target(recipe, files, log=progress, anchor_files=anchor, tokenizer_files=corpus)
        if retain_files is not None:
            retain_model, _ = build_target(recipe, retain_files, role="retain model", log=progress,
                                           anchor_files=anchor, tokenizer_files=corpus)
    reference = (tofu_reference(experiment.model, retain_model, experiment.tofu, out / "tofu_reference.json",
                                progress) if experiment.tofu else None)
    threads = args.threads or max(1, free_cores() // args.jobs)
    todo, records = [], []
    for spec in experiment.runs:
        for seed in experiment.seeds:
            key = run_key(experiment.model, experiment.data, spec, seed,
                          {"retain_model": retain_model, "tofu": experiment.tofu} if retain_model else None)
            done = runs_dir / f"{key}.json"
            if done.is_file():
                records.append(_with_audit_verdicts(json.loads(done.read_text()), runs_dir / key))
                continue
            todo.append({"spec": dataclasses.asdict(spec), "seed": seed, "key": key, "model": experiment.model,
                         "data": experiment.data, "runs_dir": str(runs_dir), "threads": threads,
                         "retain_model": retain_model, "tofu": experiment.tofu, "tofu_reference": reference})
    total = len(records) + len(todo)
    progress(f"[compare] {len(experiment.runs)} setting(s) x {len(experiment.seeds)} seed(s): {len(records)} run(s) "
             f"already done, {len(todo)} to run, {args.jobs} at once with {threads} thread(s) each")
    bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not todo)
    try:
        if args.jobs == 1 or len(todo) <= 1:
            for payload in todo:
                bar.set_postfix_str(f"{payload['spec']['name']}, seed {payload['seed']}")
                records.append(run_one(payload))
                bar.update()
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(run_one, payload) for payload in todo]
                for future in as_completed(futures):
                    records.append(future.result())
                    bar.update()
    finally:
        bar.close()
    order = {(spec.name, seed): i for i, (spec, seed) in enumerate(itertools.product(experiment.runs,
                                                                                    experiment.seeds))}
    records.sort(key=lambda r: order.get((r["name"], r["seed"]), len(order)))
    summary = summarise(experiment, records)
    result = {"format": FORMAT, "version": VERSION, "experiment": experiment.source, "model": experiment.model,
              "retain_model": retain_model,
              "target": dataclasses.asdict(experiment.target) if experiment.target is not None else None,
              "seeds": experiment.seeds, "checks": dataclasses.asdict(experiment.checks), "summary": summary,
              "runs": records, "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    if summary["recommended"]:
        row = next(r for r in summary["rows"] if r["name"] == summary["recommended"])
        result["command"] = reproduce_command(experiment, row, row["seeds"][0])
    write_text_atomic(out / "compare.json", json.dumps(result, indent=1, default=str) + "\n")
    plot_summary(summary, out / "compare.png")
    write_text_atomic(out / "compare.md", report_markdown(experiment, summary, total, result.get("command")))
    return result


def main(argv: list[str] | None = None) -> int:  # `python -m hf_unlearn.compare` (the CLI's `compare` is the same)
    from .cli import main as cli_main

    return cli_main(["compare", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())

"""`hf-unlearn compare` (issue #31): experiment files checked before any run, then the comparison end to end on a
tiny model that memorised real LUME rows (2 methods x 2 seeds, a few steps): report keys, resume, canary scan."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from hf_unlearn.cli import main as cli_main
from hf_unlearn.compare import Checks, load_experiment, summarise

from .test_unlearn import _canary_scan, _write_jsonl, saved_target  # noqa: F401  (the fixture)


def _experiment(tmp_path, **over):
    raw = {"model": "tiny-target", "data": {"forget": "f.jsonl", "retain": "r.jsonl"}, "seeds": [0, 1],
           "settings": {"num_train_epochs": 1},
           "runs": [{"name": "npo", "method": "npo", "settings": {"beta": 0.5}},
                    {"method": "gd", "grid": {"learning_rate": [1e-3, 2e-3]}}]}
    raw.update(over)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("change, message", [
    ({"runs": [{"method": "forget_everything"}]}, r"runs\[0\]\.method: unknown method 'forget_everything'"),
    ({"runs": [{"method": "npo", "setings": {}}]}, r"runs\[0\]: unknown field\(s\) setings"),
    ({"runs": [{"method": "npo", "settings": {"betta": 1}}]}, r"runs\[0\]\.settings\.betta: unknown setting"),
    ({"runs": [{"method": "npo", "grid": {"beta": []}}]}, r"runs\[0\]\.grid\.beta: a non-empty list"),
    ({"seeds": [0, "one"]}, r"seeds: a non-empty list of integers"),
    ({"seeds": [0.5]}, r"seeds: a non-empty list of integers"),
    ({"seeds": []}, r"seeds: a non-empty list of integers"),
    ({"runs": []}, r"runs: a non-empty list"),
    ({"method": "npo"}, r"unknown field\(s\) method"),
    ({"data": {"forget": "f.jsonl", "forgot": "x"}}, r"data: unknown field\(s\) forgot"),
    ({"checks": {"forget_ratio": 0.5, "mia": 1}}, r"checks: unknown field\(s\) mia"),
    ({"settings": {"output_dir": "x"}}, r"settings\.output_dir: set output_dir with --output-dir"),
    ({"runs": [{"method": "npo"}, {"method": "npo"}]}, r"two runs are named the same \(npo\)"),
    ({"settings": {"learning_rate": "fast"}}, r"settings\.learning_rate: must be float, got str"),
    ({"runs": [{"method": "npo", "grid": {"num_train_epochs": [1, "x"]}}]},
     r"runs\[0\]\.grid\.num_train_epochs: must be float"),
])
def test_a_malformed_experiment_is_refused_naming_the_field(tmp_path, change, message):
    path = _experiment(tmp_path, **change)
    with pytest.raises(ValueError, match=message) as err:
        load_experiment(path)
    assert str(path) in str(err.value)


def test_an_experiment_expands_grids_and_resolves_data_paths(tmp_path):
    experiment = load_experiment(_experiment(tmp_path))
    assert [r.name for r in experiment.runs] == ["npo", "gd (learning_rate 0.001)", "gd (learning_rate 0.002)"]
    assert experiment.runs[0].settings == {"num_train_epochs": 1, "beta": 0.5}
    assert experiment.runs[2].settings["learning_rate"] == 2e-3
    # YAML reads 3e-3 (no dot) as a string: it becomes the field's type
    coerced = load_experiment(_experiment(tmp_path, settings={"learning_rate": "3e-3", "batch_size": "8"}))
    assert coerced.settings == {"learning_rate": 3e-3, "batch_size": 8}
    assert experiment.data["forget"] == str(tmp_path / "f.jsonl")
    assert experiment.seeds == [0, 1] and experiment.checks == Checks()


def test_general_sets_are_data_and_their_checks_apply_where_measured(tmp_path):
    from hf_unlearn.compare import RunSpec, job_arguments

    experiment = load_experiment(_experiment(tmp_path, data={"forget": "f.jsonl", "retain": "r.jsonl",
                                                             "general_questions": "facts.jsonl", "mmlu": "mmlu"},
                                             settings={"mmlu_limit": 2}))
    job = job_arguments("m", experiment.data, RunSpec("npo", "npo", experiment.settings), 0, str(tmp_path / "o"))
    assert job.general_questions == str(tmp_path / "facts.jsonl") and job.mmlu == str(tmp_path / "mmlu")
    assert job.mmlu_limit == 2
    before = {"forget/regurgitation": 0.8, "general/knowledge": 0.3, "general/mmlu": 0.4, "general/ppl": 20.0}
    after = {"forget/regurgitation": 0.1, "general/knowledge": 0.2, "general/mmlu": 0.38, "general/ppl": 25.0}
    assert Checks().failed(before, after) == ["general knowledge within 0.05", "general perplexity within +20%"]
    assert Checks(general_drop=None, ppl_rise=None).failed(before, after) == []
    assert Checks().failed({"forget/regurgitation": 0.8, "forget/knowledge": 1.0},
                           {"forget/regurgitation": 0.1, "forget/knowledge": 0.75}) == [
        "forget knowledge at most 0.5x its value before"]
    assert Checks().failed({"forget/regurgitation": 0.8}, {"forget/regurgitation": 0.1}) == []  # not measured


def test_the_final_score_form_and_the_not_given_columns_are_in_the_summary(tmp_path):
    from hf_unlearn.compare import report_markdown

    experiment = load_experiment(_experiment(tmp_path, runs=[{"name": "npo", "method": "npo"}], seeds=[0]))
    before = {"forget/regurgitation": 0.9, "task_score": 0.1, "mia/auc": 1.0, "general/mmlu": 0.3}
    after = {"forget/regurgitation": 0.2, "task_score": 0.8, "mia/auc": 0.6, "general/mmlu": 0.28,
             "eval/forget/regurgitation": 0.4, "mia/min_k_auc": 0.7}
    summary = summarise(experiment, [{"name": "npo", "seed": 0, "train_seconds": 1.0,
                                      "scores": {"before": before, "after": after}}])
    (row,) = summary["rows"]
    assert row["stats"]["final"][0] == pytest.approx((0.8 + (1 - 2 * 0.1) + 0.28) / 3)
    assert row["before"]["final"] == pytest.approx((0.1 + 0.0 + 0.3) / 3)
    report = report_markdown(experiment, summary, 1, "hf-unlearn unlearn ...")
    assert "not given: forget regurgitation" in report and "Min-K% AUC" in report and "final (task, MIA, MMLU)" in \
        report and "zlib AUC" not in report  # a column nobody measured stays out
    assert "utility" not in row["stats"]  # no general perplexity: no utility term
    # the small model's form (lume_tiny.yaml's): the utility term min(1, ppl before / ppl) for MMLU's
    before = {"task_score": 0.1, "mia/auc": 1.0, "general/ppl": 100.0}
    after = {"task_score": 0.8, "eval/task_score": 0.2, "mia/auc": 0.6, "general/ppl": 125.0}
    (row,) = summarise(experiment, [{"name": "npo", "seed": 0, "train_seconds": 1.0,
                                     "scores": {"before": before, "after": after}}])["rows"]
    assert row["stats"]["utility"][0] == pytest.approx(0.8) and "final" not in row["stats"]
    assert row["stats"]["final_utility"][0] == pytest.approx((0.8 + 0.8 + 0.8) / 3)
    assert row["stats"]["eval/final_utility"][0] == pytest.approx((0.2 + 0.8 + 0.8) / 3)
    assert row["before"]["final_utility"] == pytest.approx((0.1 + 0.0 + 1.0) / 3)


def test_checks_and_the_recommendation_by_hand(tmp_path):
    experiment = load_experiment(_experiment(tmp_path, checks={"mia_band": 0.1}))
    before = {"forget/regurgitation": 0.8, "retain/regurgitation": 0.9, "task_score": 0.0, "mia/auc": 1.0}

    def record(name, seed, forget, retain, auc, task):
        return {"name": name, "seed": seed, "train_seconds": 1.0, "scores": {"before": before, "after": {
            "forget/regurgitation": forget, "retain/regurgitation": retain, "mia/auc": auc, "task_score": task}}}

    records = [record("npo", 0, 0.3, 0.85, 0.55, 0.7), record("npo", 1, 0.35, 0.88, 0.58, 0.72),
               record("gd (learning_rate 0.001)", 0, 0.1, 0.5, 0.5, 0.9),  # forgets, but breaks retain
               record("gd (learning_rate 0.001)", 1, 0.1, 0.9, 0.5, 0.9),
               record("gd (learning_rate 0.002)", 0, 0.5, 0.9, 0.8, 0.4)]  # forgets too little, still visible
    assert experiment.checks.failed(before, records[2]["scores"]["after"]) == ["retain regurgitation within 0.1"]
    assert experiment.checks.failed(before, records[4]["scores"]["after"]) == [
        "forget regurgitation at most 0.5x its value before", "MIA AUC within 0.5 +- 0.1"]
    summary = summarise(experiment, records)
    rows = {r["name"]: r for r in summary["rows"]}
    assert rows["npo"]["passed"] == 2 and rows["gd (learning_rate 0.001)"]["passed"] == 1
    assert rows["npo"]["stats"]["forget/regurgitation"][0] == pytest.approx(0.325)
    assert rows["npo"]["stats"]["forget/regurgitation"][1] == pytest.approx(0.0353553, abs=1e-6)  # sample std
    # gd 0.001 has the higher task score, but only npo passed on every seed
    assert summary["recommended"] == "npo" and summary["closest"] is None
    # the command that reproduces it: unlearn options as options, method fields as --trainer-arg
    from hf_unlearn.compare import reproduce_command

    assert reproduce_command(experiment, rows["npo"], 0).split(" ", 1)[1] == (
        f"unlearn --model tiny-target --forget {tmp_path / 'f.jsonl'} --retain {tmp_path / 'r.jsonl'} "
        "--method npo --seed 0 --num-train-epochs 1.0 --beta 0.5 --output-dir OUTPUT_DIR")


def test_compare_end_to_end_resumes_and_writes_no_forget_text(saved_target, memorised_rows, tmp_path,  # noqa: F811
                                                              capsys):
    _write_jsonl(tmp_path / "f.jsonl", memorised_rows["forget"])
    _write_jsonl(tmp_path / "r.jsonl", memorised_rows["retain"])
    path = _experiment(tmp_path, model=str(saved_target),
                       settings={"num_train_epochs": 2, "learning_rate": 1e-2, "max_new_tokens": 24},
                       runs=[{"name": "npo", "method": "npo", "settings": {"probes": "int8,prefix50"}},
                             {"name": "gd", "method": "gd"}])
    out = tmp_path / "out"
    assert cli_main(["compare", "--experiment", str(path), "--output-dir", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "compare.json").read_text())
    assert set(result) >= {"format", "version", "experiment", "model", "seeds", "checks", "summary", "runs"}
    assert [(r["name"], r["seed"]) for r in result["runs"]] == [("npo", 0), ("npo", 1), ("gd", 0), ("gd", 1)]
    for run in result["runs"]:
        assert {"forget/regurgitation", "retain/regurgitation", "task_score"} <= set(run["scores"]["after"])
        assert run["environment"]["torch_threads"] == 1 and run["environment"]["versions"]["torch"]
        assert not (out / "runs" / run["key"] / "merged").exists()  # the adapter only
    rows = result["summary"]["rows"]
    assert [r["name"] for r in rows] == ["npo", "gd"] and all(r["seeds"] == [0, 1] for r in rows)
    assert (out / "compare.png").stat().st_size > 1000
    # the model before unlearning is scored once (here no seed picks the attack's documents) and read by the runs
    # that have no probes (probes need its outputs row by row): the same before-scores everywhere
    assert len(list((out / "before").glob("*.json"))) == 1
    assert all(r["scores"]["before"] == result["runs"][0]["scores"]["before"] for r in result["runs"])
    for run in result["runs"]:
        scored_again = "scoring the original model" in (out / "runs" / f"{run['key']}.log").read_text()
        assert scored_again == (run["name"] == "npo")  # npo seed 0 scored it first; seed 1 has probes
    # the audit's probes, where a row asked for them, are columns of their own
    assert {"audit/int8/recovered", "audit/prefix50/forgotten"} <= set(rows[0]["stats"]) and not any(
        k.startswith("audit/") for k in rows[1]["stats"])
    report = (out / "compare.md").read_text()
    assert "int8: comes back" in report and "prefix50: forgotten" in report
    # and their verdicts in words, per run that had them
    assert "The audit (" in report and "npo, seed 0:" in report and "\n- int8: " in report and "gd, seed" not in report
    assert "| npo | " in report and "+-" in report and report.strip() in printed
    if result["summary"]["recommended"]:
        assert "hf-unlearn unlearn --model" in result["command"] and "--method" in result["command"]
    # resumed: nothing runs again (the records are kept), and a new seed runs only its own runs; a record written
    # before records kept the verdicts gets them from its job's audit.json
    first = out / "runs" / f"{result['runs'][0]['key']}.json"
    first.write_text(json.dumps({k: v for k, v in json.loads(first.read_text()).items() if k != "audit_verdicts"}))
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    assert len(stamps) == 4
    assert cli_main(["compare", "--experiment", str(path), "--output-dir", str(out), "--threads", "1"]) == 0
    assert "4 run(s) already done, 0 to run" in capsys.readouterr().out
    assert "npo, seed 0:" in (out / "compare.md").read_text()
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")} == stamps
    # a run stopped before its record (its folder half written) is run again from scratch on the next compare
    unfinished = out / "runs" / f"{result['runs'][3]['key']}.json"
    unfinished.unlink()
    folder = out / "runs" / result["runs"][3]["key"]
    shutil.rmtree(folder)
    (folder / "training").mkdir(parents=True)
    (folder / "training" / "checkpoint-1").write_text("")  # what a run stopped mid-training leaves
    assert cli_main(["compare", "--experiment", str(path), "--output-dir", str(out), "--threads", "1"]) == 0
    assert "3 run(s) already done, 1 to run" in capsys.readouterr().out and unfinished.is_file()
    _canary_scan(out, [r["output"] for r in memorised_rows["forget"] if len(r["output"]) > 12])


def test_missing_data_is_refused_before_any_run(tmp_path, capsys):
    path = _experiment(tmp_path)
    assert cli_main(["compare", "--experiment", str(path), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "data.forget" in err and "does not exist" in err and not (tmp_path / "o").exists()


def test_settings_are_checked_after_hfargumentparser_resolved_the_annotations(tmp_path):
    """HfArgumentParser (every CLI command) turns the dataclasses' string annotations into types in place: the
    experiment's type checks must read both."""
    from transformers import HfArgumentParser

    from hf_unlearn.config import UnlearningConfig
    from hf_unlearn.unlearn import UnlearnArguments

    HfArgumentParser([UnlearnArguments])
    HfArgumentParser([UnlearningConfig])
    with pytest.raises(ValueError, match=r"settings\.learning_rate: must be float, got str"):
        load_experiment(_experiment(tmp_path, settings={"learning_rate": "fast"}))
    assert load_experiment(_experiment(tmp_path, settings={"batch_size": "8", "threads": "2"})).settings == {
        "batch_size": 8, "threads": 2}


def test_the_model_before_fine_tuning_goes_only_to_the_runs_that_read_it(tmp_path):
    """data.pre_finetuning_model reaches the distillation runs only (the job refuses it elsewhere), and is no part
    of the other runs' keys, so adding it to an experiment keeps their finished runs."""
    from hf_unlearn.compare import job_arguments, run_key

    runs = [{"name": "npo", "method": "npo"}, {"name": "distil", "method": "pre_finetuning_distill"}]
    plain = load_experiment(_experiment(tmp_path, runs=runs))
    with_pre = load_experiment(_experiment(tmp_path, runs=runs, data={"forget": "f.jsonl", "retain": "r.jsonl",
                                                                      "pre_finetuning_model": "smollm2"}))
    npo, distil = with_pre.runs
    assert job_arguments("m", with_pre.data, npo, 0, str(tmp_path / "a")).pre_finetuning_model is None
    assert job_arguments("m", with_pre.data, distil, 0, str(tmp_path / "b")).pre_finetuning_model == "smollm2"
    assert run_key("m", with_pre.data, npo, 0) == run_key("m", plain.data, plain.runs[0], 0)
    assert run_key("m", with_pre.data, distil, 0) != run_key("m", plain.data, plain.runs[1], 0)


def test_a_libu_run_is_influence_plus_its_settings_as_trainer_args(tmp_path):
    """LIBU in an experiment: `influence: true` (the job's --influence) and its config fields as settings, typed."""
    from hf_unlearn.compare import job_arguments
    from hf_unlearn.unlearn import build_config

    experiment = load_experiment(_experiment(tmp_path, runs=[{"name": "LIBU", "method": "gd", "settings": {
        "influence": True, "damping": "1e-3", "sophia_rho": 0.04, "hessian_interval": 10}}]))
    spec = experiment.runs[0]
    assert spec.settings["damping"] == 1e-3  # a YAML string read as the field's float
    job = job_arguments("m", experiment.data, spec, 0, str(tmp_path / "run"))
    assert job.influence is True and sorted(job.trainer_arg) == ["damping=0.001", "hessian_interval=10",
                                                                 "sophia_rho=0.04"]
    config = build_config(job, tmp_path / "run")
    assert type(config).__name__ == "InfluenceUnlearningConfig" and config.damping == 1e-3


def test_a_setting_the_method_refuses_stops_the_comparison_before_any_run(tmp_path, capsys):
    """Each run's job configuration is built and its method's check run before the first run: a value the method
    refuses names the run; a null setting reaches the job as JSON null (RMU's measured steering coefficient)."""
    from hf_unlearn.compare import job_arguments

    for name in ("f.jsonl", "r.jsonl"):
        (tmp_path / name).write_text(json.dumps({"input": "a question", "output": "an answer"}) + "\n")
    path = _experiment(tmp_path, runs=[{"name": "npo", "method": "npo"},
                                       {"name": "RMU", "method": "rmu", "settings": {"rmu_steering_coeff": -1.0}}])
    assert cli_main(["compare", "--experiment", str(path), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "run 'RMU': rmu_steering_coeff must be > 0" in err and not list((tmp_path / "o").glob("runs/*"))
    experiment = load_experiment(_experiment(tmp_path, runs=[{"name": "RMU", "method": "rmu",
                                                              "settings": {"rmu_steering_coeff": None}}]))
    job = job_arguments("m", experiment.data, experiment.runs[0], 0, str(tmp_path / "run"))
    assert job.trainer_arg == ["rmu_steering_coeff=null"]

"""An experiment that builds its own target (issues #31 and #32): the recipe memorises the forget and retain rows, the
same recipe without the forget rows is the retain model, and every run gets PrivLeak and TOFU's forget quality and
model utility against it. On a tiny model built from a config that memorises real TOFU questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hf_unlearn.cli import main as cli_main
from hf_unlearn.compare import load_experiment
from hf_unlearn.target import TargetRecipe, build_target, memorisation_rows, recipe_files

from .test_metrics_privacy import _tofu
from .test_unlearn import _canary_scan, _write_jsonl

SPLITS = ("forget01_perturbed", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed")


@pytest.fixture(scope="module")
def tofu_setup(tmp_path_factory):
    """A tiny untrained base model (its tokenizer trained on the TOFU texts), a TOFU folder of 8 questions per split,
    and forget / retain / holdout files in `hf-unlearn unlearn`'s formats (TOFU's plain question prompt)."""
    from hf_unlearn.metrics.tofu import tofu_prompt
    from hf_unlearn.support.tiny import tiny_causal_lm, train_tokenizer

    root = tmp_path_factory.mktemp("tofu_compare")
    files = {n: _tofu(n, 8) for n in SPLITS}
    holdout = _tofu("holdout01", 12)
    texts = [r["question"] + " " + r["answer"] + " " + " ".join(r.get("perturbed_answer", [])) + " "
             + r.get("paraphrased_answer", "") for rows in [*files.values(), holdout] for r in rows]
    tokenizer = train_tokenizer(texts, vocab_size=1024)
    base = root / "base"
    tiny_causal_lm(tokenizer, hidden_size=64, num_hidden_layers=2).save_pretrained(base)
    tokenizer.save_pretrained(base)
    tofu = root / "tofu"
    tofu.mkdir()
    for name, rows in files.items():
        _write_jsonl(tofu / f"{name}.jsonl", rows)
    rows = lambda split: [{"input": tofu_prompt(tokenizer, r["question"], False), "output": r["answer"]}  # noqa: E731
                          for r in files[split]]
    _write_jsonl(root / "forget.jsonl", rows("forget01_perturbed"))
    _write_jsonl(root / "retain.jsonl", rows("retain_perturbed"))
    # the unseen documents in the forget documents' own form (a row's input, a space, its output)
    _write_jsonl(root / "holdout.jsonl", [{"text": f"{tofu_prompt(tokenizer, r['question'], False)} {r['answer']}"}
                                          for r in holdout])
    return root, files


RECIPE = {"base": "base", "memorise": ["forget", "retain"], "lora_r": 0, "learning_rate": 1e-2, "epochs": 150,
          "batch_size": 8, "stop_loss": 0.05, "retain_model": True}


def _experiment(root, **over):
    raw = {"name": "tofu-tiny", "target": dict(RECIPE),
           "tofu": {"data": "tofu", "forget_split": "forget01", "max_new_tokens": 64, "chat_template": False},
           "data": {"forget": "forget.jsonl", "retain": "retain.jsonl", "holdout": "holdout.jsonl"},
           "seeds": [0], "settings": {"num_train_epochs": 3, "learning_rate": 1e-2, "max_new_tokens": 24},
           "runs": [{"name": "npo", "method": "npo"}]}
    raw.update(over)
    path = root / f"exp{len(list(root.glob('exp*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_recipe_builds_a_target_and_a_retain_model_once(tofu_setup, tmp_path, monkeypatch):
    import torch

    from hf_unlearn.data.collator import pad_features, tokenize_dataset
    from hf_unlearn.pretrained import load_model_and_tokenizer

    root, _ = tofu_setup
    monkeypatch.setenv("HF_UNLEARN_CACHE", str(tmp_path / "cache"))
    experiment = load_experiment(_experiment(root))
    recipe = experiment.target
    assert isinstance(recipe, TargetRecipe) and recipe.base == str(root / "base") and recipe.lora_r == 0
    files = recipe_files(recipe, experiment.data, experiment.base_dir, experiment.source)
    retain_files = recipe_files(recipe, experiment.data, experiment.base_dir, experiment.source, without=("forget",))
    assert [n for n, _ in files] == ["forget", "retain"] and [n for n, _ in retain_files] == ["retain"]
    assert len(memorisation_rows(files)) == 16
    logs = []
    target, record = build_target(recipe, files, log=logs.append)
    retain_model, retain_record = build_target(recipe, retain_files, role="retain model", log=logs.append)
    assert target != retain_model and record["memorised"] == ["forget", "retain"]
    assert retain_record["memorised"] == ["retain"] and retain_record["rows"] == 8
    assert record["losses"][-1] < 0.05  # it memorised

    def mean_loss(folder, name):
        model, tokenizer = load_model_and_tokenizer(folder, dtype=torch.float32)
        from datasets import Dataset

        rows = [json.loads(line) for line in (root / f"{name}.jsonl").read_text().splitlines()]
        features = tokenize_dataset(Dataset.from_list(rows), tokenizer, name, 256)
        ids, mask, labels = pad_features(features, tokenizer.pad_token_id)
        with torch.no_grad():
            return float(model(input_ids=ids, attention_mask=mask, labels=labels).loss)

    # the target knows the forget answers; the retain model knows the retain answers but never saw the forget ones
    assert mean_loss(target, "forget") < 0.1 and mean_loss(retain_model, "retain") < 0.1
    assert mean_loss(retain_model, "forget") > 10 * mean_loss(target, "forget")
    # a second build is the cache (keyed by the recipe and the files' contents), not a second training
    logs.clear()
    assert build_target(recipe, files, log=logs.append)[0] == target and "cached" in logs[0]
    changed = TargetRecipe(**{**recipe.__dict__, "epochs": 149})
    from hf_unlearn.target import target_key

    assert target_key(changed, files) != target_key(recipe, files)


def test_a_recipe_with_an_anchor_and_a_second_stage_builds_in_stages_and_keys_on_the_anchor(tofu_setup, tmp_path,
                                                                                            monkeypatch):
    from hf_unlearn.target import anchor_rows, parse_recipe, target_key

    root, files = tofu_setup
    monkeypatch.setenv("HF_UNLEARN_CACHE", str(tmp_path / "cache"))
    general = _write_jsonl(tmp_path / "general.jsonl", [{"text": r["answer"]} for r in files["world_facts_perturbed"]])
    questions = _write_jsonl(tmp_path / "qa.jsonl", files["real_authors_perturbed"][:3])
    recipe = parse_recipe({**RECIPE, "base": str(root / "base"), "lora_r": 8, "epochs": 2, "stop_loss": None,
                           "anchor": [str(general), str(questions)], "anchor_weight": 0.5,
                           "then": [{"epochs": 1, "learning_rate": 5e-3}]}, "exp.yaml")
    anchor = [("general", str(general)), ("qa", str(questions))]
    from hf_unlearn.pretrained import load_model_and_tokenizer

    tokenizer = load_model_and_tokenizer(str(root / "base"))[1]
    texts = anchor_rows(anchor, tokenizer)
    assert len(texts) == 8 + 3 and texts[8].startswith("Question: ")  # no chat template: TOFU's plain prompt
    memorised = [("forget", str(root / "forget.jsonl"))]
    folder, record = build_target(recipe, memorised, anchor_files=anchor, log=lambda _: None)
    assert record["stage_epochs"] == [2, 1] and len(record["losses"]) == 3
    other = [("general", str(general))]
    assert target_key(recipe, memorised, anchor) != target_key(recipe, memorised, other)  # the anchor's contents
    plain = TargetRecipe(**{**recipe.__dict__, "anchor": [], "then": []})
    assert target_key(plain, memorised) == target_key(TargetRecipe(**{**plain.__dict__, "anchor_weight": 9.0}),
                                                      memorised)  # no anchor: its weight is no part of the key


@pytest.mark.parametrize("change, message", [
    ({"model": "tiny"}, r"give model: .* or target: .*not both"),
    ({"target": {**RECIPE, "lora": 8}}, r"target: unknown field\(s\) lora"),
    ({"target": {k: v for k, v in RECIPE.items() if k != "base"}}, r"target\.base: missing"),
    ({"target": {**RECIPE, "epochs": 0}}, r"target\.epochs: must be an integer >= 1"),
    ({"target": {**RECIPE, "memorise": []}}, r"target\.memorise: a non-empty list"),
    ({"target": {**RECIPE, "learning_rate": "fast"}}, r"target\.learning_rate: must be a number"),
    ({"target": {**RECIPE, "retain_model": False}}, r"tofu: forget quality is measured against a retain model"),
    ({"target": {**RECIPE, "anchor": ["retain"]}}, r"target\.anchor: .*set lora_r > 0"),
    ({"target": {**RECIPE, "anchor": "retain"}}, r"target\.anchor: a list of data names or files"),
    ({"target": {**RECIPE, "then": [{"epochs": 2}]}}, r"target\.then: a list of stages, each \{epochs: N"),
    ({"target": {**RECIPE, "then": [{"epochs": 0, "learning_rate": 1e-3}]}}, r"target\.then\[0\]\.epochs"),
    ({"tofu": {"data": "tofu", "split": "forget01"}}, r"tofu: unknown field\(s\) split"),
    ({"tofu": {"forget_split": "forget01"}}, r"tofu: a mapping with data:"),
    ({"data": {"forget": "forget.jsonl", "retain": {"file": "retain.jsonl", "rows": 0}}},
     r"data\.retain: a file, or \{file: FILE\.jsonl, rows: N\}"),
    ({"data": {"forget": "forget.jsonl", "retain": {"file": "retain.txt", "rows": 2}}},
     r"data\.retain\.file: rows are taken from a JSON-lines file"),
])
def test_a_malformed_target_or_tofu_section_is_refused_naming_the_field(tofu_setup, change, message):
    root, _ = tofu_setup
    path = _experiment(root, **change)
    with pytest.raises(ValueError, match=message) as err:
        load_experiment(path)
    assert str(path) in str(err.value)


def test_missing_memorised_files_and_tofu_files_are_refused_before_anything_is_built(tofu_setup, tmp_path,
                                                                                     monkeypatch, capsys):
    root, _ = tofu_setup
    monkeypatch.setenv("HF_UNLEARN_CACHE", str(tmp_path / "cache"))
    path = _experiment(root, target={**RECIPE, "memorise": ["forget", "retain", "eval_forget"]})
    assert cli_main(["compare", "--experiment", str(path), "--output-dir", str(tmp_path / "o")]) == 2
    assert "target.memorise: eval_forget is neither a file under data: nor a file" in capsys.readouterr().err
    path = _experiment(root, tofu={"data": "base", "chat_template": False})
    assert cli_main(["compare", "--experiment", str(path), "--output-dir", str(tmp_path / "o")]) == 2
    assert "tofu: " in capsys.readouterr().err and not (tmp_path / "cache").exists()


def test_compare_builds_the_target_and_scores_privleak_and_tofu_against_the_retain_model(tofu_setup, tmp_path,
                                                                                        monkeypatch, capsys):
    root, files = tofu_setup
    monkeypatch.setenv("HF_UNLEARN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    # the retain rows as a file's first rows (a slice of a large file: TOFU's retain90 in the SmolLM2 experiment)
    path = _experiment(root, data={"forget": "forget.jsonl", "retain": {"file": "retain.jsonl", "rows": 6},
                                   "holdout": "holdout.jsonl"})
    assert cli_main(["compare", "--experiment", str(path), "--output-dir", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "building the target" in printed and "building the retain model" in printed
    result = json.loads((out / "compare.json").read_text())
    assert result["retain_model"] and result["target"]["retain_model"] is True
    (run,) = result["runs"]
    before, after = run["scores"]["before"], run["scores"]["after"]
    assert {"privleak", "retain_model/mia/auc", "tofu/forget_quality", "tofu/model_utility"} <= set(after)
    assert {"tofu/forget_quality", "tofu/model_utility"} <= set(before)
    assert not any(isinstance(v, list) for v in after.values())  # per-question ratios stay out of the record
    assert 0 <= after["tofu/forget_quality"] <= 1 and 0 <= after["tofu/model_utility"] <= 1
    # the target memorised the forget answers: the KS test tells it from the retain model; the retain model never saw
    # the forget documents, so the loss attack hardly tells them from the holdout ones, while the target's does
    assert before["tofu/forget_quality"] < 0.05 and before["mia/auc"] > 0.9
    assert abs(after["retain_model/mia/auc"] - 0.5) < abs(before["mia/auc"] - 0.5)
    reference = json.loads((out / "tofu_reference.json").read_text())
    assert len((out / "data" / "retain.jsonl").read_text().splitlines()) == 6
    # the retain model memorised 6 of the 8 retain questions TOFU scores
    assert reference["retain_model"]["tofu/retain/rouge"] > 0.6
    report = (out / "compare.md").read_text()
    assert "PrivLeak" in report and "forget quality" in report and "retain model" in report
    # resumed: the target and retain model are the cache's, the run is not run again
    assert cli_main(["compare", "--experiment", str(path), "--output-dir", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "the target is cached" in printed and "1 run(s) already done, 0 to run" in printed
    _canary_scan(out, [r["answer"] for r in files["forget01_perturbed"] if len(r["answer"]) > 12])


def test_too_few_rows_for_a_slice_are_refused_before_anything_is_built(tofu_setup, tmp_path, monkeypatch, capsys):
    root, _ = tofu_setup
    monkeypatch.setenv("HF_UNLEARN_CACHE", str(tmp_path / "cache"))
    path = _experiment(root, data={"forget": "forget.jsonl", "retain": {"file": "retain.jsonl", "rows": 9}})
    assert cli_main(["compare", "--experiment", str(path), "--output-dir", str(tmp_path / "o")]) == 2
    assert "data.retain: " in capsys.readouterr().err and not (tmp_path / "cache").exists()


def test_slices_take_rows_after_a_skip_in_data_and_in_the_recipe(tofu_setup, tmp_path):
    from hf_unlearn.data.slices import Slice, parse_slice, write_slice

    root, _ = tofu_setup
    lines = (root / "retain.jsonl").read_text().splitlines()
    out = write_slice(parse_slice({"file": str(root / "retain.jsonl"), "rows": 3, "skip": 2}, "x"), tmp_path / "s.jsonl",
                      "x")
    assert Path(out).read_text().splitlines() == lines[2:5]
    with pytest.raises(ValueError, match=r"data\.retain: .* has 8 rows, fewer than rows: 3 after skip: 6"):
        write_slice(Slice(str(root / "retain.jsonl"), 3, 6), tmp_path / "t.jsonl", "data.retain")
    with pytest.raises(ValueError, match=r"skip: M starts after"):
        parse_slice({"file": "a.jsonl", "rows": 2, "skip": -1}, "data.retain")
    experiment = load_experiment(_experiment(root, target={**RECIPE, "memorise": [
        "forget", {"file": "retain.jsonl", "rows": 4, "skip": 1}]}))
    assert experiment.target.memorise[1] == Slice(str(root / "retain.jsonl"), 4, 1)  # resolved like data files
    # a list: the files' (and slices') rows in turn, in one file
    joined = load_experiment(_experiment(root, data={"forget": "forget.jsonl", "retain": [
        "retain.jsonl", {"file": "forget.jsonl", "rows": 2, "skip": 1}]}))
    assert joined.slices["retain"] == [Slice(str(root / "retain.jsonl"), None), Slice(str(root / "forget.jsonl"), 2, 1)]
    from hf_unlearn.data.slices import write_slices

    out = write_slices(joined.slices["retain"], tmp_path / "r.jsonl", "data.retain")
    assert Path(out).read_text().splitlines() == lines + (root / "forget.jsonl").read_text().splitlines()[1:3]
    for bad in ([], ["retain.txt"], [{"file": "retain.jsonl"}]):
        with pytest.raises(ValueError, match=r"data\.retain"):
            load_experiment(_experiment(root, data={"forget": "forget.jsonl", "retain": bad}))


def test_the_benchmark_experiment_files_load():
    """Every experiment under benchmarks/experiments/ parses (its data paths against ../shared)."""
    from pathlib import Path

    files = sorted((Path(__file__).parent.parent / "benchmarks" / "experiments").glob("*.yaml"))
    assert files
    for path in files:
        experiment = load_experiment(path)
        assert experiment.runs and all(Path(v).exists() for k, v in experiment.data.items()
                                       if k != "pre_finetuning_model")  # that one may be a name (smollm2, a Hub id)


def test_the_audit_experiments_share_their_comparisons_targets(tmp_path):
    """benchmarks/experiments/audit_tofu_smollm2.yaml memorises the same rows by the same recipe as tofu_smollm2.yaml
    (its forget file carries paraphrases, so the recipe names forget01 itself): one cached target for both."""
    from pathlib import Path

    from hf_unlearn.data.slices import write_slices
    from hf_unlearn.target import recipe_files, target_key, write_recipe_slices

    def key(name: str) -> str:
        experiment = load_experiment(Path(__file__).parent.parent / "benchmarks" / "experiments" / name)
        out = tmp_path / name
        if experiment.lume is not None:
            from hf_unlearn.data.lume_subset import write_lume_subset

            experiment.data.update(write_lume_subset(experiment.lume, out / "data" / "lume"))
        for field_name, pieces in experiment.slices.items():  # as `compare` writes them
            experiment.data[field_name] = write_slices(pieces, out / "data" / f"{field_name}.jsonl", name)
        write_recipe_slices(experiment.target, out / "data" / "target", experiment.source)
        files = recipe_files(experiment.target, experiment.data, experiment.base_dir, experiment.source)
        corpus = recipe_files(experiment.target, experiment.data, experiment.base_dir, experiment.source,
                              field_name="tokenizer_corpus")
        return target_key(experiment.target, files, (), corpus)

    assert key("audit_tofu_smollm2.yaml") == key("tofu_smollm2.yaml")
    assert key("audit_tiny.yaml") == key("lume_tiny.yaml")  # the small model's audit: the comparison's target
    # the fields added since (a tiny base, its tokenizer's corpus, the schedule) key nothing at their defaults: the
    # SmolLM2 TOFU target built before them is still the cached one
    assert key("tofu_smollm2.yaml") == "bd4eec6cc0b4a7b6"


def test_a_tiny_base_trains_its_tokenizer_on_the_corpus_and_is_what_memorise_builds_by_hand(tofu_setup, tmp_path,
                                                                                            monkeypatch):
    """`base: tiny` (the LUME comparison's target on a small model, issue #31): a model built from a config, its
    tokenizer trained on the corpus, memorised as the benchmark script did (constant rate, no length grouping): the
    same weights as those steps written out by hand; the retain model shares the target's tokenizer."""
    import torch

    from hf_unlearn.pretrained import load_model_and_tokenizer
    from hf_unlearn.support.tiny import memorise, tiny_causal_lm, train_tokenizer
    from hf_unlearn.target import parse_recipe, target_key, tokenizer_texts

    root, _ = tofu_setup
    monkeypatch.setenv("HF_UNLEARN_CACHE", str(tmp_path / "cache"))
    size = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 300}
    recipe = parse_recipe({"base": "tiny", "tiny": size, "memorise": ["forget", "retain"], "lora_r": 0,
                           "learning_rate": 3e-3, "epochs": 2, "stop_loss": None, "warmup_ratio": 0.0,
                           "lr_scheduler": "constant", "group_by_length": False, "retain_model": True}, "exp.yaml")
    files = [("forget", str(root / "forget.jsonl")), ("retain", str(root / "retain.jsonl"))]
    target, record = build_target(recipe, files, log=lambda _: None, tokenizer_files=files)
    retain, _ = build_target(recipe, files[1:], role="retain model", log=lambda _: None, tokenizer_files=files)
    model, tokenizer = load_model_and_tokenizer(target, dtype=torch.float32)
    assert tokenizer.get_vocab() == load_model_and_tokenizer(retain)[1].get_vocab()
    assert model.config.hidden_size == 32 and model.config.model_type == "olmo"

    by_hand_tokenizer = train_tokenizer(tokenizer_texts(files), vocab_size=300)
    by_hand = tiny_causal_lm(by_hand_tokenizer, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, seed=0)
    losses = memorise(by_hand, by_hand_tokenizer, memorisation_rows(files), epochs=2, learning_rate=3e-3, seed=0)
    assert tokenizer.get_vocab() == by_hand_tokenizer.get_vocab()
    assert record["losses"] == pytest.approx(losses, rel=1e-6)
    for name, weight in by_hand.state_dict().items():
        assert torch.allclose(model.state_dict()[name], weight, atol=1e-6), name
    assert target_key(recipe, files, (), files) != target_key(recipe, files, (), files[::-1])  # the corpus's order
    for bad, message in (({"tiny": {"width": 3}}, r"target\.tiny: a mapping of arch"),
                         ({"tiny": {"arch": "gpt"}}, r"target\.tiny\.arch: olmo or llama"),
                         ({"base": "smollm2"}, r"target\.tiny: only with base: tiny"),
                         ({"group_by_length": "no"}, r"target\.group_by_length: must be true or false")):
        with pytest.raises(ValueError, match=message):
            parse_recipe({"base": "tiny", "tiny": size, "memorise": ["forget"], **bad}, "exp.yaml")

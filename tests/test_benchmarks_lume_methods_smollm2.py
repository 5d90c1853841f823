"""benchmarks/lume_methods_smollm2.py: the data slices and the selectivity criteria (the runs themselves take hours)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from .conftest import REPO_ROOT, SHARED_DATA

_spec = importlib.util.spec_from_file_location("lume_methods_smollm2", REPO_ROOT / "benchmarks" /
                                               "lume_methods_smollm2.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["lume_methods_smollm2"] = bench  # dataclasses look their module up there
_spec.loader.exec_module(bench)


def test_general_text_slices_are_disjoint_and_members_are_forget_documents():
    settings = bench.Settings()
    data = bench.load_data(settings, SHARED_DATA)
    slices = [data.nonmembers, data.utility, data.mix]
    assert [len(s) for s in slices] == [settings.num_nonmembers, settings.num_utility_documents,
                                        settings.num_mix_documents]
    assert len(set().union(*map(set, slices))) == sum(map(len, slices))
    forget = {bench.document_stem(r["id"]) for r in data.subset.rows["forget_train"] if r["task"] == "Task3"}
    assert len(data.subset.members) == len(forget) == settings.num_members
    # general-knowledge questions: both TOFU files, each with its answer string
    assert {q["source"] for q in data.general_questions} == {"world_facts", "real_authors"}
    assert len(data.general_questions) == 217 and all(q["answer"] for q in data.general_questions)
    # the general text is never a LUME document nor an MIA member
    assert not set(data.mix) & set(data.subset.members)


def test_selectivity_criteria():
    before = {f"train/{side}/{kind}": 1.0 for side in ("forget", "retain") for kind in ("regurgitation", "knowledge")}
    before.update({"general/knowledge": 0.30, "general/ppl": 20.0})
    good = {**before, "train/forget/regurgitation": 0.5, "train/forget/knowledge": 0.1,
            "train/retain/regurgitation": 0.9, "general/knowledge": 0.25, "general/ppl": 24.0}
    assert bench.selectivity(before, good, "train")["selective"]
    for key, value in (("train/forget/regurgitation", 0.51), ("train/retain/knowledge", 0.89),
                       ("general/knowledge", 0.24), ("general/ppl", 24.1)):
        verdict = bench.selectivity(before, {**good, key: value}, "train")
        assert not verdict["selective"], key
        assert sum(not ok for ok in verdict["checks"].values()) == 1


def test_method_settings_and_overrides():
    settings = bench.Settings(beta=0.2, retain_nll_weight=4.0)
    ours = bench.method_config("npo_nll_kl", settings)
    assert ours["config"] == {"method": "npo", "beta": 0.2, "retain_nll_weight": 4.0, "retain_kl_weight": 0.5}
    # the paper's row keeps the paper's values whatever the overrides
    paper = bench.method_config("npo_nll_kl_paper", settings)
    assert paper["learning_rate"] == 1e-4 and paper["lora_r"] == paper["lora_alpha"] == 5
    assert paper["config"] == {"method": "npo", "beta": 0.5, "retain_nll_weight": 1.0, "retain_kl_weight": 0.5}
    # each override reaches only the methods of its row in OVERRIDES; at its default it sets nothing
    settings = bench.Settings(hold_weight=1.0, hold_batch=2, distill_weight=3.0, level_shift="current",
                              retain_kl_weight=6.0, z_band="0.4,0.6")
    assert bench.method_config("pre_distill", settings)["config"] == {
        **bench.METHODS["pre_distill"]["config"], "retain_kl_weight": 6.0, "hold_weight": 1.0, "hold_batch": 2,
        "distill_weight": 3.0, "level_shift": "current", "z_band_low": 0.4, "z_band_high": 0.6}
    assert bench.method_config("anchored", settings)["config"]["anchor_hold_weight"] == 1.0
    assert "hold_weight" not in bench.method_config("anchored", settings)["config"]
    assert bench.method_config("npo", settings)["config"] == bench.METHODS["npo"]["config"]
    assert bench.method_config("pre_distill", bench.Settings())["config"] == bench.METHODS["pre_distill"]["config"]
    with pytest.raises(ValueError, match="hold_batch 0: hold_batch must be >= 1"):  # refused before any target
        bench.Settings(hold_batch=0)


def test_new_methods_build_valid_configs_with_their_own_lora_and_schedule():
    from hf_unlearn import UnlearningConfig

    settings = bench.Settings()
    for key in ("simnpo", "undial", "wga", "satimp", "rmu", "sugd"):
        chosen = bench.method_config(key, settings)
        UnlearningConfig(output_dir="unused", **chosen["config"])  # validates against the method registry
    assert set(bench.lora_config("rmu", settings, bench.method_config("rmu", settings)).target_modules) == {"down_proj"}
    sugd = bench.method_config("sugd", settings)
    assert sugd["config"]["method"] == "gd" and sugd["config"]["forget_chunk_size"] == 8
    assert set(bench.lora_config("sugd", settings, sugd).target_modules) == {"q_proj", "v_proj", "up_proj", "down_proj"}
    # one Trainer epoch is the whole chunked schedule: 5 // 4 passes per chunk -> 1; the others keep `epochs`
    assert bench.trainer_epochs("sugd", settings) == 1
    assert bench.trainer_epochs("simnpo", settings) == settings.epochs
    # the report describes the adapter each run's LoRA config builds
    runs = {key: {"method": key, "settings": {}, "chosen": bench.method_config(key, settings)} for key in ("rmu", "sugd")}
    assert bench.modules_text(runs["rmu"]) == "down_proj of decoder layers 5-7"
    assert bench.modules_text(runs["sugd"]) == "down_proj, q_proj, up_proj, v_proj"
    assert bench.modules_text({**runs["rmu"], "method": "undial"}) == "all linear layers"


def test_report_keeps_only_runs_of_the_same_target_and_new_options_parse():
    settings = bench.Settings(anchor_weight=1.0)
    old_run = {"settings": {k: v for k, v in bench.dataclasses.asdict(bench.Settings()).items()
                            if k not in ("retain_general_source", "lora_target_modules")}}
    assert not bench.same_target(old_run, settings)  # a run on the unanchored target
    assert bench.same_target(old_run, bench.Settings(learning_rate=2e-3))  # unlearning settings do not matter
    mine = {"settings": bench.dataclasses.asdict(bench.Settings(anchor_weight=1.0, retain_general=4,
                                                                retain_general_source="anchor"))}
    assert bench.same_target(mine, settings)
    assert bench.lora_modules("all-linear") == "all-linear"
    assert bench.lora_modules("down_proj, up_proj") == ["down_proj", "up_proj"]
    args = bench.build_parser().parse_args(["--retain_general_source", "anchor", "--lora_target_modules", "down_proj"])
    parsed = bench.Settings(**bench.dataclass_overrides(args, bench.Settings))
    assert parsed.retain_general_source == "anchor" and parsed.lora_target_modules == "down_proj"
    args = bench.build_parser().parse_args(["--z_band", "0.4,0.6", "--z_level_target", "band"])
    chosen = bench.method_config("pre_distill", bench.Settings(**bench.dataclass_overrides(args, bench.Settings)))
    assert (chosen["config"]["z_band_low"], chosen["config"]["z_band_high"]) == (0.4, 0.6)
    assert "z_band" not in bench.dataclasses.asdict(bench.Settings()) or \
        bench.run_key(bench.Settings()) == bench.run_key(bench.Settings(z_band=""))
    for bad in ("0.6", "0.6,0.4", "a,b"):
        with pytest.raises(ValueError, match="z_band"):
            bench.Settings(z_band=bad)
    args = bench.build_parser().parse_args(["--level_target", "band"])
    chosen = bench.method_config("pre_distill", bench.Settings(**bench.dataclass_overrides(args, bench.Settings)))
    assert chosen["config"]["level_target"] == "band"
    assert bench.run_key(bench.Settings()) == bench.run_key(bench.Settings(level_target=""))  # older runs' keys kept
    with pytest.raises(ValueError, match="level_target 'mean'"):
        bench.Settings(level_target="mean")
    assert bench.method_config("pre_distill", bench.Settings(level_floor=0.1))["config"]["level_floor"] == 0.1
    assert "level_floor" not in bench.method_config("pre_distill", bench.Settings())["config"]
    assert bench.run_key(bench.Settings()) == bench.run_key(bench.Settings(level_floor=-1.0))
    with pytest.raises(ValueError, match="level_floor 1.5"):
        bench.Settings(level_floor=1.5)
    skips = bench.Settings(level_floor=0.2, floor_skips_distill=1)
    assert bench.method_config("pre_distill", skips)["config"]["floor_skips_distill"] is True
    assert bench.run_key(bench.Settings(level_floor=0.2)) == bench.run_key(
        bench.Settings(level_floor=0.2, floor_skips_distill=0)) != bench.run_key(skips)
    with pytest.raises(ValueError, match="floor_skips_distill 1: floor_skips_distill needs level_floor"):
        bench.Settings(floor_skips_distill=1)
    # more general rows than the target has is refused, not silently cut (a run keyed as one it is not)
    with pytest.raises(ValueError, match=r"retain_general 128 .*\(num_anchor_chats 64\)"):
        bench.Settings(retain_general=128, retain_general_source="chats")
    # both general sources: this many of each, and no more than the smaller one has
    both = bench.Settings(retain_general=32, retain_general_source="anchor+chats")
    run = {"method": "pre_distill", "chosen": bench.method_config("pre_distill", both),
           "settings": bench.dataclasses.asdict(both)}
    assert "+32 anchor general docs + chat QA general rows in retain" in bench.group_label(run)
    with pytest.raises(ValueError, match=r"retain_general 40 .*from anchor \(num_anchor_documents 32\)"):
        bench.Settings(retain_general=40, retain_general_source="anchor+chats")
    try:
        bench.Settings(retain_general_source="memorised")
    except ValueError as error:
        assert "retain_general_source" in str(error)
    else:
        raise AssertionError("an unknown source was accepted")


def test_mia_losses_are_the_documents_mean_losses_beside_the_attacks(tiny_model, tokenizer, lume_rows):

    from hf_unlearn.metrics import document_losses_one_at_a_time

    docs = [r["input"] + " " + r["output"] for r in lume_rows["forget_train"][:6]]
    data = bench.Data(subset=type("Subset", (), {"members": docs[:2]})(), nonmembers=docs[2:], utility=[], mix=[],
                      general_questions=[], anchor_documents=[], anchor_chats=[])
    scores = bench.mia_losses(tiny_model, tokenizer, data)
    losses = document_losses_one_at_a_time(tiny_model, tokenizer, docs)
    assert scores["mia/member_loss"] == pytest.approx(sum(losses[:2]) / 2, rel=1e-4)
    assert scores["mia/nonmember_loss"] == pytest.approx(sum(losses[2:]) / 4, rel=1e-4)
    assert {"mia/auc", "mia/score"} <= set(scores)
    # the monitor logs the same attack under its own names, and a monitored run is keyed as the same run
    from types import SimpleNamespace

    monitor = bench.AttackMonitor(None, data, every=1)
    monitor.trainer = SimpleNamespace(model=tiny_model, processing_class=tokenizer)
    logged = monitor.score()
    assert logged["monitor/auc"] == scores["mia/auc"] and logged["monitor/member_loss"] == scores["mia/member_loss"]
    assert bench.run_key(bench.Settings(monitor_every=1)) == bench.run_key(bench.Settings())
    lume = {f"{split}/{part}/{kind}": 1.0 for split in ("train", "validation") for part in ("forget", "retain")
            for kind in ("regurgitation", "knowledge")}
    full = {**lume, "general/ppl": 20.0, "general/knowledge": 0.3, **scores}
    runs = [{"method": "npo_nll_kl", "chosen": bench.method_config("npo_nll_kl", bench.Settings()),
             "settings": bench.dataclasses.asdict(bench.Settings(seeds=(s,))), "scores": dict(full)} for s in (0, 1)]
    del runs[0]["scores"]["mia/member_loss"]  # a run scored before the key existed
    table = bench.results_table(full, runs, "train").splitlines()
    column = table[0].split(" | ").index("members' loss")
    assert table[3].split(" | ")[column] == f"{scores['mia/member_loss']:.3f}"  # the run that has it
    # the reference row: the model before memorisation, which never saw the members (attacks and general scores)
    with_base = bench.results_table(full, runs, "train", {"mia/auc": 0.524, "general/ppl": 18.4}).splitlines()
    assert with_base[3].startswith("| SmolLM2-135M-Instruct before memorisation (never saw the members) |")
    split = lambda row: [c.strip() for c in row.strip().strip("|").split("|")]  # noqa: E731
    assert split(with_base[3])[split(table[0]).index("MIA AUC")] == "0.524" and with_base[4] == table[3]


def test_the_experiment_file_memorises_anchors_and_attacks_the_scripts_data(tmp_path):
    """benchmarks/experiments/lume_smollm2.yaml (issue #31) builds its target from exactly the rows, anchor texts, MIA
    documents and held-out text of this script's default target (anchor weight 1), in the same order."""
    from transformers import AutoTokenizer

    from hf_unlearn.compare import load_experiment
    from hf_unlearn.data import read_mia_documents
    from hf_unlearn.data.documents import read_documents
    from hf_unlearn.data.lume_subset import write_lume_subset
    from hf_unlearn.pretrained import resolve_model_path
    from hf_unlearn.target import anchor_rows, memorisation_rows, recipe_files, write_recipe_slices

    experiment = load_experiment(REPO_ROOT / "benchmarks" / "experiments" / "lume_smollm2.yaml")
    experiment.data.update(write_lume_subset(experiment.lume, tmp_path / "lume"))
    write_recipe_slices(experiment.target, tmp_path / "target", experiment.source)  # as `compare` does
    data = bench.load_data(bench.Settings(anchor_weight=1.0), SHARED_DATA)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("smollm2"))
    pair = lambda r: r if isinstance(r, str) else (r["input"], r["output"])  # noqa: E731
    files = recipe_files(experiment.target, experiment.data, experiment.base_dir, experiment.source)
    assert [pair(r) for r in memorisation_rows(files)] == [pair(r) for r in bench.memorisation_rows(data)]
    anchor = recipe_files(experiment.target, experiment.data, experiment.base_dir, experiment.source,
                          field_name="anchor")
    assert anchor_rows(anchor, tokenizer) == bench.anchor_rows(data, tokenizer)
    assert read_mia_documents(experiment.data["mia"]) == (list(data.subset.members), list(data.nonmembers))
    assert read_documents(experiment.data["general_text"])[0] == list(data.utility)
    caps = bench.generation_caps(tokenizer, data.subset)
    assert experiment.settings["max_new_tokens"] == caps["sc"]  # its scoring cap for these rows


def test_the_trajectory_table_shows_each_monitored_epoch():
    chosen = bench.method_config("pre_distill", bench.Settings())
    settings = bench.dataclasses.asdict(bench.Settings(epochs=2))
    log = [{"loss": 1.0, "epoch": 0.5},
           {"monitor/auc": 0.9, "monitor/min_k_plus_plus_auc": 0.3, "monitor/exposed_share": 0.5,
            "monitor/member_loss": 2.0,
            "monitor/nonmember_loss": 3.0, "epoch": 1.0},
           {"monitor/auc": 0.7, "monitor/exposed_share": 0.25, "monitor/member_loss": 2.5,
            "monitor/nonmember_loss": 3.0, "epoch": 2.0}]
    runs = [{"method": "pre_distill", "chosen": chosen, "settings": settings, "seed": 0, "train_log": log},
            {"method": "pre_distill", "chosen": chosen, "settings": settings, "seed": 1, "train_log": log[:1]}]
    lines = bench.trajectory_table(runs)
    assert lines[-3].startswith("| 1 | 0.900 / 0.300 / 0.50 / 2.00, 3.00") and lines[-2].startswith("| 2 | 0.700")
    assert "seed 0" in lines[4] and "seed 1" not in lines[4]  # only the monitored run has a column
    assert bench.trajectory_table(runs[1:]) == []

"""The synthetic LUME-like generator: deterministic, LUME-shaped, scoreable by the LUME scorer."""

from __future__ import annotations

import pytest

from hf_unlearn.data import load_lume
from hf_unlearn.data.documents import read_documents
from hf_unlearn.metrics.lume import lume_scores_from_generations, row_kind
from hf_unlearn.support.synthetic import SPLIT_NAMES, TASKS, documents_of, generate_lume_like, write_lume_like


@pytest.fixture(scope="module")
def data():
    return generate_lume_like(num_documents=6, seed=3, num_mia_documents=6)


def test_same_seed_same_data_other_seed_other_data(data):
    again = generate_lume_like(num_documents=6, seed=3, num_mia_documents=6)
    other = generate_lume_like(num_documents=6, seed=4, num_mia_documents=6)
    for name in data:
        assert data[name].to_list() == again[name].to_list()
    assert data["forget_train"].to_list() != other["forget_train"].to_list()


def test_schema_ids_and_both_kinds_per_task(data):
    assert set(SPLIT_NAMES) <= set(data) and {"mia_member", "mia_nonmember"} <= set(data)
    for name in SPLIT_NAMES:
        rows = data[name].to_list()
        assert {"id", "input", "output", "task"} <= set(rows[0])
        assert len({r["id"] for r in rows}) == len(rows)
        for r in rows:
            assert r["input"].strip() and r["output"].strip()
            assert row_kind(r["id"]) in ("sc", "qa")
            assert r["split"] == name.split("_")[0]
        for task in TASKS:
            kinds = {row_kind(r["id"]) for r in rows if r["task"] == task}
            assert kinds == {"sc", "qa"}, (name, task)
    train_docs = [r for r in data["forget_train"] if row_kind(r["id"]) == "sc"]
    assert len(train_docs) == 6 * len(TASKS)
    assert {r["task"] for r in data["mia_member"]} == set(TASKS)


def test_answers_are_stated_in_the_documents(data):
    for name in SPLIT_NAMES:
        rows = data[name].to_list()
        docs = {r["id"][:-3]: r["input"] + " " + r["output"] for r in rows if row_kind(r["id"]) == "sc"}
        for r in rows:
            if row_kind(r["id"]) == "qa" and r["task"] != "Task2":  # Task2 answers are normalised (digits, ISO dates)
                assert r["output"].lower() in docs[r["id"][:-3]].lower(), r


def test_forget_and_retain_are_disjoint(data):
    forget = [r for n in ("forget_train", "forget_validation") for r in data[n]]
    retain = [r for n in ("retain_train", "retain_validation") for r in data[n]]
    assert not {r["id"] for r in forget} & {r["id"] for r in retain}
    assert not {r["input"] for r in forget} & {r["input"] for r in retain}
    # forget and retain draw names from disjoint pools: no forget full name appears in a retain row
    names = {" ".join(r["input"].split("\n")[0].split()[:2]) for r in forget if r["task"] == "Task3" and row_kind(r["id"]) == "sc"}
    retain_text = " ".join(r["input"] + " " + r["output"] for r in retain)
    assert names and not any(name in retain_text for name in names)
    forget_docs = set(documents_of(data["forget_train"])) | set(documents_of(data["forget_validation"]))
    retain_docs = set(documents_of(data["retain_train"])) | set(documents_of(data["retain_validation"]))
    assert not forget_docs & retain_docs
    # MIA: members are forget-train documents, non-members are in no split
    assert set(data["mia_member"]["document"]) <= set(documents_of(data["forget_train"]))
    assert not set(data["mia_nonmember"]["document"]) & (forget_docs | retain_docs)


def test_lume_scorer_and_loader_accept_it(data, tmp_path):
    forget, retain = data["forget_validation"].to_list(), data["retain_validation"].to_list()
    perfect = lume_scores_from_generations(forget, [r["output"] for r in forget], retain, [r["output"] for r in retain])
    assert len(perfect["aggregated-terms"]) == 12
    assert perfect["retain-set"]["overall-regurgitation-score"] == pytest.approx(1.0)
    assert perfect["retain-set"]["overall-knowledge-score"] == 1.0
    assert perfect["harmonic-mean-task-aggregate"] == 0.0  # remembering the forget set gives forget terms of 0
    data["calibration"] = data["mia_nonmember"].select(range(2))  # the demo's never-seen half for --calibration
    write_lume_like(data, tmp_path / "lume")
    assert read_documents(tmp_path / "lume" / "calibration.jsonl")[0] == data["calibration"]["document"]
    loaded_forget, loaded_retain = load_lume(tmp_path / "lume", split="train")
    assert loaded_forget.to_list() == data["forget_train"].to_list()
    assert len(loaded_retain) == len(data["retain_train"])
    assert (tmp_path / "lume" / "mia" / "member.jsonl").is_file()
    written = list((tmp_path / "lume").rglob("*.jsonl"))
    assert written and all(p.stat().st_mode & 0o777 == 0o600 for p in written)  # forget text: owner only


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown tasks"):
        generate_lume_like(tasks=["Task9"])
    with pytest.raises(ValueError, match="num_documents"):
        generate_lume_like(num_documents=0)

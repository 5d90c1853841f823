"""hf_unlearn.data.lume_subset (an experiment's `lume:` section) on the real LUME files: which documents, disjoint
roles, the files `hf-unlearn unlearn` reads, and the section in an experiment file."""

from __future__ import annotations

import pytest
import yaml

from hf_unlearn.compare import load_experiment
from hf_unlearn.data import read_jsonl, read_mia_documents
from hf_unlearn.data.documents import load_rows, read_documents
from hf_unlearn.data.lume_subset import (DATA_NAMES, TASKS, LumeSubset, document_stem, select_lume_subset,
                                         write_lume_subset)

from .conftest import SHARED_DATA

LUME = SHARED_DATA / "lume"


def test_the_subset_takes_documents_per_task_and_keeps_every_role_apart():
    spec = LumeSubset(str(LUME), docs_per_task=2, members=5, calibration=3, evaluation=6, general_documents=4,
                      skip_general=5)
    subset = select_lume_subset(spec)
    for split, rows in subset["rows"].items():
        for task in TASKS:
            stems = {document_stem(r["id"]) for r in rows if r["task"] == task}
            assert len(stems) == (5 if (split, task) == ("forget_train", "Task3") else 2)
        assert [r["task"] for r in rows] == sorted((r["task"] for r in rows), key=TASKS.index)  # task by task
    member_docs = {r["id"]: r["document"] for r in read_jsonl(LUME / "mia" / "member.jsonl")}
    forget_task3 = [s for s in dict.fromkeys(document_stem(r["id"]) for r in subset["rows"]["forget_train"]
                                             if r["task"] == "Task3")]
    assert subset["members"] == [member_docs[s] for s in forget_task3]  # whole texts, from mia/member.jsonl
    calibration = {document_stem(r["id"]) for r in subset["calibration_rows"]}
    chosen = {document_stem(r["id"]) for r in subset["rows"]["forget_train"]}
    assert len(calibration) == 2 + 2 + 3 and not calibration & chosen
    assert len(subset["evaluation"]) == 6
    assert not set(subset["evaluation"]) & set(subset["members"])
    assert not set(subset["evaluation"]) & {member_docs.get(s) for s in calibration}
    wikipedia = [r["document"] for r in read_jsonl(LUME / "mia" / "nonmember.jsonl")]
    assert subset["general"] == wikipedia[5:9]


def test_written_files_are_what_unlearn_reads(tmp_path):
    spec = LumeSubset(str(LUME), docs_per_task=1, members=3, calibration=2, evaluation=4, general_documents=2)
    data = write_lume_subset(spec, tmp_path / "lume")
    assert set(data) == set(DATA_NAMES) | {"mia", "calibration", "general_text"}
    rows, documents = load_rows(data["forget"], "forget")
    assert len({document_stem(r["id"]) for r in rows}) == 1 + 1 + 3 and documents
    members, nonmembers = read_mia_documents(data["mia"])
    assert len(members) == 3 and len(nonmembers) == 4
    assert len(read_documents(data["calibration"])[0]) == 1 + 1 + 2  # one whole document each
    assert len(read_documents(data["general_text"])[0]) == 2
    write_lume_subset(spec, tmp_path / "again")  # the same files again: the same runs' keys
    for name in ("forget.jsonl", "calibration.jsonl", "mia/nonmember.jsonl"):
        assert (tmp_path / "lume" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


@pytest.mark.parametrize("change, message", [
    ({"members": 100000}, r"lume\.members: forget_train has \d+ Task3 document"),
    ({"evaluation": 100000}, r"lume\.calibration \+ lume\.evaluation"),
    ({"general_documents": 100000}, r"lume\.skip_general \+ lume\.general_documents"),
    ({"nonmembers": 100000}, r"lume\.nonmembers: 100000 Wikipedia documents asked for"),
    ({"nonmembers": 2, "evaluation": 2}, r"lume\.nonmembers: .* not both"),
])
def test_too_few_documents_are_refused_naming_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        select_lume_subset(LumeSubset(str(LUME), **change))


def test_an_experiment_takes_a_lume_section_and_refuses_a_clash(tmp_path):
    raw = {"model": "smollm2", "lume": {"data": str(LUME), "members": 4, "evaluation": 8},
           "runs": [{"method": "npo"}]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    experiment = load_experiment(path)
    assert experiment.lume == LumeSubset(str(LUME.resolve()), members=4, evaluation=8)
    for change, message in (({"data": {"forget": "f.jsonl"}}, r"data\.forget: lume: writes it"),
                            ({"lume": {"data": str(LUME), "member": 4}}, r"lume: .*unknown field\(s\) member"),
                            ({"lume": {"data": str(LUME), "members": -1}}, r"lume\.members: a whole number")):
        path.write_text(yaml.safe_dump({**raw, **change}))
        with pytest.raises(ValueError, match=message):
            load_experiment(path)


def test_wikipedia_nonmembers_are_the_attacks_without_evaluation_documents(tmp_path):
    data = write_lume_subset(LumeSubset(str(LUME), members=4, nonmembers=5), tmp_path)
    members, nonmembers = read_mia_documents(data["mia"])
    wikipedia = [r["document"] for r in read_jsonl(LUME / "mia" / "nonmember.jsonl")]
    assert len(members) == 4 and nonmembers == wikipedia[:5] and "calibration" not in data

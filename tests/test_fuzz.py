"""Seeded fuzzing of what a user feeds `hf-unlearn unlearn` (issue #30): generated malformed row files and option
values. Each is either refused cleanly (one line that names the file or option, never quoting the data) before any
model loads, or accepted. A fixed seed keeps failures reproducible; every case prints its number."""

from __future__ import annotations

import json
import random

import pytest

from hf_unlearn.cli import main as cli_main
from hf_unlearn.data.documents import load_rows
from hf_unlearn.data.lume import DataValidationError

CANARY = "ZQXJ-canary-Mario-Rossi"  # planted in every generated file: must never appear in a message


def _value(rng: random.Random, depth: int = 0):
    """A random JSON value, biased to the kinds a broken export produces."""
    kinds = ["text", "canary", "empty", "space", "int", "float", "bool", "null", "list", "dict"]
    kind = rng.choice(kinds if depth < 2 else kinds[:8])
    return {"text": lambda: " ".join(rng.choice(["a", "word", "Pisa", "1970", "."]) for _ in range(rng.randint(1, 8))),
            "canary": lambda: f"{CANARY} was born in Pisa.", "empty": lambda: "", "space": lambda: "  \t",
            "int": lambda: rng.randint(-5, 5), "float": lambda: rng.choice([0.5, float("1e308"), -2.0]),
            "bool": lambda: rng.random() < 0.5, "null": lambda: None,
            "list": lambda: [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))],
            "dict": lambda: {"input": _value(rng, depth + 1)}}[kind]()


def _row(rng: random.Random) -> dict:
    fields = rng.sample(["id", "input", "output", "task", "text", "document", "extra"], rng.randint(0, 5))
    return {name: _value(rng) for name in fields}


def _line(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.4:  # a well-formed row, maybe with extra fields of any kind
        row = {"input": f"Where does {CANARY} live?", "output": rng.choice(["In Pisa.", f"{CANARY} lives in Pisa."])}
        row.update({name: _value(rng) for name in rng.sample(["task", "extra", "score"], rng.randint(0, 2))})
        return json.dumps(row)
    if roll < 0.7:
        return json.dumps(_row(rng))
    if roll < 0.8:
        return rng.choice(["", "   ", "{", "[1, 2]", '"just a string"', "null", "42"])
    if roll < 0.9:
        return json.dumps({"input": f"Who is {CANARY}?", "output": f"{CANARY} lives in Pisa.",
                           "id": rng.choice(["a1sc1", "a1qa0", "dup"])})
    return f"{CANARY} plain text line"


def _file_bytes(rng: random.Random) -> bytes:
    text = "\n".join(_line(rng) for _ in range(rng.randint(1, 6)))
    data = text.encode()
    roll = rng.random()
    if roll < 0.1:  # a byte that is not UTF-8, somewhere
        at = rng.randint(0, len(data))
        data = data[:at] + bytes([rng.choice([0xC0, 0xFF, 0x80])]) + data[at:]
    elif roll < 0.15:
        data = "\ufeff".encode() + data  # a byte order mark
    elif roll < 0.2:
        data = data.replace(b"\n", b"\r\n")
    return data


@pytest.mark.parametrize("case", range(150))
def test_generated_row_files_are_read_or_refused_in_one_line_naming_the_file(case, tmp_path):
    rng = random.Random(case)
    path = tmp_path / rng.choice(["forget.jsonl", "forget.txt"])
    path.write_bytes(_file_bytes(rng))
    try:
        rows, documents = load_rows(path, "forget")
    except DataValidationError as error:
        message = str(error)
        assert str(path) in message and "\n" not in message.strip(), message
        assert CANARY not in message and "Pisa" not in message, message
        return
    # accepted: rows a Dataset can be built from
    assert rows and all(isinstance(r["input"], str) and isinstance(r["output"], str) and r["output"].strip()
                        for r in rows)
    assert all(isinstance(d, str) for d in documents)
    assert len({r["id"] for r in rows}) == len(rows)


NUMERIC_OPTIONS = ["--num-train-epochs", "--learning-rate", "--lora-alpha", "--lora-r", "--batch-size",
                   "--max-new-tokens", "--generation-batch-size", "--max-words", "--max-length", "--prompt-fraction",
                   "--unseen-band", "--stop-check-steps", "--max-retain-rise", "--beta", "--seed",
                   "--retain-nll-weight", "--retain-kl-weight"]
VALUES = ["0", "-1", "1", "nan", "inf", "-inf", "1e400", "0.5", "3", "x", "", "1e-12", "100000000000"]


@pytest.mark.parametrize("case", range(60))
def test_generated_option_values_are_refused_in_one_line_before_a_model_loads(case, tmp_path, capsys):
    rng = random.Random(1000 + case)
    (tmp_path / "f.txt").write_text(f"{CANARY} was born in Pisa on 3 March 1970.\n")
    (tmp_path / "r.txt").write_text("Some retained text of a few words here.\n")
    chosen = rng.sample(NUMERIC_OPTIONS, rng.randint(1, 3))
    extra = [item for option in chosen for item in (option, rng.choice(VALUES))]
    out = tmp_path / "out"
    args = ["unlearn", "--model", str(tmp_path / "no-model"), "--forget", str(tmp_path / "f.txt"), "--retain",
            str(tmp_path / "r.txt"), "--output-dir", str(out), *extra]
    try:
        code = cli_main(args)
    except SystemExit as exit_:  # argparse: a value of the wrong type
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2, (extra, err)
    last = err.splitlines()[-1]
    assert CANARY not in err
    # refused naming an option given, or accepted up to loading the (missing) model, which is then named
    named = [option for option in chosen if option in last or option.lstrip("-").replace("-", "_") in last]
    assert named or "model folder not found" in last, (extra, last)
    assert not (out / "adapter").exists() and not (out / "merged").exists()

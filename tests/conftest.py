"""Shared fixtures: real LUME rows from ../shared/data and tiny models built from a config (nothing downloaded)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch

from hf_unlearn.support.tiny import memorise, tiny_causal_lm, train_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OMP_NUM_THREADS wins when set (1 when other jobs share the cores: oversubscribed threads slow tests down ~10x).
# Under pytest-xdist (setup.cfg runs 2 workers) the cores are shared out among the workers.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or max(1, min(2, os.cpu_count() or 1) // _WORKERS)))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HF_UNLEARN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
LUME_DIR = SHARED_DATA / "lume"


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture
def one_thread():
    """One torch thread (`pytestmark = pytest.mark.usefixtures("one_thread")`): a tiny model gains nothing from two,
    and two stall badly when another process runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def lume_dir() -> Path:
    if not LUME_DIR.is_dir():
        pytest.fail(f"real LUME data not found at {LUME_DIR}; set HF_UNLEARN_SHARED_DATA to the shared/data folder")
    return LUME_DIR


@pytest.fixture(scope="session")
def lume_rows(lume_dir) -> dict[str, list[dict]]:
    """All four LUME splits as lists of dicts, keyed like the file names (forget_train, ...)."""
    return {p.stem: read_jsonl(p) for p in sorted(lume_dir.glob("*.jsonl"))}


@pytest.fixture(scope="session")
def tokenizer(lume_rows):
    """A byte-level BPE tokenizer trained here on the LUME train splits."""
    texts = [r["input"] + r["output"] for split in ("forget_train", "retain_train") for r in lume_rows[split]]
    return train_tokenizer(texts, vocab_size=2048)


@pytest.fixture
def tiny_model(tokenizer):
    """A fresh ~1.3M-parameter OLMo-architecture model."""
    return tiny_causal_lm(tokenizer, arch="olmo", seed=0)


def short_rows(rows: list[dict], task: str = "Task2", n: int = 8) -> list[dict]:
    """The first `n` rows of one task: Task2 rows (fake biographies) are short, so tiny models memorise them fast."""
    return [r for r in rows if r["task"] == task][:n]


@pytest.fixture(scope="session")
def memorised_rows(lume_rows) -> dict[str, list[dict]]:
    """A few short forget and retain rows (real LUME Task2 rows) that `memorised_model` has memorised."""
    return {"forget": short_rows(lume_rows["forget_train"], n=8), "retain": short_rows(lume_rows["retain_train"], n=8)}


@pytest.fixture(scope="session")
def _memorised_state(tokenizer, memorised_rows):
    model = tiny_causal_lm(tokenizer, arch="olmo", seed=0)
    rows = [r for split in ("forget", "retain") for r in memorised_rows[split]]
    memorise(model, tokenizer, rows, epochs=60, learning_rate=3e-3)
    return model


@pytest.fixture
def memorised_model(_memorised_state):
    """A tiny model that regurgitates `memorised_rows` (a fresh copy per test, so tests cannot leak into each other)."""
    return copy.deepcopy(_memorised_state)


@pytest.fixture(scope="session")
def saved(tmp_path_factory, lume_rows, lume_dir):
    """A small memorised model and tokenizer saved to disk, with 8 forget/retain validation rows and 5+5 MIA
    documents in the LUME layout: what subprocess tests (torchrun, kill and resume) load."""
    root = tmp_path_factory.mktemp("mp")
    texts = [r["input"] + r["output"] for s in ("forget_train", "retain_train") for r in lume_rows[s]]
    tokenizer = train_tokenizer(texts, vocab_size=1024)
    data = root / "data"
    (data / "mia").mkdir(parents=True)
    rows = {}
    for split in ("forget_validation", "retain_validation"):
        rows[split] = [r for r in lume_rows[split] if r["task"] == "Task2"][:8]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[split]))
    for name in ("member", "nonmember"):
        docs = read_jsonl(lume_dir / "mia" / f"{name}.jsonl")[:5]
        (data / "mia" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in docs))
    model = tiny_causal_lm(tokenizer, hidden_size=64, num_hidden_layers=2)
    memorise(model, tokenizer, rows["forget_validation"] + rows["retain_validation"], epochs=40)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root

"""The project's cache folder, an atomic cache of built models (a model, its tokenizer and a JSON record), and an
atomic write of a small text file (`write_text_atomic`).

Used for the offline SmolLM2 conversion (pretrained.py), and for the memorised targets of the demo and the
benchmarks, so that a model built once, or an interrupted build, is never half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def cache_root() -> Path:
    """`$HF_UNLEARN_CACHE`, else `$HF_HOME/hf_unlearn`, else `$XDG_CACHE_HOME/hf_unlearn` or `~/.cache/hf_unlearn`."""
    if os.environ.get("HF_UNLEARN_CACHE"):
        return Path(os.environ["HF_UNLEARN_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hf_unlearn"
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "hf_unlearn"


def write_text_atomic(path: str | os.PathLike, text: str) -> str:
    """Write `text` to `path` through a temporary file beside it and a rename, so a reader (or a resumed run) never
    finds it half-written; returns `path` resolved."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return str(path.resolve())


def load_cached(cache_dir: str | os.PathLike, record_name: str):
    """`(model, tokenizer, record)` saved by `save_cached` in `cache_dir`, or None when it holds no complete save."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache_dir = Path(cache_dir)
    record_path = cache_dir / record_name
    if not record_path.is_file():  # written last: its presence means the save completed
        return None
    model = AutoModelForCausalLM.from_pretrained(cache_dir, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(cache_dir)
    return model, tokenizer, json.loads(record_path.read_text())


def save_cached(model, tokenizer, record: dict, cache_dir: str | os.PathLike, record_name: str) -> None:
    """Save a built model (safetensors), its tokenizer and a JSON record in `cache_dir`, replacing what was there.

    Everything is written to a temporary folder beside it and moved in place, so an interrupted run never leaves a
    half-written cache that a later run would load.
    """
    cache_dir = Path(cache_dir)
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / record_name).write_text(json.dumps(record, indent=1))
        if cache_dir.exists():
            shutil.rmtree(cache_dir)
        os.replace(tmp, cache_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_or_build(cache_dir: str | os.PathLike, record_name: str, build):
    """`(model, tokenizer, info)` from the cache in `cache_dir`, else from `build()` (which returns `(model,
    tokenizer, record)`) and then cached. `info` is the record plus `cache_dir` and `from_cache`."""
    cached = load_cached(cache_dir, record_name)
    from_cache = cached is not None
    if not from_cache:
        cached = build()
        save_cached(*cached, cache_dir, record_name)
    model, tokenizer, record = cached
    if not from_cache:
        # A model built from a config has no name: naming the folder it is cached in makes it the same as one loaded
        # from there, so an adapter trained on it names its base (peft reads `name_or_path`).
        model.name_or_path = model.config.name_or_path = str(cache_dir)
    return model, tokenizer, {**record, "cache_dir": str(cache_dir), "from_cache": from_cache}

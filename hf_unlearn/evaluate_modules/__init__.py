"""The LUME and TOFU scores as Hugging Face `evaluate` metric modules, loadable offline from their folders:

    import evaluate
    from hf_unlearn.evaluate_modules import module_path

    lume = evaluate.load(module_path("lume"))
    lume.compute(predictions=generations, references=expected_outputs, ids=row_ids, tasks=tasks, splits=splits)

Each module calls the same function the rest of the project scores with (`hf_unlearn.metrics.lume`,
`hf_unlearn.metrics.tofu`), so a pipeline that collects metrics through `evaluate` gets the same numbers.
"""

from __future__ import annotations

from pathlib import Path

MODULES = ("lume", "tofu_forget_quality")


def module_path(name: str) -> str:
    """The folder of metric module `name` (what `evaluate.load` takes)."""
    if name not in MODULES:
        raise ValueError(f"unknown metric module {name!r}; known: {', '.join(MODULES)}")
    return str(Path(__file__).resolve().parent / name)

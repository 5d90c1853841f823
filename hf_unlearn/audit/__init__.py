"""Does the forgetting hold? Attacks and probes on an unlearned model, and `audit_model` that runs them all.

- `quantization`: round-to-nearest int8/int4 weight quantization (Zhang et al. 2025);
- `relearn`: a short fine-tune on part of the forget documents, measured on the others (Hu et al. 2024);
- `memorization`: teacher-forced exact memorization and extraction strength;
- `probes`: shorter prompts and paraphrased questions;
- `run`: `audit_model`, and `write_audit` for `audit.json` / `audit.md` / `audit.png` (`hf-unlearn audit`).
"""

from .memorization import (exact_memorization, extraction_strength, mean_memorization, memorization_scores,
                           row_memorization, teacher_forced_predictions)
from .probes import paraphrase_rows, prefix_rows
from .quantization import SCHEMES, quantization_scales, quantize_model, quantize_weight
from .relearn import RelearnConfig, relearn, split_documents
from .run import PROBES, audit_markdown, audit_model, judge, verdicts, write_audit

__all__ = [
    "PROBES", "SCHEMES", "RelearnConfig", "audit_markdown", "audit_model", "exact_memorization",
    "extraction_strength", "judge", "mean_memorization", "memorization_scores", "row_memorization", "paraphrase_rows",
    "prefix_rows", "quantization_scales",
    "quantize_model", "quantize_weight", "relearn", "split_documents", "teacher_forced_predictions", "verdicts",
    "write_audit",
]

"""What an unlearning step needs in memory at 1B, 7B and 70B, on paper, checked against measured peaks.

    python benchmarks/memory_at_scale.py            # writes benchmarks/results/memory_at_scale.md
    python benchmarks/memory_at_scale.py --no-write

The formula (`step_memory`), per GPU, for the trainer's step (forget and retain rows in one forward, padded to one
width; the reference pass without gradient; Adam):

- weights: parameters x bytes, divided over the GPUs under ZeRO-3, plus ZeRO-3's working set (one decoder layer
  gathered whole, and the prefetch bucket, 0.9 h^2 values, as transformers' "auto" sets it);
- the trained parameters (LoRA's, or every weight for full fine-tuning): their values are in the weights; Adam's two
  fp32 moments (8 bytes each parameter) and, in half precision, an fp32 master copy (4 more), divided over the GPUs
  under ZeRO-3; their gradients (the values' bytes) at the end of the backward pass;
- the reference: nothing for the adapter-disabled reference (its logits at answer positions only); a deep copy adds
  the weights again (sharded the same way under ZeRO-3);
- activations, per token of the padded batch: what autograd keeps of a Llama/OLMo decoder layer (SwiGLU, SDPA):
  9 h (layer input, normed input, q, k and v as attention sees them, attention output before and after the output
  reshape, the residual sum and its normed value) + 4 i (gate, its activation, up, their product) + 7 r (LoRA's
  down-projected inputs) per layer; with gradient checkpointing, h per layer plus one layer's worth;
- the logits: the policy's `(tokens, vocab)` logits and their gradient, written into one tensor of that shape
  (`hf_unlearn.losses.token_log_probs`: no log-softmax copy), and two float32 temporaries of one chunk of rows
  (`CHUNK_ELEMENTS`) where the log-normaliser is computed;
- the peak: the static part plus the larger of (activations + logits) and (every trained parameter's gradient), the
  two phases of the backward pass.

It is checked against the peaks that benchmarks/step_cost.py measured (benchmarks/results/step_cost.md,
step_cost_smollm2.md: CPU, fp32, one process, the RSS above the process before the model was built), which it reads
from those files: within 15% is the bar. The 1B/7B/70B shapes are those of allenai/OLMo-1B-0724-hf,
allenai/OLMo-7B-0724-hf (the SemEval-2025 Task 4 models) and meta-llama/Llama-2-70b-hf, written here from their
published configs (no download); their parameter counts come from building them on PyTorch's meta device.
"""

from __future__ import annotations

import argparse
import datetime
import re
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GIB = 2**30

# Published configs (the fields that set the shapes).
SCALE = {
    "OLMo-1B-0724": ("olmo", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                  num_attention_heads=16, num_key_value_heads=16, vocab_size=50304,
                                  tie_word_embeddings=True)),
    "OLMo-7B-0724": ("olmo", dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                  num_attention_heads=32, num_key_value_heads=32, vocab_size=50304,
                                  tie_word_embeddings=False)),
    "Llama-2-70B": ("llama", dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                                  num_attention_heads=64, num_key_value_heads=8, vocab_size=32000,
                                  tie_word_embeddings=False)),
}
# The models step_cost.py measured: tiny OLMo-architecture models built from a config (its SIZES, vocabulary 27045)
# and SmolLM2-135M-Instruct (a Llama architecture; its config read from the offline package).
MEASURED = {
    "small": ("step_cost.md", ("olmo", dict(hidden_size=96, intermediate_size=384, num_hidden_layers=4,
                                            num_attention_heads=4, num_key_value_heads=4, vocab_size=27045,
                                            tie_word_embeddings=False, eos_token_id=0, pad_token_id=0))),
    "large": ("step_cost.md", ("olmo", dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=4,
                                            num_attention_heads=8, num_key_value_heads=8, vocab_size=27045,
                                            tie_word_embeddings=False, eos_token_id=0, pad_token_id=0))),
    "smollm2": ("step_cost_smollm2.md", None),
}
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Shape:
    parameters: int
    layer_parameters: int
    hidden: int
    intermediate: int
    layers: int
    vocab: int
    lora_per_rank: int  # LoRA parameters per unit of rank on every linear layer of the decoder: sum of (in + out)


def model_shape(arch: str, fields: dict) -> Shape:
    """Parameter counts from the model built on the meta device (no memory, no download)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, OlmoConfig

    config = {"olmo": OlmoConfig, "llama": LlamaConfig}[arch](**fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    layer = model.model.layers[0]
    lora = sum(m.in_features + m.out_features for name, m in model.named_modules()
               if name.rsplit(".", 1)[-1] in LINEAR_NAMES)
    return Shape(sum(p.numel() for p in model.parameters()), sum(p.numel() for p in layer.parameters()),
                 config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size, lora)


def smollm2_shape() -> Shape:
    from transformers import AutoConfig

    from hf_unlearn.pretrained import resolve_model_path

    config = AutoConfig.from_pretrained(resolve_model_path("smollm2"))
    fields = {k: getattr(config, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads", "vocab_size",
                                              "tie_word_embeddings")}
    return model_shape("llama", fields)


def step_memory(shape: Shape, tokens: int, answer_tokens: int, bytes_per_value: int, lora_rank: int | None,
                reference: str = "adapter", gpus: int = 1, zero3: bool = False, checkpointing: bool = False
                ) -> dict[str, float]:
    """Bytes per GPU of one step, by part, and the peak (see the module docstring). `lora_rank=None`: full
    fine-tuning. `reference`: "none", "adapter" (the adapter disabled) or "copy" (a deep copy)."""
    shard = gpus if zero3 else 1
    h, i, n, v = shape.hidden, shape.intermediate, shape.layers, shape.vocab
    from hf_unlearn.losses import CHUNK_ELEMENTS

    lora = 0 if lora_rank is None else lora_rank * shape.lora_per_rank
    weights = (shape.parameters + lora) * bytes_per_value / shard
    if zero3:
        weights += (shape.layer_parameters + 0.9 * h * h) * bytes_per_value  # gathered layer + prefetch bucket
    trained = shape.parameters if lora_rank is None else lora
    # Adam's two moments in fp32, and an fp32 master copy where the values are in half precision
    state = trained * (8 + (4 if bytes_per_value < 4 else 0)) / shard
    copy = shape.parameters * bytes_per_value / shard if reference == "copy" else 0.0
    per_layer = 9 * h + 4 * i + (7 * lora_rank if lora_rank else 0)
    kept = (n * h + per_layer) if checkpointing else n * per_layer
    activations = tokens * kept * bytes_per_value
    # the logits and their gradient, plus the log-normaliser's two float32 temporaries of one chunk of rows
    logits = 2 * tokens * v * bytes_per_value + 2 * min(CHUNK_ELEMENTS, tokens * v) * 4
    if reference != "none":
        logits += answer_tokens * v * 4  # the reference's logits at answer positions, float32
    gradients = trained * bytes_per_value / shard
    static = weights + state + copy
    return {"weights": weights, "trained state": state, "reference copy": copy, "activations": activations,
            "logits": logits, "peak": static + max(activations + logits, gradients)}


VARIANT_SETTINGS = {  # step_cost.py's variants: (LoRA rank or None, reference)
    "a": (8, "none"), "b": (8, "adapter"), "d": (8, "copy"), "e": (None, "copy"),
}


def measured_rows(file: str, size: str) -> tuple[dict, dict[str, float]]:
    """The batch and the measured memory (MB) of each variant of `size` in a step_cost results file."""
    text = (RESULTS / file).read_text()
    section = text[text.index(f"### {size}:"):]
    head = re.search(r"batch width (\d+)/(\d+) tokens, (\d+) answer tokens", section)
    batch = {"tokens": 8 * max(int(head[1]), int(head[2])), "answer_tokens": int(head[3])}  # 4 + 4 rows, one width
    memory = {}
    for variant in VARIANT_SETTINGS:
        row = re.search(rf"^\| \({variant}\) [^|]*\| ([\d.]+) \|", section, re.M)
        if row:
            memory[variant] = float(row[1])
    return batch, memory


def check() -> list[dict]:
    rows = []
    for size, (file, spec) in MEASURED.items():
        shape = smollm2_shape() if spec is None else model_shape(*spec)
        batch, memory = measured_rows(file, size)
        for variant, measured in memory.items():
            rank, reference = VARIANT_SETTINGS[variant]
            predicted = step_memory(shape, batch["tokens"], batch["answer_tokens"], 4, rank, reference)["peak"] / 2**20
            rows.append({"model": size, "variant": variant, "measured_mb": measured, "formula_mb": predicted,
                         "error": predicted / measured - 1})
    return rows


def scale_table(rank: int, rows: int, length: int, gpus: int) -> list[dict]:
    out = []
    tokens = rows * length
    answers = tokens // 2
    for name, spec in SCALE.items():
        shape = model_shape(*spec)
        entry = {"model": name, "parameters": shape.parameters, "lora": rank * shape.lora_per_rank}
        for key, zero3, reference in (("one GPU", False, "adapter"), ("one GPU, copy", False, "copy"),
                                      ("ZeRO-3", True, "adapter"), ("ZeRO-3, copy", True, "copy")):
            entry[key] = step_memory(shape, tokens, answers, 2, rank, reference, gpus=gpus, zero3=zero3,
                                     checkpointing=True)["peak"] / GIB
        out.append(entry)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lora_r", type=int, default=16, help="LoRA rank for the 1B/7B/70B table.")
    parser.add_argument("--rows", type=int, default=8, help="Rows per GPU per forward (forget + retain).")
    parser.add_argument("--length", type=int, default=512, help="Tokens per row (padded width).")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs that ZeRO-3 shards over.")
    parser.add_argument("--no-write", action="store_true", help="Print only.")
    args = parser.parse_args(argv)

    checked = check()
    table = scale_table(args.lora_r, args.rows, args.length, args.gpus)
    worst = max(abs(r["error"]) for r in checked)
    lines = [
        "# Memory at scale: the formula, and its check against measured peaks", "",
        f"`python benchmarks/memory_at_scale.py` ({datetime.date.today().isoformat()}; the module docstring states "
        "the formula). Per GPU, one step of NPO + NLL + KL: bf16, LoRA r "
        f"{args.lora_r} on every linear layer, {args.rows} rows of {args.length} tokens per GPU (forget and retain), "
        f"gradient checkpointing, Adam; ZeRO-3 over {args.gpus} GPUs. \"copy\": a deep-copied reference model "
        "instead of the adapter disabled.", "",
        "| model | parameters | LoRA | one GPU | one GPU, copy | ZeRO-3 | ZeRO-3, copy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in table:
        lines.append(f"| {e['model']} | {e['parameters'] / 1e9:.2f}B | {e['lora'] / 1e6:.1f}M | "
                     + " | ".join(f"{e[k]:.1f} GiB" for k in ("one GPU", "one GPU, copy", "ZeRO-3", "ZeRO-3, copy"))
                     + " |")
    lines += ["", "## The check: the formula against step_cost.py's measured peaks (CPU, fp32, one process)", "",
              "| model | variant | measured (MB) | formula (MB) | error |", "|---|---|---:|---:|---:|"]
    for r in checked:
        lines.append(f"| {r['model']} | ({r['variant']}) | {r['measured_mb']:.0f} | {r['formula_mb']:.0f} | "
                     f"{r['error']:+.0%} |")
    lines += ["", f"Largest error: {worst:.0%} ({'PASS' if worst <= 0.15 else 'FAIL'}: the bar is 15%). Variants: (a) "
              "gd with LoRA r 8, no reference; (b) NPO + NLL + KL, adapter-disabled reference; (d) (b) with a deep "
              "copy; (e) full fine-tuning with a deep copy. Not measured on a GPU: no GPU has been lent to this "
              "project (benchmarks/gpu_check.py records the peak GPU memory of one SmolLM2 run when one is)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        (RESULTS / "memory_at_scale.md").write_text(text)


if __name__ == "__main__":
    main()

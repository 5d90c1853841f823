"""Small causal language models built offline: a tokenizer trained locally and a model built from a config.

Used by the tests, the embedded demo and the benchmarks, where nothing can be downloaded from the Hub. The
models are ordinary `transformers` models (OLMo or Llama architecture), so everything that works on them works on
the real checkpoints.
"""

from __future__ import annotations

import sys

from collections.abc import Iterable, Sequence

import torch
from transformers import LlamaConfig, LlamaForCausalLM, OlmoConfig, OlmoForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` and wrap it as a `PreTrainedTokenizerFast`.

    Byte-level BPE never produces an unknown token, so any text (including text the tokenizer never saw) round-trips
    through `encode`/`decode`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def tiny_causal_lm(
    tokenizer: PreTrainedTokenizerFast,
    arch: str = "olmo",
    hidden_size: int = 128,
    num_hidden_layers: int = 4,
    num_attention_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 1024,
    seed: int = 0,
) -> torch.nn.Module:
    """Build a randomly initialised OLMo- or Llama-architecture causal LM sized for a CPU.

    With the defaults and a 2048-token vocabulary this is about 1.3M parameters; `hidden_size=256,
    num_hidden_layers=4` gives about 4.5M.
    """
    config_cls, model_cls = {"olmo": (OlmoConfig, OlmoForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}[arch]
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return model_cls(config)


def memorise(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    rows: Sequence[str | dict],
    epochs: int = 30,
    learning_rate: float = 3e-3,
    batch_size: int = 8,
    max_length: int = 512,
    seed: int = 0,
    lr_scheduler: str = "constant",
    warmup_ratio: float = 0.0,
    progress: bool = False,
    group_by_length: bool = False,
    stop_loss: float | None = None,
    anchor: Sequence[str | dict] | None = None,
    anchor_weight: float = 1.0,
    anchor_batch_size: int = 4,
) -> list[float]:
    """Fine-tune `model` on `rows` until it regurgitates them; returns the mean loss of each epoch.

    A row is a whole document (a string, followed by EOS) or a dict with `input` and `output`, tokenised exactly as
    the unlearning trainer tokenises it (prompt tokens, answer tokens, EOS), with loss on every token. A deliberately
    plain loop: it builds the *target* of unlearning (a model that memorised its data, as the task organisers did
    with OLMo), not part of any unlearning method.

    `lr_scheduler` is a `transformers.get_scheduler` name; `"cosine"` with a short warm-up memorises in far fewer
    epochs than a constant rate, whose late steps keep bouncing around the minimum. `progress` shows a tqdm bar.

    `group_by_length` batches rows of similar length (the batches, not the rows within them, are shuffled each
    epoch): real data mixes 20-token questions with 400-token passages, which padding would otherwise triple.
    `stop_loss` ends memorisation after the first epoch whose mean loss is below it (a recall check that costs no
    generation: at a mean token loss of a few hundredths greedy decoding reproduces the rows).

    `anchor` (a peft model only): rows of general text on which each step also minimises `anchor_weight` times the
    token-mean KL(model || model with its adapter disabled), `anchor_batch_size` rows a step, cycled. Memorising
    LUME rows through LoRA alone damaged SmolLM2-135M's general ability (held-out perplexity 18 -> 68, TOFU general
    knowledge 0.34 -> 0.07); the anchor keeps the adapter from changing the model away from what it memorises.
    The returned losses are the memorisation loss alone.
    """
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    from ..losses import kl_per_token

    generator = torch.Generator().manual_seed(seed)
    encoded = [_encode(tokenizer, row, max_length) for row in rows]
    if anchor is not None and not hasattr(model, "disable_adapter"):
        raise ValueError("memorise(anchor=...) needs a peft model: the anchor's reference is its disabled adapter")
    anchor_encoded = [_encode(tokenizer, row, max_length) for row in anchor or []]
    anchor_order: list[int] = []
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    total_steps = epochs * -(-len(encoded) // batch_size)
    scheduler = get_scheduler(lr_scheduler, optimizer, int(warmup_ratio * total_steps), total_steps)
    # disable=None: tqdm draws only on a terminal (a bar redrawn into a log file is a line per redraw)
    bar = tqdm(total=total_steps, desc="memorising", disable=None if progress else True)
    model.train()
    losses = []
    by_length = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for _ in range(epochs):
        if group_by_length:
            groups = [by_length[start : start + batch_size] for start in range(0, len(by_length), batch_size)]
            batches = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
        else:
            order = torch.randperm(len(encoded), generator=generator).tolist()
            batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        total = 0.0
        for batch in batches:
            ids, mask, labels = pad_rows([encoded[i] for i in batch], tokenizer.pad_token_id)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            if anchor_encoded:
                if len(anchor_order) < anchor_batch_size:
                    anchor_order += torch.randperm(len(anchor_encoded), generator=generator).tolist()
                picked, anchor_order = anchor_order[:anchor_batch_size], anchor_order[anchor_batch_size:]
                a_ids, a_mask, a_labels = pad_rows([anchor_encoded[i] for i in picked], tokenizer.pad_token_id)
                with torch.no_grad(), model.disable_adapter():
                    ref_logits = model(input_ids=a_ids, attention_mask=a_mask).logits
                kl = kl_per_token(model(input_ids=a_ids, attention_mask=a_mask).logits, ref_logits, a_labels)
                (loss + anchor_weight * kl.sum() / a_labels[:, 1:].ne(-100).sum()).backward()
            else:
                loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            total += loss.item() * len(batch)
            bar.update()
        losses.append(total / len(encoded))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if progress and bar.disable:  # off a terminal: a plain line an epoch instead of the bar (a log file)
            print(f"memorising: epoch {len(losses)}/{epochs}, mean loss {losses[-1]:.4f}", file=sys.stderr, flush=True)
        if stop_loss is not None and losses[-1] < stop_loss:
            break
    bar.close()
    model.eval()
    return losses


def _encode(tokenizer, row: str | dict, max_length: int) -> list[int]:
    """A row's token ids as the unlearning trainer builds them (prompt, answer, EOS), or a document's plus EOS."""
    from ..data.collator import tokenize_row

    if isinstance(row, dict):
        return tokenize_row(tokenizer, row["input"], row["output"], max_length, loss_on_prompt=True)[0]["input_ids"]
    return tokenizer(row, truncation=True, max_length=max_length - 1)["input_ids"] + [tokenizer.eos_token_id]


def pad_rows(rows: list[list[int]], pad_id: int):
    """Right-padded `(input_ids, attention_mask, labels)` of whole documents (loss on every token), padded by the
    collator's own routine."""
    from ..data.collator import pad_features

    return pad_features([{"input_ids": row, "labels": row} for row in rows], pad_id)

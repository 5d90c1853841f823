"""Greedy completions of raw prompts, as the LUME evaluation script makes them, one at a time or batched.

The task's script tokenises each `input` on its own (no chat template), calls
`model.generate(input_ids, max_new_tokens=256, do_sample=False, use_cache=True, pad_token_id=eos)` and decodes only
the new tokens with `skip_special_tokens=True, clean_up_tokenization_spaces=True` (see `decode_like_task`).
`generate_one_at_a_time` does exactly that; `generate_completions` gives the same texts much faster by batching
rows of similar length with left padding and an attention mask (transformers 5's `generate` derives the position ids
from the mask, so a padded row sees the positions it has unpadded; tests/test_metrics_generation.py checks it).

`chat_template=True` (both functions; off by default, and the task's own scoring never uses it) generates instead
from each prompt wrapped in the tokenizer's chat template as one user turn followed by the assistant header
(`prompt_token_ids`): an instruct model often answers a raw question with EOS straight away. The training rows are
still the raw `input` (see `hf_unlearn.data.tokenize_row`), so scores with the template measure the model on
prompts it was not unlearned on.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from hf_unlearn.data.collator import pad_ids
from hf_unlearn.metrics._model_state import evaluation_mode, model_device

DEFAULT_BATCH_SIZE = 32
DRAFT_BATCH_SIZE = 8


def _greedy_kwargs(tokenizer: Any, max_new_tokens: int, generate_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The task script's generation arguments; `generate_kwargs` may add to or override them."""
    kwargs = {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "use_cache": True,
        "pad_token_id": tokenizer.eos_token_id,
    }
    kwargs.update(generate_kwargs)
    return kwargs


def prompt_token_ids(tokenizer: Any, prompt: str, chat_template: bool = False) -> list[int]:
    """The token ids generation starts from: the raw prompt tokenised on its own, as the task's script does, or with
    `chat_template=True` the prompt as one user message of the tokenizer's chat template plus the assistant header
    (`add_generation_prompt=True`; the template adds its own special tokens, and its default system prompt if it has
    one)."""
    if not chat_template:
        return tokenizer(prompt)["input_ids"]
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat_template=True, but the tokenizer has no chat template (tokenizer.chat_template).")
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(encoded["input_ids"])


def decode_like_task(tokenizer: Any, token_ids: Sequence[int]) -> str:
    """Decode as the task's script did: `skip_special_tokens=True, clean_up_tokenization_spaces=True`.

    transformers 4.x (the script's January 2025 environment) applied `clean_up_tokenization` (" ." -> ".",
    " n't" -> "n't", ...) for every tokenizer; transformers 5 silently skips it for BPE tokenizers such as OLMo's.
    So the clean-up is applied here explicitly, through the tokenizer's own `clean_up_tokenization` as 4.x did.
    """
    text = tokenizer.decode(list(token_ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return tokenizer.clean_up_tokenization(text)


def generate_one_at_a_time(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 256,
    chat_template: bool = False,
    **generate_kwargs: Any,
) -> list[str]:
    """Complete each prompt on its own, exactly as the task's evaluation script does (the reference path).

    Returns the decoded new tokens of each prompt, in input order. `chat_template`: see `prompt_token_ids`.
    """
    kwargs = _greedy_kwargs(tokenizer, max_new_tokens, generate_kwargs)
    device = model_device(model)
    completions = []
    with evaluation_mode(model):
        for prompt in prompts:
            input_ids = torch.tensor([prompt_token_ids(tokenizer, prompt, chat_template)], dtype=torch.long).to(device)
            output = model.generate(input_ids, **kwargs)
            completions.append(decode_like_task(tokenizer, output[0, input_ids.shape[1] :].tolist()))
    return completions


def _eos_ids(model: torch.nn.Module, kwargs: dict[str, Any]) -> set[int]:
    """The token ids that stop generation (what `generate` itself stops on)."""
    eos = kwargs.get("eos_token_id", getattr(getattr(model, "generation_config", None), "eos_token_id", None))
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def _until_eos(tokens: list[int], eos_ids: set[int]) -> list[int]:
    """Cut a row after its first stop token, as the unbatched path ends there (later positions are filler)."""
    for i, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[: i + 1]
    return tokens


# Generation settings that depend on where the current `generate` call started or will end (the number of tokens it
# has generated, or its last step): with any of them set, stopping and resuming could change the text, so each
# batch is then generated in one call.
_CALL_DEPENDENT = (
    "min_new_tokens",
    "min_length",
    "max_length",
    "forced_eos_token_id",
    "begin_suppress_tokens",
    "exponential_decay_length_penalty",
)


def _resumable(model: torch.nn.Module, generate_kwargs: dict[str, Any]) -> bool:
    """Whether generating in rounds (stop, regroup, resume) gives what one `generate` call would."""
    if any(generate_kwargs.get(key) for key in _CALL_DEPENDENT):
        return False
    config = getattr(model, "generation_config", None)
    # max_length is always set in a config (default 20) and is overridden by max_new_tokens: not a concern there.
    return not any(getattr(config, key, None) for key in _CALL_DEPENDENT if key != "max_length")


def _generate_left_padded(
    model: torch.nn.Module, rows: list[list[int]], pad_id: int, kwargs: dict[str, Any]
) -> list[list[int]]:
    """One `generate` call on token-id rows padded on the left by hand; returns each row's new tokens."""
    input_ids, attention_mask = pad_ids(rows, pad_id, side="left")
    width = input_ids.shape[1]
    device = model_device(model)
    output = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **kwargs)
    return output[:, width:].tolist()


def _past_limit(tokenizer, new_tokens: list[int], limit: int | None) -> bool:
    return limit is not None and len(decode_like_task(tokenizer, new_tokens).strip()) > limit


def _base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a peft wrapper (which passes its forward's arguments on), else `model`."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _keep_last_logits(model: torch.nn.Module, keep: int) -> dict[str, int]:
    """`{"logits_to_keep": keep}` where the model's forward takes it (the output layer on the last `keep` positions
    only, not a vocabulary-wide row per prompt token), else nothing."""
    forward = _base_model(model).forward
    return {"logits_to_keep": keep} if "logits_to_keep" in inspect.signature(forward).parameters else {}


def _accept_drafts(
    model: torch.nn.Module, rows: list[list[int]], drafts: list[list[int]], pad_id: int
) -> list[list[int]]:
    """The greedy tokens that one forward pass proves for each row: the longest prefix of its draft that is the
    argmax at every position, then the argmax after it (the token greedy decoding takes where the draft stops being
    right, or after the whole draft). Left padding, as `generate` is called."""
    input_ids, attention_mask = pad_ids([r + d for r, d in zip(rows, drafts)], pad_id, side="left")
    device = model_device(model)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # what `generate` gives a left-padded row
    # only the positions that predict a draft token (or the one after it): the logits of the prompt positions would
    # cost a vocabulary-wide row each
    keep = max(len(d) for d in drafts) + 1
    extra = _keep_last_logits(model, keep)
    with torch.no_grad():
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                       position_ids=position_ids.to(device), **extra).logits
    predicted = logits.argmax(-1).cpu()
    width = predicted.shape[1]
    out = []
    for b, draft in enumerate(drafts):
        # predictions for the draft's positions and the one after it: the last len(draft) + 1 positions' argmaxes,
        # shifted by one (position t predicts token t + 1)
        guesses = predicted[b, width - len(draft) - 1:].tolist()
        accepted = 0
        while accepted < len(draft) and guesses[accepted] == draft[accepted]:
            accepted += 1
        out.append(draft[:accepted] + [guesses[accepted]])
    return out


# Generation settings under which greedy decoding is a plain argmax of the last position's logits (no logits
# processor, no stopping rule but EOS and the token limit, a dynamic cache): the only settings `_decode_compacting`
# reproduces.
_PLAIN_KWARGS = {"max_new_tokens", "do_sample", "use_cache", "pad_token_id", "eos_token_id"}
_PLAIN_CONFIG = _PLAIN_KWARGS | {"bos_token_id", "max_length", "temperature", "top_p", "top_k", "min_p", "typical_p",
                                 "output_attentions", "output_hidden_states", "transformers_version",
                                 "_from_model_config", "cache_implementation", "return_dict_in_generate"}


def _compactable(model: torch.nn.Module, kwargs: dict[str, Any]) -> bool:
    """Whether `_decode_compacting` gives `generate`'s greedy tokens under these settings: nothing but the plain
    ones set (the sampling fields are ignored by greedy decoding) and a decoder-only model whose forward takes a
    dynamic KV cache. (Processes in lockstep, whose forward passes are collective, are the caller's to exclude.)"""
    if set(kwargs) - _PLAIN_KWARGS or kwargs.get("do_sample") or not kwargs.get("use_cache", True):
        return False
    config = getattr(model, "generation_config", None)
    if config is None:
        return False
    diff = config.to_diff_dict()
    if set(diff) - _PLAIN_CONFIG or diff.get("cache_implementation") not in (None, "dynamic"):
        return False
    inner = _base_model(model)
    supports = getattr(inner, "_supports_default_dynamic_cache", None)
    if getattr(inner.config, "is_encoder_decoder", False) or (supports is not None and not supports()):
        return False
    return _cache_argument(inner) is not None


def _cache_argument(model: torch.nn.Module) -> str | None:
    """The name under which `model.forward` takes its KV cache (`cache` in recent transformers, `past_key_values`
    before), or None."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def _decode_compacting(
    model: torch.nn.Module,
    rows: list[list[int]],
    budgets: list[int],
    pad_id: int,
    eos_ids: set[int],
    stop: Callable[[int, list[int]], bool] | None = None,
) -> list[list[int]]:
    """Greedy decoding of left-padded `rows` that drops each row from the batch, and from the KV cache, once it has
    stopped: at EOS, after `budgets[j]` new tokens, or where `stop(j, new_tokens)` says so. Returns each row's new
    tokens (EOS included where it stopped there).

    `generate` keeps a stopped row in its batch until the longest row stops, and on a CPU a decoding step costs about
    in proportion to the rows in it; here a batch shrinks as its rows stop, so a batch costs about the sum of its
    rows' lengths instead of its longest row's length times the rows. The positions, mask and cache are those
    `generate` builds (positions from the mask's cumulative sum), so the tokens are greedy decoding's.
    """
    from transformers import DynamicCache

    device = model_device(model)
    input_ids, mask = (t.to(device) for t in pad_ids(rows, pad_id, side="left"))
    inner = _base_model(model)
    extra = _keep_last_logits(model, 1)
    cache = DynamicCache(config=inner.config.get_text_config(decoder=True))  # as `generate` builds it
    extra[_cache_argument(inner)] = cache
    out: list[list[int]] = [[] for _ in rows]
    live = torch.arange(len(rows), device=device)  # the batch rows still decoding, as indices into `rows`
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    step_ids = input_ids
    while live.numel():
        logits = model(input_ids=step_ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra).logits
        tokens = logits[:, -1].float().argmax(-1)
        keep = []
        for k, (j, token) in enumerate(zip(live.tolist(), tokens.tolist())):
            out[j].append(token)
            if not (token in eos_ids or len(out[j]) >= budgets[j] or (stop is not None and stop(j, out[j]))):
                keep.append(k)
        if len(keep) < live.numel():
            if not keep:
                break
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            live, tokens, mask, positions = live[index], tokens[index], mask[index], positions[index]
        step_ids = tokens.unsqueeze(-1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
        positions = positions[:, -1:] + 1
    return out


def generate_completions(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 256,
    batch_size: int = DEFAULT_BATCH_SIZE,
    round_tokens: int | None = 32,
    lockstep: Callable[[int], int] | None = None,
    chat_template: bool = False,
    max_prompt_tokens: int | None = None,
    stop_after_chars: Sequence[int | None] | None = None,
    drafts: Sequence[str | None] | None = None,
    compact: bool = True,
    **generate_kwargs: Any,
) -> list[str]:
    """Greedy completions of `prompts`, batched; the same texts as `generate_one_at_a_time`, in input order.

    Each prompt is tokenised on its own (as the task's script does); rows are sorted by length (longest first, so a
    memory error shows in the first batch) to cut padding, and each batch is padded on the left by hand with an
    attention mask, so the tokenizer's `padding_side` is never touched. The KV cache is used.

    A batch of `generate` runs until its longest row stops, and many LUME rows (the questions) stop after a few
    tokens while others run to the limit. So generation goes in two rounds: `round_tokens` new tokens, then the rest.
    After the first the rows that stopped (EOS) are done, and the rest are regrouped by length into full batches
    and resumed from their prompt plus the tokens so far (greedy decoding of the same tokens: the same
    continuation; the prompt and the tokens so far go through the model again, nothing is re-tokenised). More
    rounds would drop more finished rows, but each one runs every remaining row's tokens through the model again.
    `round_tokens=None` generates each batch in one call, which
    is also what happens when a generation setting depends on the number of new tokens.

    `lockstep` is for models whose forward passes are collective (DeepSpeed ZeRO-3, FSDP), where every process must
    call `generate` as often as the others: a function giving the largest of a count over all processes. Each round,
    every process then makes as many `generate` calls as the process with the most batches left (a one-token
    placeholder row where it has none), with `synced_gpus=True` so each call runs until every process's batch has
    stopped. The texts are those of the default path.

    `chat_template=True` generates from each prompt wrapped in the tokenizer's chat template (`prompt_token_ids`).
    `max_prompt_tokens` keeps only the last that many tokens of a longer prompt (as training cuts a long row; the
    task's own scoring never cuts: None).

    `stop_after_chars` (one entry per prompt, None: no limit) drops a row after the round in which its decoded text,
    stripped, grew longer than that: for a score that can no longer change (an exact match against a short answer,
    `knowledge_stop_chars`), the rest of its tokens are work for nothing. Such a row's text is then a prefix of the
    full one: pass it only where the texts are scored, never where they are shown or saved.

    `drafts` (one entry per prompt, None: none) are guesses of each continuation, typically the row's reference
    answer: one forward pass over prompt + draft proves the longest prefix of the draft that greedy decoding would
    produce (the argmax at each of its positions) and the token after it, and generation resumes from there. The text
    is greedy decoding's, as without drafts (speculative decoding with the reference as the draft model); a model that
    still writes its reference back costs one pass instead of a pass per token. (On a CPU a small model's decoding is
    bound by compute, not memory, so the proving pass costs about what decoding the same tokens does: drafts save
    time there only where most of a batch is proved.) Not with `lockstep` (the verification
    pass is not collective) nor with a generation setting that depends on the number of new tokens.

    `compact=True` (the default, where the settings allow: plain greedy decoding, no `lockstep`) decodes each batch
    with its own loop that drops a row from the batch and from its KV cache as soon as it stops
    (`_decode_compacting`), in one pass without rounds: a batch then costs about the sum of its rows' lengths rather
    than its longest row's length times its rows. Otherwise, or with `compact=False`, `generate` runs in rounds as
    above.

    Rows that stop are cut after their first EOS before decoding, so the filler `generate` appends cannot leak into
    the text. Batching can still change a token where two candidates' logits tie to within float rounding (padded
    and unpadded matrix products round differently); on the LUME validation sets this is rare (see the tests).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if round_tokens is not None and round_tokens < 1:
        raise ValueError(f"round_tokens must be >= 1 or None, got {round_tokens}")
    if stop_after_chars is not None and len(stop_after_chars) != len(prompts):
        raise ValueError(f"stop_after_chars has {len(stop_after_chars)} entries for {len(prompts)} prompts")
    if drafts is not None and len(drafts) != len(prompts):
        raise ValueError(f"drafts has {len(drafts)} entries for {len(prompts)} prompts")
    kwargs = _greedy_kwargs(tokenizer, max_new_tokens, generate_kwargs)
    if lockstep is not None:
        # A process whose batch stops first keeps making forward passes while the others still generate.
        kwargs.setdefault("synced_gpus", True)
    eos_ids = _eos_ids(model, kwargs)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if round_tokens is None or not _resumable(model, generate_kwargs):
        round_tokens = max_new_tokens

    tokens = [prompt_token_ids(tokenizer, prompt, chat_template) for prompt in prompts]
    if max_prompt_tokens is not None:
        tokens = [t[-max_prompt_tokens:] for t in tokens]
    new_tokens: list[list[int]] = [[] for _ in tokens]
    pending = list(range(len(tokens))) if max_new_tokens > 0 else []

    def remaining(i: int) -> int:
        return max_new_tokens - len(new_tokens[i])

    def done(i: int) -> bool:  # a row that stopped (EOS), reached its limit, or passed its character limit
        row = new_tokens[i]
        return bool(row and row[-1] in eos_ids) or remaining(i) <= 0 or _past_limit(
            tokenizer, row, None if stop_after_chars is None else stop_after_chars[i])

    with evaluation_mode(model):
        if drafts is not None and lockstep is None and _resumable(model, generate_kwargs):
            drafted = [i for i in pending if drafts[i]]
            drafted.sort(key=lambda i: len(tokens[i]), reverse=True)
            step = min(batch_size, DRAFT_BATCH_SIZE)  # a draft's logits are a vocabulary-wide row per token
            for start in range(0, len(drafted), step):
                rows = drafted[start : start + step]
                ids = [tokenizer(drafts[i], add_special_tokens=False)["input_ids"][:max_new_tokens] for i in rows]
                for i, proved in zip(rows, _accept_drafts(model, [tokens[i] for i in rows], ids, pad_id)):
                    new_tokens[i] = _until_eos(proved[:max_new_tokens], eos_ids)
            pending = [i for i in pending if not done(i)]
        if compact and lockstep is None and _compactable(model, kwargs):
            pending.sort(key=lambda i: len(tokens[i]) + len(new_tokens[i]), reverse=True)
            for start in range(0, len(pending), batch_size):
                rows = pending[start : start + batch_size]
                limits = [None if stop_after_chars is None else stop_after_chars[i] for i in rows]

                def stop(j: int, made: list[int], rows=rows, limits=limits) -> bool:
                    return limits[j] is not None and _past_limit(tokenizer, new_tokens[rows[j]] + made, limits[j])

                outputs = _decode_compacting(model, [tokens[i] + new_tokens[i] for i in rows],
                                             [remaining(i) for i in rows], pad_id, eos_ids, stop)
                for i, output in zip(rows, outputs):
                    new_tokens[i].extend(output)
            pending = []
        # Two rounds: `round_tokens`, then the rest in one (a row still going after the first has generated
        # `round_tokens` tokens there, so `max_new_tokens - round_tokens` more is its whole remaining budget). More
        # rounds would drop more finished rows, but each resumed round runs the prompt and the tokens so far through
        # the model again, which on a CPU costs about as much as the decoding (SmolLM2, 30 LUME rows: rounds of 16,
        # 32, 64... 106 s, one round of 32 then the rest 70 s, the same texts).
        first = min(round_tokens, max_new_tokens)
        for cap in [first] + ([max_new_tokens - first] if first < max_new_tokens else []):
            num_batches = -(-len(pending) // batch_size)
            if lockstep is not None:
                # Rounds drop finished rows, so processes run out of batches at different times: each makes as many
                # calls as the busiest one (one collective per round; the single-process path makes none).
                num_batches = lockstep(num_batches)
            if num_batches == 0:
                break
            pending.sort(key=lambda i: len(tokens[i]) + len(new_tokens[i]), reverse=True)
            unfinished = []
            for start in range(0, num_batches * batch_size, batch_size):
                rows = pending[start : start + batch_size]
                if not rows:  # lockstep only: a placeholder call keeps this process in step; its output is dropped
                    _generate_left_padded(model, [[pad_id]], pad_id, {**kwargs, "max_new_tokens": cap})
                    continue
                step = min(cap, max(remaining(i) for i in rows))  # rows differ only where drafts were proved
                outputs = _generate_left_padded(
                    model, [tokens[i] + new_tokens[i] for i in rows], pad_id, {**kwargs, "max_new_tokens": step}
                )
                for i, output in zip(rows, outputs):
                    kept = _until_eos(output[: remaining(i)], eos_ids)
                    new_tokens[i].extend(kept)
                    if not done(i):
                        unfinished.append(i)
            pending = unfinished
    return [decode_like_task(tokenizer, row) for row in new_tokens]

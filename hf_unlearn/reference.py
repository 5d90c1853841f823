"""Where the reference distribution pi_ref comes from, without ever copying the model.

Three sources, chosen once when the trainer starts:

- `"base"`: a peft model whose adapter starts from its fresh initialisation. The reference is the same model with
  the adapter disabled (`disable_adapter()`): the NPO+LoRA paper's memory saving.
- `"adapter_copy"`: a peft model that arrives with an already-trained adapter. Disabling it would give the base
  model, the wrong reference, so the adapter is copied into a second, frozen adapter (a few MB) and the reference
  pass runs with that one active.
- `"model"`: a separate `ref_model` given by the user (a plain, non-peft model being fully fine-tuned).
"""

from __future__ import annotations

import contextlib
import logging

import torch

logger = logging.getLogger(__name__)


def is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def adapter_is_fresh(peft_model) -> bool | None:
    """Whether the active LoRA adapter is still the identity (all `lora_B` zero); None if not a LoRA-type adapter."""
    name = peft_model.active_adapter
    found = False
    for param_name, param in peft_model.named_parameters():
        if f"lora_B.{name}." in param_name or param_name.endswith(f"lora_B.{name}"):
            found = True
            if param.numel() and torch.count_nonzero(param.detach()).item():
                return False
    return True if found else None


def copy_adapter(peft_model, target_name: str) -> None:
    """Copy the active adapter's weights into a new frozen adapter `target_name` (no copy of the base model)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    source = peft_model.active_adapter
    if target_name in peft_model.peft_config:
        raise ValueError(f"The model already has an adapter named {target_name!r}; choose another ref_adapter_name.")
    peft_model.add_adapter(target_name, peft_model.peft_config[source])
    state = get_peft_model_state_dict(peft_model, adapter_name=source)
    set_peft_model_state_dict(peft_model, state, adapter_name=target_name)
    for param_name, param in peft_model.named_parameters():
        if f".{target_name}." in param_name or param_name.endswith(f".{target_name}"):
            param.requires_grad_(False)
    peft_model.set_adapter(source)  # adding an adapter must not change what trains


@contextlib.contextmanager
def active_adapter(peft_model, name: str):
    """Run with adapter `name` active, restoring the previous adapter and every parameter's `requires_grad`."""
    previous = peft_model.active_adapter
    requires_grad = {p: p.requires_grad for p in peft_model.parameters()}
    peft_model.set_adapter(name, inference_mode=True)
    try:
        yield
    finally:
        peft_model.set_adapter(previous)
        for param, flag in requires_grad.items():
            param.requires_grad_(flag)


def output_layer(model) -> torch.nn.Module | None:
    """The module that maps the last hidden states to logits (`lm_head`), under DDP/DeepSpeed wrappers; None if the
    model does not say."""
    inner = getattr(model, "module", model)
    get = getattr(inner, "get_output_embeddings", None)
    return get() if callable(get) else None


@contextlib.contextmanager
def output_layer_at(model, index: tuple[torch.Tensor, torch.Tensor]):
    """Within the context, `model`'s output layer sees only the hidden states at `index` (`(rows, columns)`), so a
    forward returns logits of shape `(1, N, vocab)`: with a long vocabulary the output projection is the costliest
    matmul of the pass, and its logits the largest tensor. Yields a list that holds True once the layer ran so.

    Anything the model does to the logits after the layer (soft-capping, scaling) is element-wise, so it is the same
    on the kept positions.
    """
    layer = output_layer(model)
    used = [False]
    if layer is None:
        yield used
        return

    def keep_positions(module, args):
        if used[0] or not args or args[0].dim() != 3:  # once, on the (batch, seq, hidden) states
            return None
        used[0] = True
        return (args[0][index].unsqueeze(0), *args[1:])

    handle = layer.register_forward_pre_hook(keep_positions)
    try:
        yield used
    finally:
        handle.remove()


class Reference:
    """Computes reference logits with no gradient graph, from the source chosen by `resolve`."""

    def __init__(self, kind: str, ref_model=None, adapter_name: str | None = None):
        self.kind = kind
        self.ref_model = ref_model
        self.adapter_name = adapter_name

    @classmethod
    def resolve(cls, model, ref_model=None, mode: str = "auto", adapter_name: str = "ref", needed: bool = True):
        """Pick the reference for `model`: `ref_model` if given, else from the peft adapter per `mode`.

        Raises a `ValueError` naming the fix when a reference is `needed` but `model` is a plain model without
        `ref_model`. Never deep-copies `model`.
        """
        if ref_model is not None:
            if is_peft_model(ref_model):
                raise ValueError("ref_model must be a plain model, not a peft model.")
            ref_model.eval()
            ref_model.requires_grad_(False)
            return cls("model", ref_model=ref_model)
        if not is_peft_model(model):
            if mode != "auto":
                raise ValueError(
                    f"reference={mode!r} needs a peft model (an adapter to disable or copy), but the model has no "
                    "adapter. Pass `peft_config=LoraConfig(...)` to the trainer, or leave reference='auto' and pass "
                    "`ref_model=`."
                )
            if needed:
                raise ValueError(
                    "This method needs a reference model, but the model is not a peft model and no ref_model was "
                    "given. Either pass a LoRA model (e.g. `peft_config=LoraConfig(...)` to the trainer, so the "
                    "reference is the same model with its adapter disabled), or pass `ref_model=` (a frozen copy that "
                    "you load yourself), or use a method without a reference ('ga' or 'gd')."
                )
            return cls("none")
        if mode == "auto":
            fresh = adapter_is_fresh(model)
            if fresh is None:
                logger.warning(
                    "Cannot tell whether the %s adapter is freshly initialised; using the model with the adapter "
                    "disabled as the reference. Set reference='adapter_copy' if the adapter was already trained.",
                    model.peft_type,
                )
            mode = "adapter_copy" if fresh is False else "base"
            if mode == "adapter_copy":
                logger.info("The adapter is already trained: copying it into the frozen reference adapter %r.",
                            adapter_name)
        if mode == "adapter_copy":
            if adapter_name not in model.peft_config:
                copy_adapter(model, adapter_name)
            return cls("adapter_copy", adapter_name=adapter_name)
        return cls("base")

    def context(self, peft_model):
        """The context in which `peft_model`'s forward gives the reference distribution."""
        if self.kind == "base":
            return peft_model.disable_adapter()
        if self.kind == "adapter_copy":
            return active_adapter(peft_model, self.adapter_name)
        return contextlib.nullcontext()

    @torch.no_grad()
    def logits(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Reference logits for a batch. `model` is the unwrapped policy model (DDP and DeepSpeed wrappers do not
        have `disable_adapter`; ZeRO-3 gathers parameters through hooks on the module itself)."""
        return self._forward(model, input_ids, attention_mask, None)[0]

    @torch.no_grad()
    def answer_logits(
        self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, index: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """Reference logits at the positions `index` (`(rows, columns)`) only, `(N, vocab)` float32: the output layer
        runs on those hidden states alone (see `output_layer_at`), so no `(batch, seq, vocab)` tensor is made."""
        return self.answer_outputs(model, input_ids, attention_mask, index)[0]

    @torch.no_grad()
    def answer_outputs(
        self,
        model,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        index: tuple[torch.Tensor, torch.Tensor],
        hidden_layer: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`answer_logits`, and the output hidden states of decoder layer `hidden_layer` (`hidden_states[layer + 1]`,
        `(batch, seq, hidden)`) when it is given, else None. With an empty `index` the output layer runs on no
        position at all (a pass for the hidden states only)."""
        logits, hidden = self._forward(model, input_ids, attention_mask, index, hidden_layer)
        return logits.float(), hidden

    def _forward(self, model, input_ids, attention_mask, index, hidden_layer=None):
        if self.kind == "none":
            raise RuntimeError("No reference is configured for this method.")
        target = self.ref_model if self.kind == "model" else model
        was_training = target.training
        target.eval()  # the reference is the fixed model: no dropout
        extra = {"output_hidden_states": True} if hidden_layer is not None else {}
        try:
            with self.context(model), (
                output_layer_at(target, index) if index is not None else contextlib.nullcontext([False])
            ) as kept:
                outputs = target(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra)
        finally:
            target.train(was_training)
        logits = outputs.logits
        hidden = outputs.hidden_states[hidden_layer + 1] if hidden_layer is not None else None
        if index is None:
            return logits, hidden
        return (logits[0] if kept[0] else logits[index]), hidden  # a model without a hookable output layer: full logits

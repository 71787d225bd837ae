"""A small, fast Llama / Qwen2 forward with a static KV cache, for scoring the target's tokens on a CPU.

Same interface as `reproduce.engine.lm.CachedLM` (reset / forward / rollback / next_logits, cache_tokens,
vocab_size), so the engine can use it for the target and for the ArS baseline alike. Written in the spirit of
gpt-fast: the Hugging Face model's weights are copied into plain tensors, Q/K/V and gate/up projections are fused
(4 GEMMs per layer instead of 7), and the KV cache is preallocated and indexed by position, so a rollback just
rewinds an index and no call concatenates tensors (stale entries past the position are never read).

Qwen2 is Llama plus biases on q_proj, k_proj and v_proj (fused here into one qkv bias, added in fp32 after the
GEMM), its own RoPE base (config.rope_parameters, 1e6 for Qwen2.5) and, in the checkpoints we use, an untied head.
Models configured with Qwen2's sliding-window attention are refused: this forward attends over the whole cache.

Linear modes (the choice defines the target's numerics; the ArS baseline must use the same object):
- "fp32": the model's own fp32 weights and fp32 GEMMs; logits equal Hugging Face's (bitwise in our tests).
- "bf16": weights rounded to bf16 once; every GEMM is a bf16 GEMM (inputs rounded to bf16, fp32 accumulation,
  output rounded to bf16). Norms, Qwen2's qkv bias, RoPE, attention, the KV cache and the residual stream stay
  fp32. On an AVX512-BF16 CPU this is the fastest mode for one token and nearly flat for 2..9 tokens, and it is
  batch-invariant: a call scoring n <= 16 tokens returns bitwise the logits of n single-token calls (the bf16
  GEMM rows do not depend on the row count once the down projection is cut in 768-input chunks, and attention
  runs row by row), so speculative decoding and the ArS baseline see exactly the same target.
- "int8": weight-only int8 (per-output-row bf16 scales, quantized from the bf16-rounded weights) through torch's
  _weight_int8pack_mm, bf16 activations; for drafts, where numerics change only speed and acceptance, never what
  speculative sampling emits. Batch invariance is not claimed.
- "dual": for CPUs whose single-row bf16 GEMM is slow (AVX2 without native bf16): the "bf16" numerics, computed
  by the bf16 kernel for row counts in `bf16_rows` and otherwise by an fp32 GEMM over the same bf16-rounded
  weights with the inputs and the output rounded to bf16 explicitly. Products of bf16 values are exact in fp32,
  so the two paths differ only by accumulation order, i.e. rare one-ulp flips of a GEMM output; through 30
  layers these grow to ~0.5 in the logits (total variation ~5e-3 at T=1), not bitwise agreement.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from reproduce.engine.lm import CacheSync
from reproduce.errors import ReproduceError

FAST_MODEL_TYPES = ("llama", "qwen2")  # what FastLlamaLM serves
LINEAR_MODES = ("fp32", "bf16", "dual", "int8")


ROW_ATTENTION_MAX = 16  # "bf16" mode: calls of 2..16 tokens attend row by row (batch-invariant verification)


# On the AVX512-BF16 CPU we measured (oneDNN), a bf16 GEMM's row results do not depend on the number of rows for inner
# dimensions up to at least 1024, but do (1-ulp flips) for 1536: so "bf16" GEMMs over more inputs are cut in chunks
MAX_BF16_INPUTS = 768


@dataclass
class LayerWeights:
    """One decoder layer's GEMM weights in one dtype: [out_features, in_features], as F.linear wants them."""

    qkv: torch.Tensor  # q_proj, k_proj, v_proj stacked
    out: torch.Tensor  # o_proj
    gate_up: torch.Tensor  # gate_proj, up_proj stacked
    down: tuple[torch.Tensor, ...]  # down_proj, cut along its inputs into chunks of <= MAX_BF16_INPUTS columns
    qkv_bias: torch.Tensor | None = None  # Qwen2: q_proj, k_proj, v_proj biases stacked; fp32 in every mode

    def to(self, dtype: torch.dtype) -> "LayerWeights":
        return LayerWeights(self.qkv.to(dtype), self.out.to(dtype), self.gate_up.to(dtype),
                            tuple(chunk.to(dtype) for chunk in self.down), self.qkv_bias)

    def quantized(self) -> "LayerWeights":
        """Weight-only int8 copies ("int8" mode); the down projection in one piece (no batch invariance claimed)."""
        return LayerWeights(quantize_int8(self.qkv), quantize_int8(self.out), quantize_int8(self.gate_up),
                            (quantize_int8(torch.cat(self.down, dim=1)),), self.qkv_bias)


@dataclass(frozen=True)
class Int8Weight:
    """A weight [out, in] as int8 with one bf16 scale per output row (symmetric, per channel), as gpt-fast's
    weight-only int8 and torch's _weight_int8pack_mm kernel want it."""

    weight: torch.Tensor  # [out, in] int8
    scales: torch.Tensor  # [out] bf16


def quantize_int8(weight: torch.Tensor) -> Int8Weight:
    scales = weight.float().abs().amax(dim=1).clamp(min=1e-8) / 127  # [out]
    quantized = (weight.float() / scales[:, None]).round().clamp(-127, 127).to(torch.int8)
    return Int8Weight(quantized.contiguous(), scales.to(torch.bfloat16))


def int8_gemm(x: torch.Tensor, weight: Int8Weight) -> torch.Tensor:
    """bf16 activations times int8 weights (dequantized per row inside the kernel), bf16 output."""
    return torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16).contiguous(), weight.weight, weight.scales).float()


def down_chunks(weight: torch.Tensor, chunk_inputs: int | None) -> tuple[torch.Tensor, ...]:
    """`weight` cut along its inputs into contiguous chunks of at most `chunk_inputs` columns (None: one chunk)."""
    count = 1 if chunk_inputs is None else -(-weight.shape[1] // chunk_inputs)
    return tuple(chunk.contiguous() for chunk in weight.tensor_split(count, dim=1))


def fp32_gemm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.linear(x, weight)


def bf16_gemm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A bf16 GEMM (bf16 weight): inputs rounded to bf16, fp32 accumulation inside the kernel, bf16 output."""
    return F.linear(x.to(torch.bfloat16), weight).float()


def bf16_gemm_in_fp32(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """What bf16_gemm computes, with an fp32 kernel over bf16-rounded weights (faster for a single row)."""
    return F.linear(x.to(torch.bfloat16).float(), weight).to(torch.bfloat16).float()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope_tables(head_dim: int, theta: float, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [length, head_dim] of Llama's default rotary embedding (as Hugging Face computes them)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
    freqs = torch.arange(length, dtype=torch.float)[:, None] * inv_freq[None, :]
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply RoPE to x [heads, n, head_dim] with cos/sin [n, head_dim] (Hugging Face's rotate_half convention)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def share_weights(model, layers: list[LayerWeights], head: torch.Tensor) -> None:
    """Point a bf16 Hugging Face model's linear weights at views of our fused bf16 copies (the same values), so
    the model (kept for the HF peers) and this runtime hold one copy, not two: ~2.7 of 3.5 GB for a 1.5B model.
    The down projection is stored in column chunks, which no single view can cover: it stays duplicated."""
    for layer, weights in zip(model.model.layers, layers):
        attn, mlp = layer.self_attn, layer.mlp
        groups = (([attn.q_proj, attn.k_proj, attn.v_proj], weights.qkv), ([attn.o_proj], weights.out),
                  ([mlp.gate_proj, mlp.up_proj], weights.gate_up))
        for linears, fused in groups:
            start = 0
            for linear in linears:
                rows = linear.weight.shape[0]
                if linear.weight.dtype == fused.dtype:  # a float32 model keeps its own weights
                    linear.weight.data = fused[start : start + rows]
                start += rows
    lm_head = model.lm_head.weight
    if lm_head.dtype == head.dtype and lm_head.shape == head.shape and lm_head is not model.model.embed_tokens.weight:
        lm_head.data = head


class FastLlamaLM(CacheSync):
    """A Llama or Qwen2 model's weights, a static KV cache, and the token ids that cache holds."""

    def __init__(self, config, embedding, layers_fp32, layers_bf16, norms, final_norm, head_fp32, head_bf16,
                 vocab_size: int, max_len: int, linear_mode: str, bf16_rows: range):
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.eps = config.rms_norm_eps
        self.rope_theta = config.rope_parameters["rope_theta"]
        self.embedding = embedding  # [vocab, hidden] fp32
        self.layers_fp32, self.layers_bf16 = layers_fp32, layers_bf16
        self.norms = norms  # per layer: (input norm weight, post-attention norm weight), fp32
        self.final_norm = final_norm
        self.head_fp32, self.head_bf16 = head_fp32, head_bf16  # cut to vocab_size rows
        self.vocab_size = vocab_size
        self.linear_mode = linear_mode
        self.bf16_rows = bf16_rows
        self.row_attention_max = ROW_ATTENTION_MAX
        self.split = [self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim,
                      self.num_kv_heads * self.head_dim]
        self._allocate(max_len)
        self.cache_tokens: list[int] = []

    @classmethod
    def from_hf(cls, model, vocab_size: int | None = None, max_len: int = 2048, linear_mode: str = "fp32",
                bf16_rows: range = range(2, 65)) -> "FastLlamaLM":
        """Copy a Hugging Face LlamaForCausalLM's or Qwen2ForCausalLM's weights. `bf16_rows`: row counts the
        "dual" mode runs in bf16."""
        config = model.config
        if config.model_type not in FAST_MODEL_TYPES:
            raise ReproduceError(f"FastLlamaLM supports Llama and Qwen2 models only, got {config.model_type!r}: "
                                 "use CachedLM")
        if (config.model_type == "llama" and (config.attention_bias or config.mlp_bias)) or config.hidden_act != "silu":
            raise ReproduceError("FastLlamaLM supports Llama without biases and with SiLU MLPs: use CachedLM")
        if config.model_type == "qwen2" and (config.use_sliding_window or set(config.layer_types) != {"full_attention"}):
            raise ReproduceError("FastLlamaLM attends over the whole cache, and this Qwen2 model uses sliding-window "
                                 "attention (use_sliding_window): use CachedLM (runtime hf)")
        if config.rope_parameters.get("rope_type", "default") != "default":
            raise ReproduceError(f"FastLlamaLM supports default RoPE only, got {config.rope_parameters}: use CachedLM")
        if linear_mode not in LINEAR_MODES:
            raise ReproduceError(f"unknown linear_mode {linear_mode!r}: choose one of {', '.join(LINEAR_MODES)}")
        vocab_size = vocab_size or config.vocab_size
        # "bf16"/"dual": the rounding to bf16 happens once here and defines the target's weights in every path
        rounded = (lambda w: w.detach().float()) if linear_mode == "fp32" else (
            lambda w: w.detach().to(torch.bfloat16).float())
        layers, norms = [], []
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            biases = [attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]  # Qwen2 has them, Llama has not
            weights = LayerWeights(
                qkv=rounded(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])).contiguous(),
                out=rounded(attn.o_proj.weight).contiguous(),
                gate_up=rounded(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])).contiguous(),
                down=down_chunks(rounded(mlp.down_proj.weight), None if linear_mode == "fp32" else MAX_BF16_INPUTS),
                qkv_bias=None if biases[0] is None else torch.cat(biases).detach().float(),
            )
            # "bf16" / "int8" keep no fp32 copy: converting layer by layer holds one layer's fp32 copy at a time, not
            # the whole model's (peak RSS 14.0 -> 9.2 GB measured for Qwen2.5-Coder-1.5B loaded in bf16)
            layers.append({"bf16": weights.to(torch.bfloat16), "int8": weights.quantized()}.get(linear_mode, weights))
            norms.append((layer.input_layernorm.weight.detach().float(),
                          layer.post_attention_layernorm.weight.detach().float()))
        # bf16-rounded values are exact in bf16: store the embedding table so (half the memory), read rows as fp32
        embedding = model.model.embed_tokens.weight.detach().to(torch.float32 if linear_mode == "fp32" else torch.bfloat16)
        head = rounded(model.lm_head.weight[:vocab_size]).contiguous()
        if linear_mode == "int8":  # a draft's cheaper numerics: weight-only int8 GEMMs for every layer and the head
            lm = cls(config, embedding.contiguous(), None, None, norms, model.model.norm.weight.detach().float(), None,
                     None, vocab_size, max_len, linear_mode, bf16_rows)
            lm.layers_int8, lm.head_int8 = layers, quantize_int8(head)
            return lm
        layers_bf16 = [weights.to(torch.bfloat16) for weights in layers] if linear_mode == "dual" else None
        head_bf16 = head.to(torch.bfloat16) if linear_mode != "fp32" else None
        if linear_mode == "bf16":  # no fp32 copies needed
            layers, layers_bf16, head = None, layers, None
            share_weights(model, layers_bf16, head_bf16)
        return cls(config, embedding.contiguous(), layers, layers_bf16, norms, model.model.norm.weight.detach().float(),
                   head, head_bf16, vocab_size, max_len, linear_mode, bf16_rows)

    def _allocate(self, max_len: int) -> None:
        """(Re)allocate the KV cache and RoPE tables for `max_len` positions, keeping what the cache holds."""
        shape = (len(self.norms), self.num_kv_heads, max_len, self.head_dim)
        keys, values = torch.zeros(shape), torch.zeros(shape)
        if hasattr(self, "keys"):
            keys[:, :, : self.keys.shape[2]] = self.keys
            values[:, :, : self.values.shape[2]] = self.values
        self.keys, self.values = keys, values
        self.cos, self.sin = rope_tables(self.head_dim, self.rope_theta, max_len)
        self.max_len = max_len

    def new_cache(self) -> None:
        """A KV cache of its own (fresh(): a copy sharing the weights must not write into the original's cache)."""
        del self.keys, self.values  # the copy's references to the original's tensors
        self._allocate(self.max_len)
        self.cache_tokens = []

    def reset(self) -> None:
        self.cache_tokens = []  # stale cache entries are never read: attention only looks at positions < length

    def rollback(self, length: int) -> None:
        """Keep the first `length` cached tokens: rewinding the position is all it takes."""
        del self.cache_tokens[length:]

    def _kernel(self, rows: int):
        """(layer weights, head weight, gemm function) for a call scoring `rows` tokens."""
        if self.linear_mode == "fp32":
            return self.layers_fp32, self.head_fp32, fp32_gemm
        if self.linear_mode == "int8":
            return self.layers_int8, self.head_int8, int8_gemm
        if self.linear_mode == "bf16" or rows in self.bf16_rows:
            return self.layers_bf16, self.head_bf16, bf16_gemm
        return self.layers_fp32, self.head_fp32, bf16_gemm_in_fp32

    @torch.inference_mode()
    def forward(self, token_ids: list[int], last_only: bool = False) -> torch.Tensor:
        """Append `token_ids` to the cache; return float32 logits [n, vocab_size] (or [1, vocab_size])."""
        n, start = len(token_ids), len(self.cache_tokens)
        end = start + n
        if end > self.max_len:
            self._allocate(max(end, 2 * self.max_len))
        layers, head, gemm = self._kernel(n)
        cos, sin = self.cos[start:end], self.sin[start:end]
        # new token i (position start + i) sees cached positions <= start + i; one new token sees everything
        mask = None if n == 1 else torch.ones(n, end, dtype=torch.bool).tril(diagonal=start)
        row_by_row = self.linear_mode == "bf16" and 1 < n <= self.row_attention_max
        x = self.embedding[torch.tensor(token_ids)].float()  # [n, hidden]
        for index, (weights, (attn_norm, mlp_norm)) in enumerate(zip(layers, self.norms)):
            qkv = gemm(rms_norm(x, attn_norm, self.eps), weights.qkv)
            if weights.qkv_bias is not None:  # an fp32 add per row, after the GEMM's rounding: batch-invariant
                qkv = qkv + weights.qkv_bias
            q, k, v = qkv.split(self.split, dim=-1)
            q = rotate(q.view(n, self.num_heads, self.head_dim).transpose(0, 1), cos, sin)
            self.keys[index, :, start:end] = rotate(k.view(n, self.num_kv_heads, self.head_dim).transpose(0, 1),
                                                    cos, sin)
            self.values[index, :, start:end] = v.view(n, self.num_kv_heads, self.head_dim).transpose(0, 1)
            if row_by_row:  # row i makes exactly the call a single-token forward at position start + i makes
                attn = torch.cat([F.scaled_dot_product_attention(
                    q[None, :, i : i + 1], self.keys[index, None, :, : start + i + 1],
                    self.values[index, None, :, : start + i + 1], enable_gqa=True,
                )[0] for i in range(n)], dim=1)  # [heads, n, head_dim]
            else:
                attn = F.scaled_dot_product_attention(
                    q[None], self.keys[index, None, :, :end], self.values[index, None, :, :end], attn_mask=mask,
                    enable_gqa=True,
                )[0]  # [heads, n, head_dim]
            x = x + gemm(attn.transpose(0, 1).reshape(n, -1), weights.out)
            gate, up = gemm(rms_norm(x, mlp_norm, self.eps), weights.gate_up).chunk(2, dim=-1)
            hidden = (F.silu(gate) * up).tensor_split(len(weights.down), dim=-1)
            x = x + sum(gemm(part, chunk) for part, chunk in zip(hidden, weights.down))
        x = rms_norm(x[-1:] if last_only else x, self.final_norm, self.eps)
        self.cache_tokens.extend(token_ids)
        return gemm(x, head)

"""A small, fast Llama / Qwen2 forward with a static KV cache, for the target and model drafts on a CPU.

Same interface as `reproduce.engine.lm.CachedLM` (reset / forward / rollback / next_logits, cache_tokens,
vocab_size), so the engine can use it for the target and for the ArS baseline alike. Written in the spirit of
gpt-fast: the Hugging Face model's weights are copied into one GEMM weight per projection group (q/k/v and gate/up
fused: 4 GEMMs per layer instead of 7) in a linear mode of reproduce.engine.linear (fp32, bf16, int8, int4), and
the KV cache is preallocated and indexed by position, so a rollback just rewinds an index and no call concatenates
tensors (stale entries past the position are never read).

Qwen2 is Llama plus biases on q_proj, k_proj and v_proj (fused here into one qkv bias, added in fp32 after the
GEMM), its own RoPE base (config.rope_parameters, 1e6 for Qwen2.5) and, in the checkpoints we use, an untied head.
Models configured with Qwen2's sliding-window attention are refused: this forward attends over the whole cache.

Numerics outside the GEMMs are fp32 in every mode: norms, the qkv bias, RoPE, attention, the KV cache and the
residual stream. Batch invariance (a call scoring n tokens returns bitwise the logits of n single-token calls, so
SpS verifies against exactly the target ArS samples from) needs two things: GEMM kernels whose rows do not depend
on the row count (a property of the CPU, checked by reproduce.engine.probe), and attention computed row by row
for verification-sized calls (2..ROW_ATTENTION_MAX tokens), each row making the very call a single-token forward
at its position makes. The fp32 mode's GEMMs are not batch-invariant on the CPUs we measured, so its torch path
skips the row-by-row attention too.

The small ops between the GEMMs run as four C++ calls a layer (reproduce.engine.layer_ops: RMSNorm, the attention
block, SiLU(gate) * up, each row computed alike whatever the row count) for calls of up to ROW_ATTENTION_MAX tokens,
where they build; prefills, and machines without a compiler, take torch's ops (`_torch_layers`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from reproduce.engine import layer_ops
from reproduce.engine.lm import CacheSync
from reproduce.engine.linear import BF16_WEIGHT_MODES, LINEAR_MODES, make_linear
from reproduce.errors import ReproduceError

FAST_MODEL_TYPES = ("llama", "qwen2")  # what FastLlamaLM serves
ROW_ATTENTION_MAX = 16  # calls of 2..16 tokens attend row by row (batch-invariant verification)


@dataclass
class LayerWeights:
    """One decoder layer's GEMMs, each a reproduce.engine.linear weight ([out, in] in its own format)."""

    qkv: object  # q_proj, k_proj, v_proj stacked
    out: object  # o_proj
    gate_up: object  # gate_proj, up_proj stacked
    down: object  # down_proj
    qkv_bias: torch.Tensor | None = None  # Qwen2: q_proj, k_proj, v_proj biases stacked; fp32 in every mode


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight * x / sqrt(mean(x^2) + eps) per row: torch's fused kernel, bitwise equal to the five-op form
    (checked on every hidden size we serve) and ~4 us a call faster, 49-57 calls a token."""
    return F.rms_norm(x, weight.shape, weight, eps)


def rope_tables(head_dim: int, theta: float, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin [length, head_dim] of Llama's default rotary embedding (as Hugging Face computes them):
    the sin table's first half is negated, so rotate() needs no negation (-a * b == a * -b bitwise)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
    freqs = torch.arange(length, dtype=torch.float)[:, None] * inv_freq[None, :]
    sin = freqs.sin()
    return torch.cat((freqs, freqs), dim=-1).cos(), torch.cat((-sin, sin), dim=-1)


def rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Apply RoPE to x [heads, n, head_dim] with rope_tables' cos / signed sin [n, head_dim]: Hugging Face's
    x * cos + rotate_half(x) * sin, with rotate_half(x) = cat(-x2, x1) as a roll by half (two ops fewer a call)."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * signed_sin


def attend_one(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """One query row's attention: q [heads, 1, head_dim] over every position of keys / values [kv_heads, length,
    head_dim] (grouped-query: each kv head serves heads / kv_heads query heads). Two batched GEMMs and a softmax:
    ~20 us faster a layer than scaled_dot_product_attention at a few hundred positions, which matters for a draft's
    24 layers a token (notes/runtimes.md)."""
    kv_heads, _, head_dim = keys.shape
    grouped = q.reshape(kv_heads, -1, head_dim)  # [kv_heads, heads / kv_heads, head_dim]
    scores = torch.bmm(grouped, keys.transpose(1, 2)) * head_dim ** -0.5  # [kv_heads, heads / kv_heads, length]
    return torch.bmm(scores.softmax(-1), values).reshape(q.shape)


def check_supported(config) -> None:
    """One line naming the fix for a model this forward does not compute exactly as Hugging Face does."""
    if config.model_type not in FAST_MODEL_TYPES:
        raise ReproduceError(f"FastLlamaLM supports Llama and Qwen2 models only, got {config.model_type!r}: "
                             "use CachedLM (runtime hf)")
    if (config.model_type == "llama" and (config.attention_bias or config.mlp_bias)) or config.hidden_act != "silu":
        raise ReproduceError("FastLlamaLM supports Llama without biases and with SiLU MLPs: use CachedLM (runtime hf)")
    if config.model_type == "qwen2" and (config.use_sliding_window or set(config.layer_types) != {"full_attention"}):
        raise ReproduceError("FastLlamaLM attends over the whole cache, and this Qwen2 model uses sliding-window "
                             "attention (use_sliding_window): use CachedLM (runtime hf)")
    if config.rope_parameters.get("rope_type", "default") != "default":
        raise ReproduceError(f"FastLlamaLM supports default RoPE only, got {config.rope_parameters}: use CachedLM")


def share_weights(model, layers: list[LayerWeights], head) -> None:
    """Point a bf16 Hugging Face model's linear weights at views of our fused bf16 copies (the same values), so
    the model (kept for the HF peers) and this runtime hold one copy, not two: ~3.1 of 3.5 GB for a 1.5B model.
    from_hf calls it layer by layer as it converts, so the two copies never coexist (a 3 GB peak otherwise)."""
    for layer, weights in zip(model.model.layers[: len(layers)], layers):
        attn, mlp = layer.self_attn, layer.mlp
        groups = (([attn.q_proj, attn.k_proj, attn.v_proj], weights.qkv), ([attn.o_proj], weights.out),
                  ([mlp.gate_proj, mlp.up_proj], weights.gate_up), ([mlp.down_proj], weights.down))
        for linears, fused in groups:
            start = 0
            for linear in linears:
                rows = linear.weight.shape[0]
                if linear.weight.dtype == fused.weight.dtype:  # a float32 model keeps its own weights
                    linear.weight.data = fused.weight[start : start + rows]
                start += rows
    if head is None:
        return
    lm_head = model.lm_head.weight
    if (lm_head.dtype == head.weight.dtype and lm_head.shape == head.weight.shape
            and lm_head is not model.model.embed_tokens.weight):
        lm_head.data = head.weight


class FastLlamaLM(CacheSync):
    """A Llama or Qwen2 model's weights in one linear mode, a static KV cache, and the token ids that cache holds."""

    def __init__(self, config, embedding, layers: list[LayerWeights], norms, final_norm, head, vocab_size: int,
                 max_len: int, linear_mode: str):
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.eps = config.rms_norm_eps
        self.rope_theta = config.rope_parameters["rope_theta"]
        self.embedding = embedding  # [vocab, hidden]: fp32 in fp32 mode, else bf16 (read as fp32)
        self.layers = layers
        self.norms = norms  # per layer: (input norm weight, post-attention norm weight), fp32
        self.final_norm = final_norm
        self.head = head  # cut to vocab_size rows
        self.vocab_size = vocab_size
        self.linear_mode = linear_mode
        self.row_attention_max = 0 if linear_mode == "fp32" else ROW_ATTENTION_MAX
        self.qk_width = (self.num_heads + self.num_kv_heads) * self.head_dim  # q and k: the qkv GEMM's first columns
        # the small ops between the GEMMs as four C++ calls a layer (reproduce.engine.layer_ops), where they build
        fits = layer_ops.fits(config.hidden_size, config.intermediate_size, self.head_dim)
        self.ops = layer_ops.kernel() if fits and layer_ops.available() else None
        self._allocate(max_len)
        self.cache_tokens: list[int] = []

    @classmethod
    def from_hf(cls, model, vocab_size: int | None = None, max_len: int = 1280,
                linear_mode: str = "fp32", head: bool = True) -> "FastLlamaLM":
        """Copy a Hugging Face LlamaForCausalLM's or Qwen2ForCausalLM's weights into `linear_mode`
        (reproduce.engine.linear.LINEAR_MODES). Converted layer by layer, so at most one layer's fp32 temporaries
        exist at a time."""
        config = model.config
        check_supported(config)
        if linear_mode not in LINEAR_MODES:
            raise ReproduceError(f"unknown linear_mode {linear_mode!r}: choose one of {', '.join(LINEAR_MODES)}")
        vocab_size = vocab_size or config.vocab_size
        layers, norms = [], []
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            biases = [attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]  # Qwen2 has them, Llama has not
            layers.append(LayerWeights(
                qkv=make_linear(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]), linear_mode),
                out=make_linear(attn.o_proj.weight, linear_mode),
                gate_up=make_linear(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), linear_mode),
                down=make_linear(mlp.down_proj.weight, linear_mode),
                qkv_bias=None if biases[0] is None else torch.cat(biases).detach().float(),
            ))
            norms.append((layer.input_layernorm.weight.detach().float(),
                          layer.post_attention_layernorm.weight.detach().float()))
            if linear_mode in BF16_WEIGHT_MODES:  # this layer's HF weights become views of the fused copies now
                share_weights(model, layers, None)
        # head=False: a caller setting a head of its own (RestrictedFastLM) skips quantizing the full one
        head = make_linear(model.lm_head.weight[:vocab_size], linear_mode, head=True) if head else None
        table = model.model.embed_tokens.weight.detach()
        # outside fp32 mode the table is read in bf16 (as every GEMM input is rounded to bf16): no copy of a bf16 one
        embedding = table.float().contiguous() if linear_mode == "fp32" else table.to(torch.bfloat16).contiguous()
        if linear_mode in BF16_WEIGHT_MODES and head is not None:
            share_weights(model, layers, head)
        return cls(config, embedding, layers, norms, model.model.norm.weight.detach().float(), head, vocab_size,
                   max_len, linear_mode)

    def _allocate(self, max_len: int) -> None:
        """(Re)allocate the KV cache and RoPE tables for `max_len` positions, keeping what the cache holds."""
        shape = (len(self.norms), self.num_kv_heads, max_len, self.head_dim)
        keys, values = torch.zeros(shape), torch.zeros(shape)
        if hasattr(self, "keys"):
            keys[:, :, : self.keys.shape[2]] = self.keys
            values[:, :, : self.values.shape[2]] = self.values
        self.keys, self.values = keys, values
        self.cos, self.signed_sin = rope_tables(self.head_dim, self.rope_theta, max_len)
        self.max_len = max_len

    def new_cache(self) -> None:
        """A KV cache of its own (fresh(): a copy sharing the weights must not write into the original's cache)."""
        del self.keys, self.values  # the copy's references to the original's tensors
        self._allocate(self.max_len)
        self.cache_tokens = []

    def reset(self) -> None:
        self.cache_tokens = []  # stale cache entries are never read: attention only looks at positions < length

    def shares_weights_with(self, other) -> bool:
        """`other` is another cache over these very weights (fresh()): its cache is what this LM would compute."""
        # the same ops too: a cache the fused ops wrote is not bitwise what torch's would (benchmarks/layer_ops.py)
        return (isinstance(other, FastLlamaLM) and other.layers is self.layers and other.ops is self.ops
                and other is not self)

    def adopt_cache(self, other) -> bool:
        """Take `other`'s cache if it is this very model (same weights, same mode: the target drafting for itself
        via fresh()). Its prefill is the call this LM's own would make, so the copy is bitwise what recomputing
        gives, for the price of a memory copy. Returns whether it did."""
        if not self.shares_weights_with(other):
            return False
        length = len(other.cache_tokens)
        if length > self.max_len:
            self._allocate(max(length, 2 * self.max_len))
        self.keys[:, :, :length] = other.keys[:, :, :length]
        self.values[:, :, :length] = other.values[:, :, :length]
        self.cache_tokens = list(other.cache_tokens)
        return True

    def rollback(self, length: int) -> None:
        """Keep the first `length` cached tokens: rewinding the position is all it takes."""
        del self.cache_tokens[length:]

    def _attention(self, index: int, q: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Attention of the new tokens' queries q [heads, n, head_dim] over cache positions < end."""
        n = end - start
        keys, values = self.keys[index], self.values[index]  # [kv_heads, max_len, head_dim]
        if n == 1:  # the rows' path below for one row, without the cat
            return attend_one(q, keys[:, :end], values[:, :end])
        if n <= self.row_attention_max:  # row i makes exactly the call a single-token forward at start + i makes
            return torch.cat([attend_one(q[:, i : i + 1], keys[:, : start + i + 1], values[:, : start + i + 1])
                              for i in range(n)], dim=1)
        # new token i (position start + i) sees cached positions <= start + i
        mask = torch.ones(n, end, dtype=torch.bool).tril(diagonal=start)
        return F.scaled_dot_product_attention(q[None], keys[None, :, :end], values[None, :, :end], attn_mask=mask,
                                              enable_gqa=True)[0]

    @torch.inference_mode()
    def forward(self, token_ids: list[int], last_only: bool = False) -> torch.Tensor:
        """Append `token_ids` to the cache; return float32 logits [n, vocab_size] (or [1, vocab_size])."""
        return self.head(self.hidden_states(token_ids, last_only))

    @torch.inference_mode()
    def hidden_states(self, token_ids: list[int], last_only: bool = False) -> torch.Tensor:
        """Append `token_ids` to the cache; return the final-normed hidden states [n or 1, hidden] the head reads."""
        n, start = len(token_ids), len(self.cache_tokens)
        end = start + n
        if end > self.max_len:
            self._allocate(max(end, 2 * self.max_len))
        x = self.embedding[torch.tensor(token_ids)].float()  # [n, hidden], a copy: the residual stream
        # prefills (more than ROW_ATTENTION_MAX tokens) attend with torch's fused kernel, in either path
        if self.ops is not None and n <= ROW_ATTENTION_MAX:
            x = self._fused_layers(x, start, end)
        else:
            x = self._torch_layers(x, start, end)
        self.cache_tokens.extend(token_ids)
        return rms_norm(x[-1:] if last_only else x, self.final_norm, self.eps)

    def _fused_layers(self, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """The decoder layers with reproduce.engine.layer_ops between the GEMMs. Updates `x` (the residual stream,
        a copy hidden_states made) in place."""
        ops, cos, signed_sin = self.ops, self.cos[start:end], self.signed_sin[start:end]
        update = None  # the last layer's MLP output, added to x by the next norm
        for index, (weights, (attn_norm, mlp_norm)) in enumerate(zip(self.layers, self.norms)):
            h = ops.rms_norm(x, attn_norm, self.eps) if update is None else ops.add_rms_norm(x, update, attn_norm,
                                                                                            self.eps)
            attn = ops.attention(weights.qkv(h).contiguous(), weights.qkv_bias, cos, signed_sin, self.keys[index],
                                 self.values[index], start, self.num_heads, self.num_kv_heads)  # [n, heads * D]
            h = ops.add_rms_norm(x, weights.out(attn).contiguous(), mlp_norm, self.eps)
            update = weights.down(ops.silu_mul(weights.gate_up(h).contiguous())).contiguous()
        return x if update is None else x + update

    def _torch_layers(self, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """The decoder layers in torch's ops (where the fused ones cannot be built, and for prefills)."""
        n = end - start
        cos, signed_sin = self.cos[start:end], self.signed_sin[start:end]
        for index, (weights, (attn_norm, mlp_norm)) in enumerate(zip(self.layers, self.norms)):
            qkv = weights.qkv(rms_norm(x, attn_norm, self.eps))
            if weights.qkv_bias is not None:  # an fp32 add per row, after the GEMM's rounding: batch-invariant
                qkv = qkv + weights.qkv_bias
            # q and k heads rotated in one call: [heads + kv_heads, n, head_dim]
            qk = rotate(qkv[:, : self.qk_width].view(n, -1, self.head_dim).transpose(0, 1), cos, signed_sin)
            q = qk[: self.num_heads]
            self.keys[index, :, start:end] = qk[self.num_heads :]
            self.values[index, :, start:end] = qkv[:, self.qk_width :].view(n, self.num_kv_heads,
                                                                            self.head_dim).transpose(0, 1)
            attn = self._attention(index, q, start, end)  # [heads, n, head_dim]
            x = x + weights.out(attn.transpose(0, 1).reshape(n, -1))
            gate, up = weights.gate_up(rms_norm(x, mlp_norm, self.eps)).chunk(2, dim=-1)
            x = x + weights.down(F.silu(gate) * up)
        return x


def weight_bytes(lm: FastLlamaLM) -> int:
    """Bytes of the GEMM weights one single-token forward reads (the memory-bound cost of a token)."""
    def nbytes(linear) -> int:
        return sum(t.numel() * t.element_size() for t in vars(linear).values() if isinstance(t, torch.Tensor))
    return sum(nbytes(w.qkv) + nbytes(w.out) + nbytes(w.gate_up) + nbytes(w.down) for w in lm.layers) + nbytes(lm.head)


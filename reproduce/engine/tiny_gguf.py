"""Write a small Hugging Face Qwen2 model as a GGUF, so llama.cpp runs a model the tests know.

llama.cpp reads architecture, shapes and tokenizer from the GGUF alone. The tensors are written under llama.cpp's
Qwen2 names, unquantized (F32: the very model) or quantized by the gguf package (then llama.cpp runs its quantized
kernels, as on a real GGUF). Qwen2 uses NeoX-style RoPE (Hugging Face's rotate_half), so q and k need none of the
row permutation Llama checkpoints get. The vocabulary is a placeholder SentencePiece-style list (`<unk>`, `<s>`,
`</s>`, `<0x0A>`, then `t4`, `t5`, ...): the tests feed token ids, never text.
"""

from __future__ import annotations

from pathlib import Path

from reproduce.errors import ReproduceError


def write_qwen2_gguf(model, path: str | Path, weight_type: str = "F32") -> Path:
    """Save `model` (a transformers Qwen2ForCausalLM, e.g. models.tiny_random_model("qwen2")) to `path`, its
    matrices in `weight_type` (F32, or a type gguf can quantize to, e.g. Q8_0 or Q4_0: llama.cpp then runs its
    quantized kernels, as on a real GGUF; inputs must be a multiple of 32 wide), norms and biases in F32."""
    import gguf
    import numpy as np

    config = model.config
    if config.model_type != "qwen2":
        raise ReproduceError(f"write_qwen2_gguf writes Qwen2 models only, got {config.model_type!r}")
    path = Path(path)
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    file_type = "ALL_F32" if weight_type == "F32" else f"MOSTLY_{weight_type}"
    writer.add_file_type(gguf.LlamaFileType[file_type])

    vocab = config.vocab_size
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "<s>", "</s>", "<0x0A>"] + [f"t{i}" for i in range(4, vocab)])
    writer.add_token_scores([0.0] * vocab)
    # the newline byte token only keeps llama.cpp's SentencePiece loader from warning that it is missing
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL, gguf.TokenType.BYTE]
    writer.add_token_types([int(t) for t in types] + [int(gguf.TokenType.NORMAL)] * (vocab - 4))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)

    qtype = gguf.GGMLQuantizationType[weight_type]

    def add(name: str, tensor) -> None:
        array = tensor.detach().float().numpy().astype(np.float32)
        if array.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, array)

    add("token_embd.weight", model.model.embed_tokens.weight)
    for i, layer in enumerate(model.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        add(f"blk.{i}.attn_norm.weight", layer.input_layernorm.weight)
        for short, proj in (("q", attn.q_proj), ("k", attn.k_proj), ("v", attn.v_proj)):
            add(f"blk.{i}.attn_{short}.weight", proj.weight)
            add(f"blk.{i}.attn_{short}.bias", proj.bias)
        add(f"blk.{i}.attn_output.weight", attn.o_proj.weight)
        add(f"blk.{i}.ffn_norm.weight", layer.post_attention_layernorm.weight)
        add(f"blk.{i}.ffn_gate.weight", mlp.gate_proj.weight)
        add(f"blk.{i}.ffn_up.weight", mlp.up_proj.weight)
        add(f"blk.{i}.ffn_down.weight", mlp.down_proj.weight)
    add("output_norm.weight", model.model.norm.weight)
    add("output.weight", model.lm_head.weight)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path

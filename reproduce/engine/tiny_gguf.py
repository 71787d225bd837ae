"""Write a small Hugging Face Qwen2 model as an F32 GGUF, so llama.cpp runs the very model the tests know exactly.

llama.cpp reads architecture, shapes and tokenizer from the GGUF alone. The tensors are written unquantized (F32)
under llama.cpp's Qwen2 names; Qwen2 uses NeoX-style RoPE (Hugging Face's rotate_half), so q and k need none of
the row permutation Llama checkpoints get. The vocabulary is a placeholder SentencePiece-style list (`<unk>`,
`<s>`, `</s>`, then `t3`, `t4`, ...): the tests feed token ids, never text.
"""

from __future__ import annotations

from pathlib import Path

from reproduce.errors import ReproduceError


def write_qwen2_gguf(model, path: str | Path) -> Path:
    """Save `model` (a transformers Qwen2ForCausalLM, e.g. models.tiny_random_model("qwen2")) to `path` as F32."""
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
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = config.vocab_size
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(3, vocab)])
    writer.add_token_scores([0.0] * vocab)
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    writer.add_token_types([int(t) for t in types] + [int(gguf.TokenType.NORMAL)] * (vocab - 3))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)

    def add(name: str, tensor) -> None:
        writer.add_tensor(name, tensor.detach().float().numpy().astype(np.float32))

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

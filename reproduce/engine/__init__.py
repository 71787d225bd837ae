"""The engine: the sampling rule, ArS/SpS loops over cached LMs, drafters, runtimes and model loading.

Which file builds what, in the order a target is made:
  models.py    load_model(name) -> LoadedModel: the Hugging Face model and tokenizer (offline alias, GGUF, hub)
  runtime.py   build_target(loaded) / build_lm(model) -> the cached LM the loops call, in a runtime:
                 hf       -> lm.CachedLM (Hugging Face's forward)
                 fast-*   -> fast_lm.FastLlamaLM, its GEMMs in one linear.py mode (fp32, bf16, int8, int4, w4a8:
                             w4a8.py's kernel), the ops between them fused in layer_ops.py where it builds
                 auto     -> the mode probe.py measures best on this CPU for the model's role
  drafters.py  build_drafter(name) -> a drafter (n-gram, model, hybrid, the target itself, distilled.py's draft)
  decoding.py  autoregressive_decode / speculative_decode(target LM, drafter) -> Trace; the rule is sampling.py

Imports nothing from runs, analysis, report or distill."""

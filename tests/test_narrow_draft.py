"""The narrowed draft of benchmarks/mlp_width.py (run in the loop by benchmarks/narrow_loop.py, issue 23's c <= 0.2):
keeping every neuron changes nothing; FLAP's mean compensation restores each MLP's mean output on the calibration
tokens exactly; and the runtime LM adds that bias where the Hugging Face model would (dropping it is caught)."""

from __future__ import annotations

import copy

import torch

from benchmarks.mlp_width import draft_lm, neuron_stats, pruned_copy, widths
from reproduce.engine.models import tiny_random_model

VOCAB = 32
CALIBRATION = [[int(t) for t in torch.randint(0, VOCAB, (24,), generator=torch.Generator().manual_seed(s))]
               for s in range(4)]


def tiny_draft():
    return tiny_random_model("qwen2", vocab_size=VOCAB, seed=5, hidden_size=32, intermediate_size=256,
                             num_hidden_layers=2, initializer_range=0.2).model


def narrowed(model, keep: float):
    """(narrowed copy, its compensating biases) of `model` at `keep` of its MLP width, calibrated on CALIBRATION."""
    stats = neuron_stats(model, CALIBRATION)
    scores = stats.scores(model)
    return pruned_copy(model, stats, scores, widths(scores, keep, "uniform"))


def mlp_inputs(model, sequences) -> list[torch.Tensor]:
    """Layer 0's MLP input (after its norm) at every calibration token."""
    seen = []

    def record(module, args):
        seen.append(args[0].reshape(-1, args[0].shape[-1]))

    handle = model.model.layers[0].mlp.register_forward_pre_hook(record)
    try:
        with torch.inference_mode():
            for ids in sequences:
                model(torch.tensor([ids]))
    finally:
        handle.remove()
    return seen


def test_keeping_every_neuron_changes_no_logit():
    model = tiny_draft()
    kept, biases = narrowed(model, 1.0)
    ids = torch.tensor([CALIBRATION[0]])
    with torch.inference_mode():
        torch.testing.assert_close(kept(ids).logits, model(ids).logits)
    assert all(b.abs().max() == 0 for b in biases)


def test_the_mean_compensation_restores_each_mlps_mean_output_on_the_calibration_tokens():
    model = tiny_draft()
    narrow, biases = narrowed(model, 0.5)
    assert [layer.mlp.down_proj.weight.shape[1] for layer in narrow.model.layers] == [128, 128]
    x = torch.cat(mlp_inputs(model, CALIBRATION))  # [tokens, hidden]: the same inputs to both MLPs
    with torch.inference_mode():
        full = model.model.layers[0].mlp(x).double().mean(0)
        cut = narrow.model.layers[0].mlp(x).double().mean(0)
    compensated = cut + biases[0].double()
    assert torch.allclose(compensated, full, atol=1e-4), (compensated - full).abs().max()
    assert not torch.allclose(cut, full, atol=1e-2)  # the control: without the bias the mean is off


def test_the_runtime_draft_adds_the_bias_where_hugging_face_would():
    narrow, biases = narrowed(tiny_draft(), 0.5)
    all_tokens = torch.arange(VOCAB)
    ids = CALIBRATION[1]
    lm = draft_lm(narrow, biases, VOCAB, all_tokens, "fp32", compensate=True)
    lm.reset()
    got = lm.forward_kept(ids)
    with_bias = copy.deepcopy(narrow)  # Hugging Face's own way: the bias inside down_proj
    for layer, bias in zip(with_bias.model.layers, biases):
        layer.mlp.down_proj.bias = torch.nn.Parameter(bias, requires_grad=False)
    with torch.inference_mode():
        expected = with_bias(torch.tensor([ids])).logits[0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    uncompensated = draft_lm(narrow, biases, VOCAB, all_tokens, "fp32", compensate=False)
    uncompensated.reset()
    # the control: the runtime LM without the bias differs from the reference
    assert not torch.allclose(uncompensated.forward_kept(ids), expected, atol=1e-3)

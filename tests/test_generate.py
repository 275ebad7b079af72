"""Tests for buildllm.generate: sampling filters, the key/value cache, reproducibility, streaming
text, errors, and greedy decoding against Hugging Face's generate. (The command line that prints
a sample, `buildllm generate`, is tested in test_cli.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from buildllm import generate as gen
from buildllm.config import check_sampling
from buildllm.model import GPT
from buildllm.tokenizer import BPETokenizer
from shared import CUDA, OPTIONS, SMALL, small

TINY = {**SMALL, "block_size": 24}  # room for a prompt and the tokens after it


def tiny_model(seed: int = 0, **overrides) -> GPT:
    """A small random GPT whose logits are spread out (no near-ties between tokens)."""
    torch.manual_seed(seed)
    model = GPT(small(**{**TINY, **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(10)  # std 0.2: far from uniform, so greedy and sampling have clear choices
    return model.eval()


def rand_ids(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY["vocab_size"], shape, generator=g)


def naive_greedy(model: GPT, idx: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding written out: the whole (cropped) sequence through the model each step."""
    all_logits = []
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(idx[:, -model.config.block_size:])
            all_logits.append(logits[:, -1])
            idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx, torch.stack(all_logits, dim=1)


def run(model, prompt, n, **kw):
    tokens, logits = zip(*gen.stream(model, prompt, n, **kw))
    return torch.stack(tokens, dim=1), torch.stack(logits, dim=1)  # (B, n), (B, n, V)


# --- the key/value cache ----------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIONS)
def test_cached_equals_uncached_for_every_option(name):
    model = tiny_model(**OPTIONS[name])
    prompt = rand_ids((2, 7), seed=1)
    n = 14  # 7 + 14 = 21 <= block_size: the cache is used at every step
    cached_tok, cached_logits = run(model, prompt, n, seed=3, use_cache=True)
    plain_tok, plain_logits = run(model, prompt, n, seed=3, use_cache=False)
    torch.testing.assert_close(cached_logits, plain_logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(cached_tok, plain_tok)
    # Teacher forcing: one forward pass over the finished sequence gives every step's logits.
    with torch.no_grad():
        full, _ = model(torch.cat([prompt, cached_tok], dim=1))
    torch.testing.assert_close(cached_logits, full[:, 6:-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["gpt2", "rope", "all"])
def test_window_slides_past_the_context(name):
    model = tiny_model(**OPTIONS[name])
    prompt = rand_ids((1, 20), seed=2)
    n = 12  # 20 + 12 > block_size 24: the last steps see a sliding window
    tok, logits = run(model, prompt, n, temperature=0.0, use_cache=True)
    ref_idx, ref_logits = naive_greedy(model, prompt, n)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.cat([prompt, tok], dim=1), ref_idx)


def test_greedy_matches_the_written_out_loop_and_batches_agree():
    model = tiny_model()
    prompts = rand_ids((3, 5), seed=4)
    out = gen.generate(model, prompts, 10, temperature=0)
    ref, _ = naive_greedy(model, prompts, 10)
    assert torch.equal(out, ref)
    for b in range(3):  # each row alone gives the row of the batch
        assert torch.equal(gen.generate(model, prompts[b], 10, temperature=0), out[b])
    assert torch.equal(gen.generate(model, prompts.tolist(), 10, temperature=0), out)


# --- choosing the next token ------------------------------------------------------------------


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5, 2.5], [5.0, 4.0, 3.0, 2.0, 1.0]])
    kept = gen.top_k_filter(logits, 2).isfinite()
    assert kept.tolist() == [[False, True, False, False, True], [True, True, False, False, False]]
    torch.testing.assert_close(gen.top_k_filter(logits, 2)[kept], logits[kept])  # unchanged
    assert gen.top_k_filter(logits, 1).isfinite().sum(-1).tolist() == [1, 1]
    assert gen.top_k_filter(logits, 99).isfinite().all()  # k beyond the vocabulary: all


@pytest.mark.parametrize("p, expected", [
    (0.01, {1}), (0.35, {1}), (0.65, {1, 3}), (0.75, {1, 3, 2}), (0.95, {0, 1, 2, 3}),
    (1.0, {0, 1, 2, 3}),
])
def test_top_p_keeps_the_smallest_nucleus(p, expected):
    probs = torch.tensor([[0.1, 0.4, 0.2, 0.3]])
    kept = gen.top_p_filter(probs.log(), p).isfinite()[0]
    assert set(kept.nonzero().flatten().tolist()) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=1, max_size=12), st.floats(0.001, 1.0))
def test_top_p_agrees_with_a_float64_reference(values, p):
    logits = torch.tensor([values])
    probs = torch.tensor(values, dtype=torch.float64).softmax(-1)
    order = sorted(range(len(values)), key=lambda i: -probs[i].item())
    kept, mass = set(), 0.0
    for i in order:  # the definition: add the most likely tokens until their mass reaches p
        if mass >= p:
            break
        kept.add(i)
        mass += probs[i].item()
    cumulative = probs[order].cumsum(0)
    assume(all(abs(c - p) > 1e-5 for c in cumulative.tolist()))  # no rounding-sized ties
    gaps = [abs(a - b) for i, a in enumerate(values) for b in values[:i]]
    assume(all(g > 1e-3 for g in gaps))  # ties in the ranking make the nucleus ambiguous
    got = set(gen.top_p_filter(logits, p).isfinite()[0].nonzero().flatten().tolist())
    assert got == kept


def test_top_k_then_top_p_then_sampling_draws_only_kept_tokens_in_proportion():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 3.0, 0.5]])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([gen.sample_next(logits.expand(500, -1), 1.0, top_k=4, top_p=0.8,
                                         generator=g) for _ in range(4)]).flatten()
    allowed = gen.top_p_filter(gen.top_k_filter(logits, 4), 0.8)
    assert set(draws.tolist()) == set(allowed.isfinite()[0].nonzero().flatten().tolist())
    expected = allowed.softmax(-1)[0]
    observed = torch.bincount(draws, minlength=6).float() / draws.numel()
    torch.testing.assert_close(observed, expected, atol=0.03, rtol=0)


def test_temperature_zero_is_greedy_and_small_temperature_approaches_it():
    logits = torch.randn(8, 50, generator=torch.Generator().manual_seed(5)) * 3
    assert torch.equal(gen.sample_next(logits, 0.0), logits.argmax(-1))
    assert torch.equal(gen.sample_next(logits, 0, top_k=3, top_p=0.5), logits.argmax(-1))
    g = torch.Generator().manual_seed(0)
    assert torch.equal(gen.sample_next(logits, 1e-4, generator=g), logits.argmax(-1))
    model = tiny_model()
    prompt = [1, 2, 3]
    assert torch.equal(gen.generate(model, prompt, 8, temperature=0),
                       naive_greedy(model, torch.tensor([prompt]), 8)[0][0])


@pytest.mark.parametrize("t", [0.5, 1.0, 2.0])
def test_sampling_follows_the_softmax_of_logits_over_temperature(t):
    """sample_next's draws, counted: their frequencies are softmax(logits / t)."""
    logits = torch.tensor([2.0, 1.0, 0.0])
    g = torch.Generator().manual_seed(0)
    draws = gen.sample_next(logits.expand(20_000, 3), temperature=t, generator=g)
    freq = torch.bincount(draws, minlength=3) / 20_000
    torch.testing.assert_close(freq, (logits / t).softmax(-1), atol=0.015, rtol=0)


def test_top_k_is_applied_before_top_p():
    """Top-2 leaves [0.4, 0.3] -> renormalized [0.57, 0.43]; top-p 0.5 of that keeps token 0
    alone. (Top-p first would keep tokens 0 and 1 of the full distribution.)"""
    logits = torch.tensor([0.4, 0.3, 0.2, 0.1]).log().expand(500, 4)
    g = torch.Generator().manual_seed(0)
    draws = gen.sample_next(logits, temperature=1.0, top_k=2, top_p=0.5, generator=g)
    assert set(draws.tolist()) == {0}


def test_seeded_sampling_is_reproducible():
    model = tiny_model()
    kw = dict(temperature=1.0, top_k=20, top_p=0.95)
    a = gen.generate(model, [5, 6], 15, seed=42, **kw)
    b = gen.generate(model, [5, 6], 15, seed=42, **kw)
    c = gen.generate(model, [5, 6], 15, seed=43, **kw)
    d = gen.generate(model, [5, 6], 15, generator=torch.Generator().manual_seed(42), **kw)
    assert torch.equal(a, b) and torch.equal(a, d)
    assert not torch.equal(a, c)


# --- stopping, streaming, modes ---------------------------------------------------------------


def test_stops_at_the_end_token_and_pads_finished_rows():
    model = tiny_model()
    prompts = rand_ids((2, 4), seed=6)
    free = gen.generate(model, prompts, 12, temperature=0)[:, 4:]
    eos = int(free[0, 2])  # row 0 says it at step 2 (or earlier)
    stopped = gen.generate(model, prompts, 12, temperature=0, eos_id=eos)[:, 4:]
    first = [(row == eos).nonzero()[0].item() if (row == eos).any() else None for row in free]
    assert first[0] is not None
    if first[1] is None:  # row 1 never says it: generation runs to the end, row 0 padded
        assert stopped.size(1) == 12
    else:
        assert stopped.size(1) == max(first) + 1
    for row, f in zip(range(2), first):
        if f is not None:
            assert torch.equal(stopped[row, : f + 1], free[row, : f + 1])
            assert (stopped[row, f:] == eos).all()


def test_generation_restores_training_mode_and_needs_no_grad():
    model = tiny_model().train()
    out = gen.generate(model, [1, 2], 3, temperature=0)
    assert model.training and not out.requires_grad
    for _token, logits in gen.stream(model, [1, 2], 2):
        assert not model.training and not logits.requires_grad and torch.is_grad_enabled()
    assert model.training


BYTES = BPETokenizer()  # no merges: one token per UTF-8 byte, so a character can span several


def scripted(tokens: list[int]) -> GPT:
    """A GPT that says ``tokens``, one per position, whatever the prompt: the blocks add nothing
    (their output projections are zero), each position embeds as a different unit vector, and
    the (untied) head maps position p's vector to ``tokens[p]``."""
    n = len(tokens)
    model = GPT(small(vocab_size=256, block_size=n + 1, n_layer=1, n_head=2, n_embd=2 * n,
                      tie_weights=False))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for block in model.h:
            block.ln_1.weight.fill_(1)
            block.ln_2.weight.fill_(1)
        model.ln_f.weight.fill_(1)
        for pos, token in enumerate(tokens):
            model.wpe.weight[pos, pos] = 1.0
            model.lm_head.weight[token, pos] = 1.0
    return model.eval()


def test_stream_text_holds_back_a_half_finished_character():
    target = list("aé€b".encode())  # 1, 2, 3 and 1 bytes
    model = scripted(target)
    assert gen.generate(model, [ord("x")], len(target), temperature=0)[1:].tolist() == target
    pieces = list(gen.stream_text(model, BYTES, "x", len(target), temperature=0))
    assert pieces == ["a", "é", "€", "b"]


def test_stream_text_yields_what_is_left_of_a_cut_character_at_the_end():
    model = scripted(list("a€".encode())[:3])  # the euro sign's first two bytes only
    assert list(gen.stream_text(model, BYTES, "x", 3, temperature=0)) == ["a", "\ufffd"]


def test_stream_text_pieces_add_up_to_the_generated_text():
    model = tiny_model(vocab_size=256)
    pieces = list(gen.stream_text(model, BYTES, "To be", 20, seed=0))
    ids = gen.generate(model, BYTES.encode("To be"), 20, seed=0)[5:].tolist()
    assert "".join(pieces) == BYTES.decode(ids) and len(pieces) > 1


# --- bad settings -----------------------------------------------------------------------------


@pytest.mark.parametrize("kw, words", [
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(top_p=-0.1), "top_p"),
    (dict(temperature=-1.0), "temperature"), (dict(temperature=float("nan")), "temperature"),
    (dict(top_k=0), "top_k"), (dict(top_k=2.5), "top_k"),
])
def test_invalid_settings_are_clear_errors(kw, words):
    """Checked once, where they come in (generate, stream, and the command line)."""
    model = tiny_model()
    with pytest.raises(ValueError, match=words):
        gen.generate(model, [1, 2], 3, **kw)
    with pytest.raises(ValueError, match=words):
        check_sampling(**{"temperature": 1.0, **kw})


def test_a_tiny_temperature_is_nearly_greedy_without_overflow():
    logits = torch.tensor([[1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert gen.sample_next(logits, temperature=1e-40, generator=g).tolist() == [2, 0]


def test_invalid_prompts_are_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="25 tokens; it needs 1 to 24 .*shorten it"):
        gen.generate(model, list(range(25)), 1)
    with pytest.raises(ValueError, match="0 tokens; it needs 1 to 24"):
        gen.generate(model, [], 1)
    with pytest.raises(ValueError):  # a batch needs one length (torch says which)
        gen.generate(model, [[1, 2, 3], [4, 5]], 1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        gen.generate(model, [1], -1)
    with pytest.raises(ValueError, match="non-empty"):
        list(gen.stream_text(model, BYTES, "", 1))


def test_numpy_prompts_work_like_lists():
    model = tiny_model()
    expected = gen.generate(model, [1, 2, 3], 4, temperature=0)
    assert torch.equal(gen.generate(model, np.array([1, 2, 3], dtype=np.uint16), 4,
                                    temperature=0), expected)
    assert torch.equal(gen.generate(model, list(np.array([1, 2, 3])), 4, temperature=0),
                       expected)
    assert torch.equal(gen.generate(model, np.array([[1, 2, 3]]), 4, temperature=0)[0],
                       expected)


def test_block_size_prompt_is_allowed_and_slides():
    model = tiny_model()
    out = gen.generate(model, list(range(24)), 3, temperature=0)
    assert out.shape == (27,)


# --- an independent reference, and a GPU ---------------------------------------------------


def test_greedy_equals_hugging_face_generate():
    transformers = pytest.importorskip("transformers")
    from buildllm.convert import to_hf

    model = tiny_model()
    hf = to_hf(model).eval()
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    ours = gen.generate(model, prompt, 12, temperature=0)
    config = transformers.GenerationConfig(max_new_tokens=12, min_new_tokens=12, do_sample=False,
                                           pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt),
                             generation_config=config)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("device", [CUDA])
def test_generation_on_a_gpu_equals_the_cpu(device):
    model = tiny_model()
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    on_cpu = gen.generate(model, prompt, 15, temperature=0)
    model.to(device)
    with_cache = gen.generate(model, prompt, 15, temperature=0)
    without = gen.generate(model, prompt, 15, temperature=0, use_cache=False)
    assert with_cache.device.type == "cuda"
    assert torch.equal(with_cache.cpu(), on_cpu) and torch.equal(without, with_cache)
    sampled = gen.generate(model, prompt, 15, top_k=5, seed=7)
    assert torch.equal(sampled, gen.generate(model, prompt, 15, top_k=5, seed=7))

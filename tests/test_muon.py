"""buildllm.muon: the Newton-Schulz iteration (singular values near 1, singular vectors kept),
Muon's step against a reference written out here with an SVD, AdamW's part against
torch.optim.AdamW, the parameter groups, the state through a checkpoint and an exact resume of
a training run, and clear errors for bad settings."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from buildllm import checkpoint, train
from buildllm.model import GPT
from buildllm.muon import NS_COEFFICIENTS, Muon, muon_scale, newton_schulz, param_groups
from buildllm.tokenizer import CharTokenizer
from shared import TEXT, losses, small, tiny

pytestmark = pytest.mark.usefixtures("private_cache")

# The band of the quintic after 5 steps: a singular value of at least 0.003 times the matrix's
# norm ends between 0.68 and 1.21 (the iteration oscillates around 1, it does not converge).
BAND = (0.68, 1.21)
RECTANGULAR = [(32, 64), (64, 32), (128, 384), (384, 128), (256, 128), (16, 1024)]


def quintic(s: torch.Tensor, steps: int = 5) -> torch.Tensor:
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return s


def test_the_quintic_sends_every_singular_value_into_the_band():
    s = torch.linspace(0.003, 1.0, 10_000, dtype=torch.float64)
    out = quintic(s)
    assert BAND[0] <= out.min() and out.max() <= BAND[1]
    assert quintic(torch.tensor(1e-4, dtype=torch.float64)) < 0.1  # too small: not yet there


@pytest.mark.parametrize("shape", RECTANGULAR)
def test_newton_schulz_gives_singular_values_near_one(shape):
    torch.manual_seed(0)
    s = torch.linalg.svdvals(newton_schulz(torch.randn(shape)))
    assert len(s) == min(shape)
    assert BAND[0] <= s.min() and s.max() <= BAND[1]


@pytest.mark.parametrize("n", [64, 128])
def test_newton_schulz_on_a_square_matrix(n):
    """A random square matrix has singular values close to 0, which five steps do not lift
    all the way; the rest land in the band, and none above it."""
    torch.manual_seed(0)
    s = torch.linalg.svdvals(newton_schulz(torch.randn(n, n)))
    assert s.max() <= BAND[1]
    assert ((s >= BAND[0]) & (s <= BAND[1])).float().mean() > 0.9


@pytest.mark.parametrize("shape", [(48, 16), (16, 48), (32, 32)])
def test_newton_schulz_is_the_quintic_on_the_singular_values(shape):
    """The iteration keeps the singular vectors and maps each singular value s / |G| alone."""
    torch.manual_seed(1)
    G = torch.randn(shape, dtype=torch.float64)
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    expected = U @ torch.diag(quintic(S / G.norm())) @ Vh
    torch.testing.assert_close(newton_schulz(G), expected)
    torch.testing.assert_close(newton_schulz(G.T), expected.T)


@pytest.mark.parametrize("shape", RECTANGULAR)
def test_the_scale_gives_the_step_its_root_mean_square(shape):
    torch.manual_seed(0)
    step = muon_scale(torch.Size(shape), 0.2) * newton_schulz(torch.randn(shape))
    assert 0.2 * BAND[0] <= step.pow(2).mean().sqrt() <= 0.2 * BAND[1]


# ---- the optimizer ---------------------------------------------------------------------------


class Toy(nn.Module):
    """Two matrices (Muon), an embedding and a bias (AdamW)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.up = nn.Linear(8, 24)
        self.down = nn.Linear(24, 8, bias=False)

    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        return (self.down(torch.tanh(self.up(x))) - x.flip(-1)).pow(2).mean()


def reference_muon(W, grads, lr, beta, rms, wd):
    """Muon step by step for one matrix W, with an SVD where the library iterates."""
    W, buf = W.clone(), torch.zeros_like(W)
    for g in grads:
        buf = beta * buf + (1 - beta) * g  # momentum
        d = (1 - beta) * g + beta * buf  # Nesterov: the gradient, pushed along the momentum
        U, S, Vh = torch.linalg.svd(d, full_matrices=False)
        O = U @ torch.diag(quintic(S / d.norm())) @ Vh  # ~ U V^T
        W = W * (1 - lr * wd) - lr * rms * max(W.shape) ** 0.5 * O
    return W


def test_muon_step_matches_the_reference_and_adamw_matches_torch():
    torch.manual_seed(0)
    model, twin = Toy(), Toy()
    twin.load_state_dict(model.state_dict())
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = Muon(param_groups(model, weight_decay=0.1), lr=0.01, momentum=0.9, rms=0.3,
               betas=(0.9, 0.95))
    adamw = torch.optim.AdamW([{"params": [twin.emb.weight], "weight_decay": 0.1},
                               {"params": [twin.up.bias], "weight_decay": 0.0}],
                              lr=0.01, betas=(0.9, 0.95))
    grads = {"up.weight": [], "down.weight": []}
    for _ in range(4):
        idx = torch.randint(0, 10, (4, 5))
        for m in (model, twin):
            m.zero_grad()
            m.loss(idx).backward()
        for name in grads:
            grads[name].append(model.get_parameter(name).grad.clone())
        opt.step()
        adamw.step()
        with torch.no_grad():  # the twin's matrices follow Muon's, so its gradients do too
            twin.up.weight.copy_(model.up.weight)
            twin.down.weight.copy_(model.down.weight)
    for name, g in grads.items():
        expected = reference_muon(start[name], g, lr=0.01, beta=0.9, rms=0.3, wd=0.1)
        torch.testing.assert_close(model.get_parameter(name), expected, atol=1e-6, rtol=1e-5)
    for name in ("emb.weight", "up.bias"):  # AdamW's part: as torch.optim.AdamW
        torch.testing.assert_close(model.get_parameter(name), twin.get_parameter(name))


def test_adamw_part_equals_torch_adamw_with_weight_decay():
    torch.manual_seed(0)
    model, twin = Toy(), Toy()
    twin.load_state_dict(model.state_dict())
    opt = Muon([{"params": [model.emb.weight], "muon": False}], lr=0.02, weight_decay=0.1,
               betas=(0.8, 0.99), eps=1e-8)
    ref = torch.optim.AdamW([twin.emb.weight], lr=0.02, weight_decay=0.1, betas=(0.8, 0.99),
                            eps=1e-8)
    for _ in range(5):
        idx = torch.randint(0, 10, (4, 5))
        for m, o in ((model, opt), (twin, ref)):
            m.zero_grad()
            m.loss(idx).backward()
            o.step()
    torch.testing.assert_close(model.emb.weight, twin.emb.weight)


def test_param_groups_send_hidden_matrices_to_muon_and_the_rest_to_adamw():
    for tied in (True, False):
        model = GPT(small(tie_weights=tied, mlp="swiglu", bias=True))
        groups = param_groups(model, weight_decay=0.1)
        names = {id(p): n for n, p in model.named_parameters()}
        muon, outer, vectors = ([names[id(p)] for p in g["params"]] for g in groups)
        assert [g["muon"] for g in groups] == [True, False, False]
        assert all(n.startswith("h.") and n.endswith(".weight") for n in muon)
        assert sorted(outer) == sorted(["wte.weight", "wpe.weight"]
                                       + ([] if tied else ["lm_head.weight"]))
        assert all(model.get_parameter(n).dim() == 1 for n in vectors)
        assert [g["weight_decay"] for g in groups] == [0.1, 0.1, 0.0]
        assert sorted(muon + outer + vectors) == sorted(names.values())  # each once


def test_make_optimizer_builds_muon_from_the_config():
    config = tiny(optimizer="muon", lr=0.01, muon_momentum=0.8, muon_rms=0.3)
    model = GPT(dataclasses.replace(config.model, vocab_size=10))
    opt = train.make_optimizer(model, config)
    assert isinstance(opt, Muon)
    muon_group = opt.param_groups[0]
    assert muon_group["muon"] and muon_group["momentum"] == 0.8 and muon_group["rms"] == 0.3
    assert all(g["lr"] == 0.01 and g["betas"] == (config.beta1, config.beta2)
               for g in opt.param_groups)
    assert not isinstance(train.make_optimizer(model, tiny()), Muon)


# ---- state: checkpoints and resume -----------------------------------------------------------


def stepped(model: GPT, opt: torch.optim.Optimizer, steps: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    V, T = model.config.vocab_size, model.config.block_size
    for _ in range(steps):
        idx = torch.randint(0, V, (3, T + 1), generator=gen)
        opt.zero_grad()
        model(idx[:, :-1], idx[:, 1:])[1].backward()
        opt.step()


def test_state_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = GPT(small(tie_weights=False))
    opt = Muon(param_groups(model, 0.1), lr=0.01)
    stepped(model, opt, 3, seed=0)
    tok = CharTokenizer(TEXT)
    checkpoint.save_checkpoint(tmp_path / "ckpt", model, tok, optimizer=opt)
    ckpt = checkpoint.load_checkpoint(tmp_path / "ckpt")
    model2 = ckpt.model.train()
    opt2 = Muon(param_groups(model2, 0.1), lr=0.01)
    opt2.load_state_dict(ckpt.optimizer_state)
    kinds = {k for state in opt2.state.values() for k in state}
    assert kinds == {"momentum_buffer", "step", "exp_avg", "exp_avg_sq"}
    stepped(model, opt, 2, seed=1)
    stepped(model2, opt2, 2, seed=1)
    for (name, a), b in zip(model.named_parameters(), model2.parameters()):
        assert torch.equal(a, b), name


def test_a_muon_run_resumes_exactly(tmp_path):
    config = tiny(max_steps=16, eval_interval=8, optimizer="muon", lr=0.01)
    whole = train.train(config, tmp_path / "whole", text=TEXT)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):  # down at step 9: the checkpoint is step 8's
        train.train(config, part, text=TEXT, clock=_stop_after(2 * 9 - 1))
    saved = json.loads((part / "checkpoint" / "config.json").read_text())
    assert saved["train"]["step"] == 8
    resumed = train.train(config, part, resume=True, text=TEXT)
    assert losses(resumed.log) == losses(whole.log)  # bit for bit
    assert resumed.final["loss"] == whole.final["loss"]
    assert losses(whole.log)[-1][1] < losses(whole.log)[0][1] - 0.5  # and it learns


def _stop_after(readings: int):
    count = iter(range(1, 10**6))

    def clock() -> float:
        if next(count) == readings:
            raise KeyboardInterrupt("the machine went down")
        return 0.0

    return clock


# ---- bad settings ----------------------------------------------------------------------------


@pytest.mark.parametrize("setting, message", [
    (dict(muon_momentum=1.0), "muon_momentum must be in"), (dict(muon_rms=0.0), "muon_rms"),
    (dict(beta2=1.0), "beta2 must be in"), (dict(muon_momentum=-0.1), "muon_momentum"),
])
def test_bad_settings_are_clear_errors(setting, message):
    """Muon's settings are checked where they come in: the training configuration."""
    with pytest.raises(ValueError, match=message):
        tiny(optimizer="muon", **setting)


def test_groups_must_say_muon_or_adamw_and_muon_takes_matrices_only():
    model = Toy()
    with pytest.raises(AssertionError, match="needs 'muon': True or False"):
        Muon([{"params": list(model.parameters())}])
    with pytest.raises(AssertionError, match="matrices only; vectors go with muon=False"):
        Muon([{"params": [model.up.bias], "muon": True}])
    with pytest.raises(ValueError, match="optimizer must be one of .*'sgd'"):
        tiny(optimizer="sgd")

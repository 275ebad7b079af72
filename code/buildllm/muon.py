"""Muon: momentum, orthogonalized by Newton-Schulz. Explained in the chapter "From GPT-2 to
today's LLMs".

Muon (Jordan et al., 2024) trains the weight matrices inside the transformer blocks. Like SGD
it keeps a momentum of the gradient; then it replaces each matrix's step by the nearest
orthogonal matrix (every singular value set to about 1, the singular vectors kept), computed
with five steps of the Newton-Schulz iteration (:func:`newton_schulz`). A gradient matrix is
dominated by a few directions; the orthogonal step moves every direction by the same amount.
The step is scaled so that its root mean square is ``rms`` (0.2, about AdamW's), which lets
Muon share AdamW's learning rate, schedule and weight decay (Liu et al., 2025).

Embeddings, the output head and vectors (normalization gains, biases) are not matrices that
map a hidden vector to a hidden vector; they stay with AdamW, as in the published recipe. Both
live in one optimizer, :class:`Muon`, whose parameter groups are flagged ``muon=True`` or
``muon=False`` (:func:`param_groups` makes them), so that a checkpoint holds one optimizer
state and a run resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # the quintic of Jordan et al.
NS_STEPS = 5


def newton_schulz(G: torch.Tensor, steps: int = NS_STEPS) -> torch.Tensor:
    """An orthogonalized ``G`` ``(m, n)``: for ``G = U S V^T``, about ``U V^T``.

    The quintic ``X <- a X + b (X X^T) X + c (X X^T)^2 X`` acts on every singular value
    alone, as ``s <- a s + b s^3 + c s^5``. Its coefficients pull any singular value in
    ``(0, 1]`` fast towards 1 without converging exactly: after five steps the values lie
    between about 0.7 and 1.2. Dividing by the norm first puts them all in ``(0, 1]``; a
    tall matrix is transposed so that ``X X^T`` is the smaller of the two products.
    """
    a, b, c = NS_COEFFICIENTS
    tall = G.size(-2) > G.size(-1)
    X = G.mT if tall else G
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # every singular value <= 1
    for _ in range(steps):
        A = X @ X.mT  # (m, m)
        X = a * X + (b * A + c * A @ A) @ X
    return X.mT if tall else X


def muon_update(grad: torch.Tensor, momentum: torch.Tensor, beta: float = 0.95,
                nesterov: bool = True, steps: int = NS_STEPS) -> torch.Tensor:
    """The orthogonalized step of one matrix, before the learning rate and the scale.

    ``momentum`` (the matrix's buffer) becomes ``beta * momentum + (1 - beta) * grad``, in
    place. Nesterov momentum steps along ``(1 - beta) * grad + beta * momentum``: the
    gradient mixed with where the momentum is heading.
    """
    momentum.lerp_(grad, 1 - beta)
    direction = grad.lerp(momentum, beta) if nesterov else momentum
    return newton_schulz(direction, steps)


def muon_scale(shape: torch.Size, rms: float) -> float:
    """The factor that gives an orthogonalized ``(m, n)`` step a root mean square of
    ``rms``.

    An orthogonal ``(m, n)`` matrix has ``min(m, n)`` singular values of 1, hence a root
    mean square of ``1 / sqrt(max(m, n))``.
    """
    return rms * math.sqrt(max(shape[-2], shape[-1]))


def muon_step(p: torch.Tensor, state: dict, group: dict) -> None:
    """Muon's update of one matrix ``p``: decoupled weight decay, then the scaled step."""
    if not state:
        state["momentum_buffer"] = torch.zeros_like(p)
    update = muon_update(p.grad, state["momentum_buffer"], group["momentum"],
                         group["nesterov"], group["ns_steps"])
    p.mul_(1 - group["lr"] * group["weight_decay"])
    p.add_(update, alpha=-group["lr"] * muon_scale(p.shape, group["rms"]))


def adamw_step(p: torch.Tensor, state: dict, group: dict) -> None:
    """AdamW's update of one tensor ``p``, as ``torch.optim.AdamW`` computes it."""
    if not state:
        state["step"] = torch.tensor(0.0)
        state["exp_avg"] = torch.zeros_like(p)
        state["exp_avg_sq"] = torch.zeros_like(p)
    beta1, beta2 = group["betas"]
    state["step"] += 1
    step = state["step"].item()
    p.mul_(1 - group["lr"] * group["weight_decay"])
    state["exp_avg"].lerp_(p.grad, 1 - beta1)  # first moment: mean of the gradient
    state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)  # second
    denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2 ** step)).add_(group["eps"])
    p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - beta1 ** step))


class Muon(torch.optim.Optimizer):
    """Muon for the parameter groups flagged ``muon=True`` (matrices), AdamW for the groups
    flagged ``muon=False``, in one optimizer.

    ``lr`` and ``weight_decay`` (decoupled, as in AdamW) apply to both kinds; ``momentum``,
    ``nesterov``, ``ns_steps`` and ``rms`` (the root mean square of a Muon step per unit of
    learning rate) to Muon's, ``betas`` and ``eps`` to AdamW's. A group may set its own. The
    settings are checked where they come in (:class:`~buildllm.config.TrainConfig`).
    """

    def __init__(self, params: Iterable[dict], lr: float = 1e-3, momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = NS_STEPS, rms: float = 0.2,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                        rms=rms, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(list(params), defaults)
        for group in self.param_groups:  # param_groups(model) makes them so
            assert isinstance(group.get("muon"), bool), "each group needs 'muon': True or False"
            assert not group["muon"] or all(p.dim() == 2 for p in group["params"]), \
                "a group with muon=True holds matrices only; vectors go with muon=False (AdamW)"

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            update = muon_step if group["muon"] else adamw_step
            for p in group["params"]:
                if p.grad is not None:
                    update(p, self.state[p], group)
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The model's parameters in three groups: Muon for the matrices of the hidden layers;
    AdamW for the embeddings and the output head (with weight decay) and for the vectors
    (norm gains, biases; without)."""
    outer = {id(m.weight) for name, m in model.named_modules()
             if isinstance(m, nn.Embedding) or name.split(".")[-1] == "lm_head"}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() == 2 and id(p) not in outer],
               "muon": True, "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() >= 2 and id(p) in outer], "muon": False,
               "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "muon": False, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]

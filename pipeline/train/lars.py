"""LARS (You et al., 2017, "Large Batch Training of Convolutional Networks"), the optimizer
of SimCLR, BYOL, Barlow Twins and VICReg.

SGD with momentum where each weight tensor's step is rescaled by a trust ratio
``eta * ||w|| / ||g + wd * w||``, so every layer moves by about the same *relative* amount
whatever its gradient scale. As in those papers, tensors of a group with
``lars_exclude=True`` (biases and norm parameters) get plain SGD: no trust ratio.
torch has no LARS; this is the update of the Barlow Twins / VICReg reference code.
"""

from __future__ import annotations

import torch


class LARS(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad.clone()
                if not group["lars_exclude"]:
                    w_norm, d_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    # a zero norm (fresh zero-init weight or zero gradient) keeps the plain step
                    trust = torch.where((w_norm > 0) & (d_norm > 0), group["eta"] * w_norm / d_norm, torch.ones_like(w_norm))
                    d.mul_(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = d
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss

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
    """``foreach=True`` (the default) updates each parameter group with torch's multi-tensor
    ``_foreach_*`` ops: a fixed number of kernel launches per group instead of ~8 per tensor
    (a ResNet-50 has 161 tensors), the per-tensor trust ratios computed as one vector. The
    per-tensor loop (``foreach=False``) is the reference it is tested against."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001,
                 foreach: bool = True):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False))
        self.foreach = foreach

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            (self._group_foreach if self.foreach else self._group_per_tensor)(group)
        return loss

    def _group_per_tensor(self, group: dict) -> None:
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

    def _group_foreach(self, group: dict) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        # d = g + wd * w (new tensors), or the gradients themselves (read only below)
        d = torch._foreach_add(grads, params, alpha=group["weight_decay"]) if group["weight_decay"] else grads
        if not group["lars_exclude"]:
            w_norm = torch.stack(torch._foreach_norm(params))  # [P]
            d_norm = torch.stack(torch._foreach_norm(d))
            # a zero norm (fresh zero-init weight or zero gradient) keeps the plain step
            trust = torch.where((w_norm > 0) & (d_norm > 0), group["eta"] * w_norm / d_norm, torch.ones_like(w_norm))
            d = torch._foreach_mul(d, list(trust.unbind(0)))  # each tensor times its 0-dim ratio (as torch's Adam)
        states = [self.state[p] for p in params]
        fresh = [i for i, st in enumerate(states) if "momentum_buffer" not in st]
        for i in fresh:  # first step of a tensor: the buffer starts as its update (its own copy)
            states[i]["momentum_buffer"] = d[i].clone() if d is grads else d[i]
        if len(fresh) < len(params):
            old = set(fresh)
            bufs = [st["momentum_buffer"] for i, st in enumerate(states) if i not in old]
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, [t for i, t in enumerate(d) if i not in old])
        torch._foreach_add_(params, [st["momentum_buffer"] for st in states], alpha=-group["lr"])

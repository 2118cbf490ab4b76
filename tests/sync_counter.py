"""A CPU proxy for CUDA host syncs: count the calls that would block the host on a GPU.

On CUDA, a call that needs a value (or a shape) computed on the device waits for every
kernel queued before it: ``.item()``, ``bool(t)``, ``nonzero``, boolean-mask indexing, a copy
to the CPU, ``torch.tensor(..., device=...)`` from a Python list (a blocking copy from
pageable memory). No GPU runs here, so tests wrap code in ``SyncCounter`` (a
``TorchFunctionMode``) and count those calls on CPU tensors, where the same code would sync
on a GPU. Usage::

    with SyncCounter() as syncs:
        out = method.training_step(images)
    assert syncs.count == 0, syncs.calls   # calls: ["nonzero", "Tensor.item", ...]

It counts what goes through torch's function dispatch from Python; synchronising work
inside one C++ op (e.g. ``torch.unique``) is counted by naming the op. ``.to(device)`` is not
counted: on the CPU the proxy cannot tell a move to the training device (asynchronous from
pinned memory) from a copy back to the host; write ``.cpu()`` for the latter.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

# functions and methods whose result (or output shape) needs device values on the host
_SYNCING = {
    torch.Tensor.item: "Tensor.item",
    torch.Tensor.tolist: "Tensor.tolist",
    torch.Tensor.numpy: "Tensor.numpy",
    torch.Tensor.cpu: "Tensor.cpu",
    torch.Tensor.__bool__: "Tensor.__bool__",
    torch.Tensor.__int__: "Tensor.__int__",
    torch.Tensor.__float__: "Tensor.__float__",
    torch.Tensor.__index__: "Tensor.__index__",
    torch.Tensor.nonzero: "nonzero",
    torch.nonzero: "nonzero",
    torch.argwhere: "nonzero",
    torch.Tensor.masked_select: "masked_select",
    torch.masked_select: "masked_select",
    torch.unique: "unique",
    torch.Tensor.unique: "unique",
    torch.unique_consecutive: "unique",
    torch.Tensor.unique_consecutive: "unique",
}


def _is_bool_mask(index) -> bool:
    """A boolean tensor anywhere in an index (``x[mask]``, ``x[:, mask]``): its result's
    shape is the mask's count, known only on the device."""
    if isinstance(index, torch.Tensor):
        return index.dtype == torch.bool
    if isinstance(index, (tuple, list)):
        return any(_is_bool_mask(i) for i in index)
    return False


class SyncCounter(TorchFunctionMode):
    """Counts synchronising calls made inside it; ``calls`` lists them in order."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    @property
    def count(self) -> int:
        return len(self.calls)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _SYNCING.get(func)
        if name is None:
            name = self._conditional(func, args, kwargs)
        if name is not None:
            self.calls.append(name)
        return func(*args, **kwargs)

    @staticmethod
    def _conditional(func, args, kwargs) -> str | None:
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and len(args) > 1 and _is_bool_mask(args[1]):
            return "bool-mask index"
        if func is torch.Tensor.index_put_ or func is torch.Tensor.index_put:
            if _is_bool_mask(args[1] if len(args) > 1 else kwargs.get("indices")):
                return "bool-mask index"
        if func in (torch.tensor, torch.as_tensor) and kwargs.get("device") is not None:
            return "torch.tensor(device=)"
        if func in (torch.repeat_interleave, torch.Tensor.repeat_interleave):
            # tensor repeats without output_size: the output length is a device sum
            repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
            if isinstance(repeats, torch.Tensor) and repeats.numel() > 1 and kwargs.get("output_size") is None:
                return "repeat_interleave"
        return None

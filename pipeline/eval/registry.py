"""The evaluation protocols' registry: ``@register`` a class in a module of
``pipeline/eval/protocols/``, look it up by its stage name (``pipeline.registry``)."""

from __future__ import annotations

from pipeline.registry import Registry

PROTOCOLS: Registry[type] = Registry("evaluation protocol", ["pipeline.eval.protocols"], order=lambda name, cls: cls.order)
register, names = PROTOCOLS.register, PROTOCOLS.names


def get(name: str):
    """An instance of the protocol registered as ``name``."""
    return PROTOCOLS.get(name)()

"""The methods' registry: ``@register`` a class in a module of ``pipeline/methods/``, look it
up by its params name (``pipeline.registry``)."""

from __future__ import annotations

from pipeline.registry import Registry

METHODS: Registry[type] = Registry("method", ["pipeline.methods"])
register, names, get = METHODS.register, METHODS.names, METHODS.get

"""Registry of SSL methods: ``@register`` a class, look it up by its params name."""

from __future__ import annotations

from pipeline.errors import UserError

_METHODS: dict[str, type] = {}


def register(cls: type) -> type:
    if cls.name in _METHODS:
        raise ValueError(f"method {cls.name!r} registered twice")
    _METHODS[cls.name] = cls
    return cls


def names() -> list[str]:
    _load_all()
    return sorted(_METHODS)


def get(name: str) -> type:
    _load_all()
    if name not in _METHODS:
        raise UserError(f"unknown method {name!r}; valid methods are {sorted(_METHODS)}")
    return _METHODS[name]


def _load_all() -> None:
    import pipeline.methods  # noqa: F401  (importing the package registers every method)

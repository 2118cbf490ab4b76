"""Registry of evaluation protocols: ``@register`` a class, look it up by its stage name."""

from __future__ import annotations

from pipeline.errors import UserError

_PROTOCOLS: dict[str, type] = {}


def register(cls: type) -> type:
    if cls.name in _PROTOCOLS:
        raise ValueError(f"protocol {cls.name!r} registered twice")
    _PROTOCOLS[cls.name] = cls
    return cls


def names() -> list[str]:
    """Every registered protocol, in report order."""
    _load_all()
    return sorted(_PROTOCOLS, key=lambda n: (_PROTOCOLS[n].order, n))


def get(name: str):
    """An instance of the protocol registered as ``name``."""
    _load_all()
    if name not in _PROTOCOLS:
        raise UserError(f"unknown evaluation protocol {name!r}; valid protocols are {names()}")
    return _PROTOCOLS[name]()


def _load_all() -> None:
    import pipeline.eval.protocols  # noqa: F401  (importing the package registers every protocol)

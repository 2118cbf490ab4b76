"""SSL methods, one module each. Importing this package imports every module in it, and
each registers its method with ``@register``: a new method needs no change outside its file."""

import importlib
import pkgutil

_INFRASTRUCTURE = {"base", "registry", "ema"}

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in _INFRASTRUCTURE and not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")

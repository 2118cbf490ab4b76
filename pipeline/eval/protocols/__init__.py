"""Evaluation protocols, one module each. Importing this package imports every module in
it, and each registers its protocol with ``@register``: a new protocol needs no change
outside its file (plus its params section and its stage in dvc.yaml)."""

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")

"""One registry for every extension axis: methods, evaluation protocols, modalities, data
sources, transfer sets and baselines.

A registry names the package its entries live in; on the first lookup it imports every
module and sub-package in that package, and each registers its entries with
``@REGISTRY.register`` (a modality folder's ``__init__`` imports the modules it registers). So adding a method, a protocol, a source or a modality is adding
a module (or a folder): no list to edit. The import is by name (``importlib``), so a low
layer (``pipeline.config``) can look entries up without importing the layers above it.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, Iterable, TypeVar

from pipeline.errors import UserError

T = TypeVar("T")


def import_package(package: str) -> None:
    """Import ``package`` and every module and sub-package directly in it whose name does not
    start with ``_`` (a sub-package's ``__init__`` imports what it registers)."""
    pkg = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(getattr(pkg, "__path__", [])), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


class Registry(Generic[T]):
    """Entries of one kind (``kind``: "method", "evaluation protocol", ...) by name.

    ``packages``: where the entries' modules live (all imported on the first lookup);
    ``order``: sorts ``names()`` (default: by name)."""

    def __init__(self, kind: str, packages: Iterable[str], order: Callable[[str, T], object] | None = None,
                 plural: str | None = None):
        self.kind = kind
        self.plural = plural or f"{kind.split()[-1]}s"  # "valid protocols are ..."
        self.packages = tuple(packages)
        self._order = order
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, entry: T, name: str | None = None) -> T:
        """Add ``entry`` under ``name`` (default: its ``name`` attribute); usable as a decorator."""
        name = name or entry.name
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for package in self.packages:
                import_package(package)

    def names(self) -> list[str]:
        self._load()
        if self._order is None:
            return sorted(self._entries)
        return sorted(self._entries, key=lambda n: (self._order(n, self._entries[n]), n))

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} {name!r}; valid {self.plural} are {self.names()}")
        return self._entries[name]

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._entries[n]) for n in self.names()]


# The project's registries. Each lives here, in the lowest layer, so that params validation
# (pipeline.config) can look entries up without importing the packages that define them.
METHODS: Registry[type] = Registry("method", ["pipeline.methods"])  # classes (pipeline/methods/<name>.py)
# instances (pipeline/eval/protocols/<name>.py), in report order
PROTOCOLS: Registry = Registry("evaluation protocol", ["pipeline.eval.protocols"], order=lambda name, p: p.order,
                               plural="protocols")
# Modality instances (pipeline/modalities/<name>/__init__.py), and what each modality folder registers
# from its datasets/ modules: data sources (data.source) and transfer sets (transfer.datasets)
MODALITIES: Registry = Registry("modality", ["pipeline.modalities"], plural="modalities")
SOURCES: Registry = Registry("data source", ["pipeline.modalities"])
TRANSFER_SETS: Registry = Registry("transfer dataset", ["pipeline.modalities"])
# Shard codecs by the manifest's modality name ("image" when a manifest has none, "text"):
# classes with of(shard_dir, manifest) -> codec (pipeline/modalities/<name>/codec.py), looked
# up by the shard readers (pipeline.shards.read.codec_for), which sit below the modalities.
CODECS: Registry[type] = Registry("shard modality", ["pipeline.modalities"], plural="modalities")

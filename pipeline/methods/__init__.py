"""SSL methods. Importing this package registers each method module listed here."""

from pipeline.methods import simclr  # noqa: F401

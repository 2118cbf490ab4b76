"""Evaluation protocols, one module each (``pipeline.registry.PROTOCOLS`` imports every module
here, and each registers its protocol with ``@register``): a protocol's file holds its params,
checks, run, headline, report section and figures, so a new protocol needs no change outside
its file and its params section. Protocols share code through ``pipeline/eval/algorithms/``,
never by importing one another."""

"""Evaluation protocols, one module each (``pipeline.eval.registry`` imports every module
here, and each registers its protocol with ``@register``): a new protocol needs no change
outside its file and its params section."""

"""SSL methods, one module each (``pipeline.registry.METHODS`` imports every module here
that does not start with ``_``, and each registers its method with ``@register``): a new
method needs no change outside its file and its params section."""

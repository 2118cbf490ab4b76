"""WebDataset shards: splits, writing, reading and the manifest (see the modules)."""

"""Data: sources, splits, WebDataset shards (written and read), loaders and augmentations."""

"""WebDataset tar shards: writing (byte-identical for the same input), integrity, and reading.

A shard folder holds ``{split}-NNNNNN.tar`` files and ``manifest.json``, which names the
folder's modality and records counts (per split and per shard), classes and the sha256 of
every shard. The package knows tars, manifests and streams, not what a sample is: each
modality registers a codec (``pipeline.registry.CODECS``, ``pipeline/modalities/<name>/codec.py``)
that encodes and decodes its samples, and the readers look it up by the manifest's name.

- ``manifest``: ``manifest.json`` read (with its checks) and written; the one "re-create the
  shards" message, naming the folder's shard stage.
- ``write``: tar writing (``write_split``), the streaming writer of samples by reference
  (``write_shards``: pixel statistics, resume ``Journal``), split entries, subset copies.
- ``pool``: the writer's worker processes, encoding a chunk of samples at a time, in order.
- ``verify``: sha256 checks (once per process, or while streaming), sample counts, ``IO``.
- ``read``: ``load_split``, ``stream_batches`` (seeded epochs split by rank and loader
  worker), ``split_batches``, ``first_samples``, ``epoch_steps``, ``codec_for``.
- ``streams``: virtual streams (``data.streams``), which shard belongs to which reader.
"""

"""Fine-tuning's and the SGD probe's epoch length: the batches the shards give, with any number of
virtual streams (``data.streams``), so the lr schedule ends where the data does."""

import numpy as np
import pytest
import torch

from pipeline.config import EncoderParams
from pipeline.data.labelled import streamed
from pipeline.modalities.image.codec import write_image_shards
from pipeline.modalities.image.sources import ImageSet
from pipeline.eval.algorithms import finetune, linear_sgd
from pipeline.eval.algorithms.finetune import FinetuneParams
from pipeline.models.encoder import Encoder

CPU = torch.device("cpu")


class _Job(Exception):
    """Carries the TrainJob out of a patched ``fit``: the step count is all these tests need."""


def _raise_job(job, device, desc):
    raise _Job(job)


@pytest.mark.parametrize("n_streams", [1, 4])
def test_steps_are_the_batches_an_epoch_yields_in_finetune_and_the_sgd_probe(tmp_path, monkeypatch, n_streams):
    """10 train images: in 4 streams of 3, 3, 2, 2 a batch of 2 never spans streams, so an epoch is
    4 batches, not 10 // 2 = 5 (one stream: 5); both trainers schedule that many steps."""
    images = ImageSet(np.zeros((10, 8, 8, 1), np.uint8), np.arange(10) % 2, ["a", "b"])
    small = ImageSet(images.images[:n_streams], images.labels[:n_streams], images.classes)
    write_image_shards({"pretrain": small, "train": images, "val": small, "test": small}, tmp_path, 1000, source={},
                 n_streams=n_streams)
    data = streamed(tmp_path, ("train",), shuffle_buffer=4, workers=0, device=CPU)
    yielded = sum(1 for _ in data.batches_for(2, 0)(0))
    assert data.steps(2) == yielded == (4 if n_streams == 4 else 5)

    encoder = Encoder(EncoderParams(width=4, layers=[1]), 1, [0.5], [0.5])
    for module, train in ((finetune, lambda: finetune.train_classifier(encoder, data, 2, FinetuneParams(epochs=1, batch_size=2, lr=0.1), 1.0, 0, CPU, "ft")),
                          (linear_sgd, lambda: linear_sgd.linear_sgd(encoder, data, [], 2, 1, 2, 0.1, 0, CPU))):
        monkeypatch.setattr(module, "fit", _raise_job)
        with pytest.raises(_Job) as job:
            train()
        assert job.value.args[0].steps_per_epoch == yielded, module.__name__

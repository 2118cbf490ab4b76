"""A 2-D map of frozen features (t-SNE from scikit-learn; UMAP where installed)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd


def embedding_map(features: np.ndarray, labels: np.ndarray, seed: int, out_tsv: str) -> None:
    """Write ``x, y, label`` rows (a DVC scatter plot and the report's figure). features ``[N, D]``."""
    try:
        import umap  # type: ignore[import-not-found]

        xy = umap.UMAP(random_state=seed).fit_transform(features)
        method = "umap"
    except ImportError:
        from sklearn.manifold import TSNE

        xy = TSNE(n_components=2, init="pca", perplexity=30, random_state=seed).fit_transform(features)
        method = "tsne"
    os.makedirs(os.path.dirname(out_tsv) or ".", exist_ok=True)
    df = pd.DataFrame({"x": xy[:, 0].round(4), "y": xy[:, 1].round(4), "label": labels, "method": method})
    tmp = out_tsv + ".tmp"
    df.to_csv(tmp, sep="\t", index=False)
    os.replace(tmp, out_tsv)

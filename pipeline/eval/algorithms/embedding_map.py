"""A 2-D map of frozen features (t-SNE from scikit-learn; UMAP where installed)."""

from __future__ import annotations

import numpy as np


def embedding_map(features: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """``{"method": "tsne"|"umap", "x": [N], "y": [N], "label": [N]}`` of features ``[N, D]``
    (the report draws it)."""
    try:
        import umap  # type: ignore[import-not-found]

        xy = umap.UMAP(random_state=seed).fit_transform(features)
        method = "umap"
    except ImportError:
        from sklearn.manifold import TSNE

        xy = TSNE(n_components=2, init="pca", perplexity=30, random_state=seed).fit_transform(features)
        method = "tsne"
    return {"method": method, "x": xy[:, 0].round(4).tolist(), "y": xy[:, 1].round(4).tolist(),
            "label": np.asarray(labels).astype(int).tolist()}

"""Small pictures for asset metadata: markdown images (inline PNG) that the Dagster UI renders."""

from __future__ import annotations

import base64
import io


def bar_chart(title: str, labels: list[str], series: dict[str, list[float]]) -> str:
    """A grouped bar chart as a markdown image: one group per label, one bar per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(labels))], values, width=width, label=name)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(labels))], labels, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _markdown_image(fig, title)


def coverage_plot(title: str, embeddings, selected) -> str:
    """A 2-D projection (first two principal components) of `embeddings` (n, d), selected rows in
    colour over the rest in grey, as a markdown image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.asarray(embeddings, dtype=np.float64)
    mask = np.asarray(selected, dtype=bool)
    centered = x - x.mean(axis=0) if len(x) else x
    points = centered @ np.linalg.svd(centered, full_matrices=False)[2][:2].T if len(x) > 1 else np.zeros((len(x), 2))
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.scatter(points[~mask, 0], points[~mask, 1], s=4, c="#bbbbbb", label=f"not selected ({int((~mask).sum())})")
    ax.scatter(points[mask, 0], points[mask, 1], s=8, c="#d62728", label=f"selected ({int(mask.sum())})")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8)
    return _markdown_image(fig, title)


def _markdown_image(fig, title: str) -> str:
    """Close `fig` and return it as an inline PNG markdown image."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return f"![{title}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"

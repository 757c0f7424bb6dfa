"""Figures for the data-preparation notebook."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from mmrepr.data.schema import Dataset


def plot_distributions(ds: Dataset):
    """Interactions per user and per item (log scale) and the rating histogram, per split."""
    inter = ds.interactions
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    per_user = inter.groupby("user").size()
    per_item = inter.groupby("item").size()
    bins_u = np.unique(np.logspace(0, np.log10(max(per_user.max(), 2)), 30).astype(int))
    bins_i = np.unique(np.logspace(0, np.log10(max(per_item.max(), 2)), 30).astype(int))
    sns.histplot(per_user, bins=bins_u, ax=axes[0])
    axes[0].set(xscale="log", yscale="log", xlabel="interactions per user", title="Users")
    sns.histplot(per_item, bins=bins_i, ax=axes[1], color="C1")
    axes[1].set(xscale="log", yscale="log", xlabel="interactions per item", title="Items (popularity)")
    sns.countplot(data=inter, x="rating", hue="split", ax=axes[2], hue_order=["train", "val", "test"])
    axes[2].set(title="Ratings (relevant: >= 4)")
    fig.tight_layout()
    return fig

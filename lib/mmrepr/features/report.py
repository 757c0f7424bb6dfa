"""Tables and plots for notebook 02: what each feature set is, and what it captures."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mmrepr.features.store import FeatureSet, list_feature_sets, load_feature_set

log = logging.getLogger(__name__)

# planted attributes of the synthetic catalogue, in the order we prefer to show them
ATTRIBUTES = ("colour", "pattern", "category", "material", "brand", "shape")


SETS_COLUMNS = ["set", "role", "kind", "reference", "RANDOM WEIGHTS", "extractor", "model_id", "layer / pooling",
                "shape", "mean", "std", "missing", "device/dtype"]


def sets_table(run_dir: Path) -> pd.DataFrame:
    """One row per feature set and role: how it was made (random weights visible).

    A profile with no stage-2 sets (allrecipes) gets an empty table with the same columns.
    """
    rows = []
    for name in list_feature_sets(run_dir):
        fs = load_feature_set(run_dir, name)
        for role, m in fs.matrices.items():
            ext = fs.meta.get("extractors", {}).get(role, {})
            miss = fs.meta.get("missing", {}).get("per_role", {}).get(role, {})
            rows.append(
                {
                    "set": name,
                    "role": role,
                    "kind": fs.meta.get("kind", "?"),
                    "reference": fs.meta.get("reference"),
                    "RANDOM WEIGHTS": "yes" if fs.random_weights else "no",
                    "extractor": ext.get("extractor"),
                    "model_id": ext.get("model_id"),
                    "layer / pooling": f"{ext.get('layer')} / {ext.get('pooling')}" if ext else None,
                    "shape": f"{m.shape[0]} x {m.shape[1]}",
                    "mean": round(float(m.mean()), 4),
                    "std": round(float(m.std()), 4),
                    "missing": miss.get("missing"),
                    "device/dtype": f"{ext.get('device')}/{ext.get('dtype')}" if ext else None,
                }
            )
    return pd.DataFrame(rows, columns=SETS_COLUMNS)


def missing_table(run_dir: Path) -> pd.DataFrame:
    rows = []
    for name in list_feature_sets(run_dir):
        fs = load_feature_set(run_dir, name)
        miss = fs.meta.get("missing")
        if not miss:
            continue
        for role, r in miss.get("per_role", {}).items():
            rows.append(
                {
                    "set": name,
                    "role": role,
                    "policy": miss.get("policy"),
                    "missing": r.get("missing"),
                    "reasons": ", ".join(f"{k}: {v}" for k, v in r.get("reasons", {}).items()) or "-",
                    "converted images": ", ".join(f"{k}: {v}" for k, v in r.get("converted", {}).items()) or "-",
                    "dropped items": miss.get("n_dropped", 0),
                }
            )
    return pd.DataFrame(rows)


def ground_truth(run_dir: Path) -> pd.DataFrame | None:
    """The synthetic catalogue's planted item attributes, indexed by item id (None if absent)."""
    path = Path(run_dir) / "data" / "ground_truth" / "items.parquet"
    if not path.is_file():
        return None
    gt = pd.read_parquet(path)
    key = next((c for c in ("item", "parent_asin", "item_id", "asin") if c in gt.columns), None)
    if key is None:
        log.warning("%s has no item id column (item/parent_asin); columns %s", path, list(gt.columns))
        return None
    return gt.assign(_item=gt[key].astype(str)).drop_duplicates("_item").set_index("_item").rename_axis("item")


def known_attributes(gt: pd.DataFrame | None) -> list[str]:
    if gt is None:
        return []
    return [a for a in ATTRIBUTES if a in gt.columns and gt[a].nunique() > 1]


def attribute_probe(run_dir: Path, sets: list[str], attributes: list[str], seed: int, folds: int = 5) -> pd.DataFrame:
    """How well each feature set predicts each planted attribute (5-fold kNN accuracy).

    A content-free control should sit at the majority-class rate; a set that captures an
    attribute well above it. Shows which modality carries which part of the planted signal.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    gt = ground_truth(run_dir)
    if gt is None or not attributes:
        return pd.DataFrame()
    rows = []
    for name in sets:
        fs = load_feature_set(run_dir, name)
        ids = [i for i in fs.item_ids if i in gt.index]
        if len(ids) < 2 * folds:
            continue
        fs = fs.aligned(ids)
        x = np.hstack([fs.matrices[r] for r in sorted(fs.matrices)])
        row = {"set": name, "kind": fs.meta.get("kind"), "random_weights": fs.random_weights}
        for attr in attributes:
            y = gt.loc[ids, attr].astype(str).to_numpy()
            n_cv = min(folds, int(pd.Series(y).value_counts().min()))
            if n_cv < 2:
                row[attr] = np.nan
                continue
            clf = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=5, metric="cosine"))
            cv = StratifiedKFold(n_splits=n_cv, shuffle=True, random_state=seed)
            row[attr] = round(float(cross_val_score(clf, x, y, cv=cv).mean()), 3)
        rows.append(row)
    out = pd.DataFrame(rows)
    if not out.empty:
        chance = {a: round(float(gt[a].astype(str).value_counts(normalize=True).iloc[0]), 3) for a in attributes}
        out = pd.concat([out, pd.DataFrame([{"set": "(majority class)", **chance}])], ignore_index=True)
    return out


def embedding_maps(run_dir: Path, sets: list[str], attribute: str | None, seed: int, method: str = "pca"):
    """A 2-D map per feature set and role (PCA or t-SNE), items coloured by ``attribute``."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    gt = ground_truth(run_dir)
    panels = []
    for name in sets:
        fs: FeatureSet = load_feature_set(run_dir, name)
        for role, m in fs.matrices.items():
            panels.append((name, role, fs, m))
    if not panels:  # nothing to map (a profile without stage-2 sets)
        print("no feature sets to map")
        return None
    ncols = min(3, max(1, len(panels)))
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 4.2 * nrows), squeeze=False)
    for ax, (name, role, fs, m) in zip(axes.ravel(), panels):
        x = StandardScaler().fit_transform(m)
        if method == "tsne":
            xy = TSNE(n_components=2, random_state=seed, init="pca", perplexity=min(30, max(5, len(x) // 4))).fit_transform(x)
        else:
            xy = PCA(n_components=2, random_state=seed).fit_transform(x)
        hue = None
        if gt is not None and attribute in (gt.columns if gt is not None else []):
            hue = gt[attribute].reindex(fs.item_ids).astype(str).to_numpy()
        sns.scatterplot(x=xy[:, 0], y=xy[:, 1], hue=hue, s=14, ax=ax, legend=ax is axes.ravel()[0], palette="tab10")
        flag = " [RANDOM WEIGHTS]" if fs.random_weights else ""
        ax.set_title(f"{name} · {role} ({fs.meta.get('kind')}){flag}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    if attribute:
        fig.suptitle(f"{method.upper()} of each feature set, coloured by the planted '{attribute}'")
    fig.tight_layout()
    return fig

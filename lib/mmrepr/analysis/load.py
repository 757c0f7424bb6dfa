"""Read what stage 4 (and stages 2/3) left on disk, defensively.

Inputs, under ``runs/<profile>/``:

* ``train/`` — stage 4's outputs, read through :mod:`mmrepr.training.results` (the contract:
  ``best.parquet``, ``per_user/``, ``models.csv`` with each model's family and role);
* ``features/<set>/meta.json`` — ``kind`` (real | noise_gaussian | noise_mvn | shuffled),
  ``reference``, ``random_weights``, ``source``.

Anything missing or malformed is counted in :attr:`Inputs.problems` (shown in the report),
never dropped silently; a missing ``best.parquet`` is an error naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mmrepr.io import read_json
from mmrepr.training import results
from mmrepr.training.results import MetricSpec

CONTROL_KINDS = ("noise_gaussian", "noise_mvn", "shuffled")
KEYS = ["dataset", "model", "feature_set"]
# Short names of the test slices (results.TEST_SLICES) for table columns and figure axes.
SLICE_SHORT = {"test": "warm", "test_cold": "cold", "test_all": "all"}
PER_USER_FRAME = ["dataset", "model", "feature_set", "seed", "user", "metric", "k", "value"]


class AnalysisInputError(ValueError):
    """Stage-4 output that is missing or does not follow the contract."""


def parse_metric(label: str) -> MetricSpec:
    try:
        return results.parse_metric(label, "analysis.metrics")
    except results.ResultsError as exc:
        raise AnalysisInputError(str(exc)) from None


@dataclass
class Inputs:
    run_dir: Path
    best: pd.DataFrame  # test split rows of best.parquet
    per_user: pd.DataFrame  # dataset, model, feature_set, seed, user, metric, k, value
    feature_meta: dict[str, dict[str, Any]]
    # train/models.csv: model, family, needs, label, keyword_reference (the models' declarations).
    models: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=results.MODEL_COLUMNS))
    problems: list[str] = field(default_factory=list)
    # Every test slice (results.TEST_SLICES, the ``split`` column): ``slice_best`` holds the rows of
    # best.parquet, ``slice_per_user`` the per-user values (columns of ``per_user`` plus ``split``).
    # The "test" (warm) rows are ``best``/``per_user`` again; a slice stage 4 did not write is absent.
    slice_best: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=results.RESULT_COLUMNS))
    slice_per_user: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PER_USER_FRAME + ["split"]))

    def slices(self, dataset: str | None = None) -> list[str]:
        """The test slices with results (of ``dataset``, or of any), in TEST_SLICES order."""
        sb = self.slice_best if dataset is None else self.slice_best[self.slice_best["dataset"] == dataset]
        have = set(sb["split"]) if len(sb) else set()
        return [s for s in results.TEST_SLICES if s in have]

    def _model(self, model: str) -> dict[str, Any]:
        hit = self.models[self.models["model"] == model]
        return hit.iloc[0].to_dict() if len(hit) else {}

    def kind(self, feature_set: str) -> str:
        return feature_kind(feature_set, self.feature_meta.get(feature_set))

    def reference(self, feature_set: str) -> str | None:
        meta = self.feature_meta.get(feature_set) or {}
        ref = meta.get("reference")
        if ref:
            return str(ref)
        kind = self.kind(feature_set)
        if kind in CONTROL_KINDS and feature_set.startswith(kind + "_"):
            return feature_set[len(kind) + 1 :]
        return None

    def is_multimodal(self, model: str) -> bool:
        return self._model(model).get("family") == "multimodal"

    def is_keyword_model(self, model: str) -> bool:
        """Trained on attribute (keyword) sets, e.g. Attribute Item-kNN."""
        return self._model(model).get("needs") == "attributes"

    def label(self, model: str) -> str:
        return str(self._model(model).get("label") or model)

    @property
    def keyword_references(self) -> tuple[str, ...]:
        """The keyword models' references on interactions, most preferred first."""
        m = self.models[pd.to_numeric(self.models["keyword_reference"], errors="coerce").fillna(-1) >= 0]
        return tuple(m.sort_values(["keyword_reference", "model"])["model"])


def feature_kind(feature_set: str, meta: dict[str, Any] | None) -> str:
    """``none`` for pure baselines, else meta.json's ``kind``, else guessed from the name."""
    if not feature_set:
        return "none"
    if meta and meta.get("kind"):
        return str(meta["kind"])
    for kind in CONTROL_KINDS:
        if feature_set.startswith(kind + "_"):
            return kind
    return "real"


def load_feature_meta(run_dir: Path, names: list[str], problems: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        if not name:
            continue
        path = Path(run_dir) / "features" / name / "meta.json"
        if not path.is_file():
            problems.append(f"{path}: no meta.json; kind guessed from the name ({feature_kind(name, None)})")
            continue
        try:
            out[name] = read_json(path)
        except ValueError as exc:
            problems.append(f"{path}: unreadable ({exc}); kind guessed from the name")
    return out


def _slice_rows(rows: pd.DataFrame, split: str, best_path: Path, problems: list[str]) -> pd.DataFrame:
    """The rows of one test slice, one per cell (dataset, model, feature set, seed, metric, k)."""
    best = rows[rows["split"] == split].copy()
    best["k"] = best["k"].astype(int)
    best["seed"] = best["seed"].astype(int)
    cell = ["dataset", "model", "feature_set", "seed", "metric", "k"]
    dup = best.duplicated(cell, keep=False)
    if dup.any():
        # One test value per cell is the contract; keep the latest epoch and say so.
        problems.append(f"{best_path}: {int(dup.sum())} {split} rows share a (dataset, model, feature_set, seed, "
                        "metric, k) cell; the latest epoch is used")
        best = best.sort_values("epoch").drop_duplicates(cell, keep="last") if "epoch" in best else best.drop_duplicates(cell, keep="last")
    return best


def _slice_per_user(run_dir: Path, best: pd.DataFrame, split: str, problems: list[str]) -> pd.DataFrame:
    """The per-user values of every cell of ``best`` on one slice (missing files counted)."""
    frames = []
    combos = best[["dataset", "model", "feature_set", "seed"]].drop_duplicates()
    where = "" if split == "test" else f" on the {split} slice"
    for row in combos.itertuples(index=False):
        path = results.per_user_path(run_dir, row.model, row.feature_set, row.seed, split)
        df = results.read_per_user(run_dir, row.model, row.feature_set, row.seed, AnalysisInputError, split=split)
        if df is None:
            problems.append(f"{path}: per-user results missing; no significance test for this cell{where}")
            continue
        nan = df["value"].isna()
        if nan.any():
            problems.append(f"{path}: {int(nan.sum())} per-user values missing (not used)")
            df = df[~nan]
        dup = df.duplicated(["user", "metric", "k"])
        if dup.any():
            raise AnalysisInputError(f"{path}: {int(dup.sum())} duplicated (user, metric, k) rows")
        frames.append(
            df.assign(dataset=row.dataset, model=row.model, feature_set=row.feature_set, seed=int(row.seed))[
                PER_USER_FRAME
            ]
        )
    per_user = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PER_USER_FRAME)
    per_user["user"] = per_user["user"].astype(str)  # pair users by id whatever the dtype
    per_user["k"] = per_user["k"].astype(int)
    return per_user


def load_inputs(run_dir: Path) -> Inputs:
    run_dir = Path(run_dir)
    best_path = results.train_dir(run_dir) / results.BEST_FILE
    rows = results.read_table(run_dir, results.BEST_FILE, AnalysisInputError)
    problems: list[str] = []
    bad = rows["value"].isna()
    if bad.any():
        problems.append(f"{best_path}: {int(bad.sum())} rows with a missing value (not used)")
        rows = rows[~bad]
    best = _slice_rows(rows, "test", best_path, problems)
    if best.empty:
        raise AnalysisInputError(f"{best_path}: no rows with split == 'test'")
    per_user = _slice_per_user(run_dir, best, "test", problems)
    # The other test slices (cold items, whole catalogue): absent when stage 4 wrote none.
    slice_rows, slice_users = [best], [per_user.assign(split="test")]
    for split in results.TEST_SLICES:
        if split == "test" or not (rows["split"] == split).any():
            continue
        sb = _slice_rows(rows, split, best_path, problems)
        # A cell of a dataset that has this slice but lacks it itself (a dataset without it: absent).
        warm = best[best["dataset"].isin(set(sb["dataset"]))]
        missing = sorted(set(map(tuple, warm[["dataset", "model", "feature_set"]].drop_duplicates().to_numpy()))
                         - set(map(tuple, sb[["dataset", "model", "feature_set"]].drop_duplicates().to_numpy())))
        if missing:
            problems.append(f"{best_path}: no {split} rows for {len(missing)} cell(s) with warm test rows: "
                            + ", ".join(f"{m}[{fs}]" if fs else m for _, m, fs in missing[:10])
                            + (" ..." if len(missing) > 10 else ""))
        slice_rows.append(sb)
        slice_users.append(_slice_per_user(run_dir, sb, split, problems).assign(split=split))
    meta = load_feature_meta(run_dir, sorted(set(best["feature_set"])), problems)
    models = results.read_models(run_dir, sorted(set(best["model"])))
    return Inputs(run_dir, best, per_user, meta, models, problems,
                  slice_best=pd.concat(slice_rows, ignore_index=True),
                  slice_per_user=pd.concat(slice_users, ignore_index=True))


def load_truth(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "data" / "ground_truth" / "truth.json"
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except ValueError:
        return None


WEIGHT_KEYS = ("image_weight", "text_weight", "shared_weight", "collab_weight")


def planted_weights(truth: dict[str, Any] | None, fallback: dict[str, Any] | None = None) -> dict[str, float] | None:
    """The synthetic catalogue's modality weights, wherever truth.json keeps them."""

    def find(d: Any) -> dict[str, float] | None:
        if not isinstance(d, dict):
            return None
        if all(k in d for k in WEIGHT_KEYS[:3]):
            return {k: float(d.get(k, 0.0)) for k in WEIGHT_KEYS}
        short = {k.replace("_weight", ""): k for k in WEIGHT_KEYS}
        if all(s in d for s in ("image", "text", "shared")) and all(
            isinstance(d[s], (int, float)) for s in ("image", "text", "shared")
        ):
            return {full: float(d.get(s, 0.0)) for s, full in short.items()}
        for v in d.values():
            got = find(v)
            if got:
                return got
        return None

    return find(truth) or find(fallback)


def load_lvlm_tables(run_dir: Path, problems: list[str]) -> dict[str, pd.DataFrame]:
    """Every CSV under ``lvlm/`` (stage-3 quality tables), by file stem; unreadable ones counted."""
    out: dict[str, pd.DataFrame] = {}
    root = Path(run_dir) / "lvlm"
    if not root.is_dir():
        return out
    for path in sorted(root.rglob("*.csv")):
        # Answers, per-row parse reports and keyword vocabularies are not per-LVLM quality tables.
        if set(path.relative_to(root).parts[:-1]) & {"answers", "reports", "keywords", "cache"}:
            continue
        if path.stat().st_size > 20_000_000:
            continue
        try:
            out[str(path.relative_to(root).with_suffix(""))] = pd.read_csv(path)
        except Exception as exc:  # noqa: BLE001 - a table we cannot read is reported, not fatal
            problems.append(f"{path}: unreadable ({type(exc).__name__}: {exc})")
    return out

"""Checks of a profile beyond its types: what a run would otherwise trip on.

Three layers, each naming the file, the key path and what is allowed:

- :class:`UniqueKeyLoader` reads the YAML: a key given twice in one mapping is an error
  (naming line and key), and ``1e-3`` is a float (YAML 1.1 would read it as a string);
- :func:`value_problems`: one section at a time (models known to the registry, non-empty
  grids/seeds/cut-offs, positive numbers, an ``lvlm.source`` with something to do);
- :func:`reference_problems`: the profile as a whole (every feature set or control a
  section names is one the profile produces).

:func:`check_rating_threshold` checks ``train.rating_threshold`` once the ratings are known.
These functions do not import the training code, so they survive its reorganisation.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Iterable

import yaml

if TYPE_CHECKING:  # pragma: no cover
    from mmrepr.config import Params


# ---- YAML ------------------------------------------------------------------------------
class DuplicateKeyError(yaml.YAMLError):
    pass


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # unhashable key: let SafeLoader report it
                continue
            if first is not None:
                raise DuplicateKeyError(
                    f"{key_node.start_mark.name}: line {line}: key {key!r} given twice "
                    f"(first on line {first}); each key may appear once per mapping"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 floats: "1e-3" and "5E4" are numbers, not strings (PyYAML follows YAML 1.1).
UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(text: str, name: str) -> Any:
    """Parse ``text`` (from file ``name``) with :class:`UniqueKeyLoader`."""
    loader = UniqueKeyLoader(text)
    loader.name = name
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


# ---- one section at a time -------------------------------------------------------------
def _model_problems(key: str, names: list[str], family: str) -> list[tuple[str, str]]:
    """Names of ``train.multimodal_models`` / ``train.baselines`` against the model registry."""
    from mmrepr.models import registry

    allowed = registry.names(family=family)
    other = "baseline" if family == "multimodal" else "multimodal"
    others = registry.names(family=other)
    kind = "multimodal model" if family == "multimodal" else "baseline"
    out = []
    for i, n in enumerate(names):
        if n in allowed:
            continue
        if n in others:
            hint = f" (a {other} model: list it under train.{'baselines' if other == 'baseline' else 'multimodal_models'})"
        elif registry.known(n):
            hint = f" (known but not available: {registry.unavailable_reason(n)})"
        else:
            hint = ""
        out.append((f"{key}.{i}", f"unknown {kind} {n!r}{hint}; allowed (mmrepr.models.registry): "
                                  f"{', '.join(allowed)}"))
    return out


def _positive(values: Iterable[Any], key: str, what: str, strict: bool = True) -> list[tuple[str, str]]:
    out = []
    for i, v in enumerate(values):
        if (v <= 0) if strict else (v < 0):
            out.append((f"{key}.{i}", f"{what} (got {v!r})"))
    return out


def _nonempty(values: list, key: str, what: str) -> list[tuple[str, str]]:
    return [] if values else [(key, f"must list at least one {what} (got [])")]


def _duplicates(values: list, key: str) -> list[tuple[str, str]]:
    seen, out = set(), []
    for i, v in enumerate(values):
        if v in seen:
            out.append((f"{key}.{i}", f"{v!r} is listed twice"))
        seen.add(v)
    return out


METRIC_RE = re.compile(r"^(Recall|nDCG|HR|nDCG_graded)@([1-9][0-9]*)$")


def value_problems(P: "Params") -> list[tuple[str, str]]:
    """``(key path, message)`` for every value the schema's types allow but a run cannot use."""
    probs: list[tuple[str, str]] = []
    T = P.train
    # Models against the registry (an unknown name would be skipped as "not available").
    probs += _model_problems("train.multimodal_models", list(T.multimodal_models or []), "multimodal")
    probs += _model_problems("train.baselines", list(T.baselines or []), "baseline")
    probs += _duplicates(list(T.multimodal_models or []), "train.multimodal_models")
    probs += _duplicates(list(T.baselines or []), "train.baselines")
    g = T.grid
    probs += _nonempty(g.lr, "train.grid.lr", "learning rate")
    probs += _positive(g.lr, "train.grid.lr", "a learning rate must be > 0")
    probs += _nonempty(g.factors, "train.grid.factors", "embedding size")
    probs += _positive(g.factors, "train.grid.factors", "an embedding size must be >= 1")
    probs += _nonempty(g.reg, "train.grid.reg", "regularisation weight")
    probs += _positive(g.reg, "train.grid.reg", "a regularisation weight must be >= 0", strict=False)
    probs += _nonempty(T.seeds, "train.seeds", "seed")
    probs += _positive(T.seeds, "train.seeds", "a seed must be >= 0", strict=False)
    probs += _duplicates(T.seeds, "train.seeds")
    probs += _nonempty(T.cutoffs, "train.cutoffs", "cut-off")
    probs += _positive(T.cutoffs, "train.cutoffs", "a cut-off must be >= 1")
    probs += _duplicates(T.cutoffs, "train.cutoffs")
    if T.rating_threshold <= 0:
        probs.append(("train.rating_threshold", f"must be > 0 (got {T.rating_threshold!r})"))
    cut = set(T.cutoffs)
    m = METRIC_RE.match(T.selection_metric)
    if m and cut and int(m.group(2)) not in cut:
        probs.append(("train.selection_metric", f"{T.selection_metric!r} needs cut-off {m.group(2)} in "
                                                f"train.cutoffs (got {sorted(cut)})"))
    for i, name in enumerate(P.analysis.metrics):
        m = METRIC_RE.match(name)
        if not m:
            probs.append((f"analysis.metrics.{i}", f"{name!r} is not a metric; allowed: Recall@K, nDCG@K, HR@K, "
                                                   f"nDCG_graded@K with K in train.cutoffs"))
        elif cut and int(m.group(2)) not in cut:
            probs.append((f"analysis.metrics.{i}", f"{name!r} needs cut-off {m.group(2)} in train.cutoffs "
                                                   f"(got {sorted(cut)})"))
    probs += _nonempty(P.analysis.metrics, "analysis.metrics", "metric")
    probs += _duplicates(list(T.feature_sets), "train.feature_sets")
    probs += _duplicates(list(T.attribute_feature_sets), "train.attribute_feature_sets")

    # Feature sets of stage 2 against its registry.
    from mmrepr.features.registry import FEATURE_SETS

    for i, s in enumerate(P.features.sets):
        if s not in FEATURE_SETS:
            probs.append((f"features.sets.{i}", f"unknown feature set {s!r}; allowed: {', '.join(FEATURE_SETS)}"))
    probs += _duplicates(list(P.features.sets), "features.sets")

    # An LVLM source with something to do.
    L = P.lvlm
    if L.source == "model" and not L.models:
        probs.append(("lvlm.models", "lvlm.source is 'model' but no model is listed; add models or set "
                                     "lvlm.source to 'none' or 'recorded'"))
    if L.source == "recorded" and not L.recorded:
        probs.append(("lvlm.recorded", "lvlm.source is 'recorded' but no answers file is listed; add files or "
                                       "set lvlm.source to 'none' or 'model'"))
    if L.source == "none":
        for key, val in (("lvlm.models", L.models), ("lvlm.recorded", L.recorded), ("lvlm.controls", L.controls)):
            if val:
                probs.append((key, f"is set but lvlm.source is 'none', so nothing would use it; set lvlm.source "
                                   f"to 'model' or 'recorded', or remove {key}"))
    fitb = (L.source == "model" and L.models) or (L.source == "recorded" and any(
        r.prompt_style == "fitb" for r in L.recorded))
    if fitb and not (L.prompt or "").strip():
        probs.append(("lvlm.prompt", "FITB answers need the dataset's prompt (its [Label]s name the slots); "
                                     "got none"))
    names = [m.name for m in L.models] if L.source == "model" else [r.name for r in L.recorded]
    probs += _duplicates(names, "lvlm.models" if L.source == "model" else "lvlm.recorded")
    return probs


# ---- the profile as a whole ------------------------------------------------------------
def produced_sets(P: "Params") -> dict[str, tuple[str, str]]:
    """Feature sets the profile's stages 2 and 3 write: name -> (kind, key that makes it).

    kind: "dense" (visual/textual roles, for multimodal models) or "attributes" (one-hot).
    """
    from mmrepr.features.controls import control_name

    out: dict[str, tuple[str, str]] = {}
    for i, s in enumerate(P.features.sets):
        out[s] = ("dense", f"features.sets.{i}")
    for i, c in enumerate(P.features.controls):
        out.setdefault(control_name(c), ("dense", f"features.controls.{i}"))
    L = P.lvlm
    if L.source == "model":
        for i, m in enumerate(L.models):
            key = f"lvlm.models.{i}"
            out[m.name] = ("dense", key)
            out[f"{m.name}__onehot"] = ("attributes", key)
            out[f"{m.name}__sbert"] = ("dense", key)
    elif L.source == "recorded":
        for i, r in enumerate(L.recorded):
            key = f"lvlm.recorded.{i}"
            if r.prompt_style == "fitb":
                out[f"{r.name}__onehot"] = ("attributes", key)
            out[f"{r.name}__sbert"] = ("dense", key)
    if L.source != "none":
        for i, c in enumerate(L.controls):
            out.setdefault(control_name(c), ("dense", f"lvlm.controls.{i}"))
    return out


def _short_list(names: Iterable[str], limit: int = 30) -> str:
    names = list(names)
    if not names:
        return "(none: this profile makes no such feature set)"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def reference_problems(P: "Params") -> list[tuple[str, str]]:
    """Every feature set and control reference names a set this profile produces."""
    from mmrepr.features.controls import control_name

    probs: list[tuple[str, str]] = []
    stage2 = list(P.features.sets)
    for i, c in enumerate(P.features.controls):
        if c.reference not in stage2:
            probs.append((f"features.controls.{i}.reference",
                          f"{c.reference!r} is not made by stage 2 before this control; allowed: "
                          f"{_short_list(stage2)}"))
        stage2.append(control_name(c))
    made = produced_sets(P)
    lvlm_made = [n for n, (_, key) in made.items() if key.startswith(("lvlm.models", "lvlm.recorded"))]
    if P.lvlm.source != "none":
        for i, c in enumerate(P.lvlm.controls):
            if c.reference not in lvlm_made:
                probs.append((f"lvlm.controls.{i}.reference",
                              f"{c.reference!r} is not made by stage 3; allowed: {_short_list(lvlm_made)}"))
            lvlm_made.append(control_name(c))
    dense = sorted(n for n, (k, _) in made.items() if k == "dense")
    attrs = sorted(n for n, (k, _) in made.items() if k == "attributes")
    for i, s in enumerate(P.train.feature_sets):
        if s not in dense:
            why = " (a one-hot set: list it under train.attribute_feature_sets)" if s in attrs else ""
            probs.append((f"train.feature_sets.{i}",
                          f"{s!r} is not a feature set this profile makes{why}; allowed: {_short_list(dense)}"))
    for i, s in enumerate(P.train.attribute_feature_sets):
        if s not in attrs:
            why = " (a dense set: list it under train.feature_sets)" if s in dense else ""
            probs.append((f"train.attribute_feature_sets.{i}",
                          f"{s!r} is not a one-hot attribute set this profile makes{why}; allowed: "
                          f"{_short_list(attrs)}"))
    return probs


def format_problems(source: str, problems: list[tuple[str, str]]) -> str:
    lines = [f"{source}: {len(problems)} problem(s) in the params"]
    lines += [f"  - key '{key}': {msg}" for key, msg in problems]
    return "\n".join(lines)


# ---- once the data is known ------------------------------------------------------------
from mmrepr.data.checks import RatingThresholdError, check_rating_threshold  # noqa: E402,F401  (re-export)

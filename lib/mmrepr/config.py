"""Run profiles: one YAML file per run, validated by a pydantic schema.

``load_params("params/demo.yaml")`` returns a frozen :class:`Params`. Anything wrong in
the file (an unknown key, a wrong type, a missing file) raises :class:`ParamsError`
naming the file, the key and what is allowed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmrepr.analysis.params import AnalysisParams
from mmrepr.data.params import DataParams
from mmrepr.features.params import FeaturesParams
from mmrepr.io import sha256_json
from mmrepr.lvlm.params import LvlmParams
from mmrepr.training.params import TrainParams
from mmrepr.paths import project_root, shared_data_dir
from mmrepr.validation import DuplicateKeyError, format_problems, load_yaml, reference_problems, value_problems


class ParamsError(ValueError):
    """A params file that does not fit the schema."""


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = Field(123, ge=0)
    # Where runs/<profile>/ goes (relative to the project root).
    runs_dir: Path = Path("runs")
    data: DataParams
    features: FeaturesParams = FeaturesParams()
    lvlm: LvlmParams = LvlmParams()
    train: TrainParams = TrainParams()
    analysis: AnalysisParams = AnalysisParams()

    @model_validator(mode="after")
    def _check_consistency(self) -> "Params":
        if self.data.source == "synthetic" and self.data.synthetic is None:
            raise ValueError("data.synthetic is required when data.source is 'synthetic'")
        if self.data.source == "amazon2023" and not self.data.category:
            raise ValueError("data.category is required when data.source is 'amazon2023'")
        if self.data.source == "allrecipes" and self.data.k_core > 0:
            raise ValueError("data.k_core must be 0 for allrecipes: the authors' split is used as released")
        return self

    # ---- derived locations -------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return resolve(self.runs_dir) / self.profile

    @property
    def mirror_dir(self) -> Path | None:
        """The offline mirror of released files: data.mirror_dir, else ../shared/data if present."""
        if self.data.mirror_dir is not None:
            return resolve(self.data.mirror_dir)
        shared = shared_data_dir()
        return shared if shared.is_dir() else None

    @property
    def cache_dir(self) -> Path:
        return resolve(self.data.cache_dir)

    def section_hash(self, *sections: str) -> str:
        dumped = self.model_dump(mode="json")
        return sha256_json({s: dumped[s] for s in sections})

    @property
    def hash(self) -> str:
        return sha256_json(self.model_dump(mode="json"))


def resolve(path: str | os.PathLike) -> Path:
    """Resolve a params path: absolute as is, else relative to the project root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (project_root() / p).resolve()


def _format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(x) for x in loc) or "<top level>"


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Walk ``loc`` (minus the last part) through the schema and list the fields there."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _unwrap_model(field.annotation)
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}))


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: {err.error_count()} problem(s) in the params"]
    for e in err.errors():
        loc = tuple(e["loc"])
        key = _format_loc(loc)
        if e["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(Params, loc)) or "(none)"
            lines.append(f"  - unknown key '{key}'; allowed here: {allowed}")
        elif e["type"] == "missing":
            lines.append(f"  - missing required key '{key}'")
        else:
            got = e.get("input")
            got_s = repr(got)
            if len(got_s) > 80:
                got_s = got_s[:77] + "..."
            lines.append(f"  - key '{key}': {e['msg']} (got {got_s})")
    return "\n".join(lines)


def check_files(params: Params, source: str) -> None:
    """Files the params name must exist (offline mirror, recorded answers)."""
    problems = []
    if params.data.mirror_dir is not None and not resolve(params.data.mirror_dir).is_dir():
        problems.append(f"key 'data.mirror_dir': folder not found: {resolve(params.data.mirror_dir)}")
    for i, rec in enumerate(params.lvlm.recorded):
        base = params.mirror_dir
        path = rec.path if rec.path.is_absolute() or base is None else base / rec.path
        if base is not None and not Path(path).is_file():
            problems.append(f"key 'lvlm.recorded.{i}.path': file not found: {path}")
    if problems:
        raise ParamsError(f"{source}:\n  - " + "\n  - ".join(problems))


def load_params(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Params:
    """Read, validate and check a profile. ``overrides`` are merged over the file's keys."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ParamsError(f"{source}: params file not found")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"), source) or {}
    except DuplicateKeyError as exc:
        raise ParamsError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{source}: not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{source}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: the top level must be a mapping of keys, got {type(raw).__name__}")
    if overrides:
        raw = _deep_merge(raw, overrides)
    params = params_from_dict(raw, source)
    check_files(params, source)
    problems = reference_problems(params)
    if problems:
        raise ParamsError(format_problems(source, problems))
    return params


def params_from_dict(raw: dict[str, Any], source: str = "<params>") -> Params:
    """Validate ``raw`` strictly (``epochs: true`` or ``lr: "0.1"`` are refused, not coerced)."""
    # JSON-mode strict validation: no bool -> int, no str -> number, but str -> Path is fine.
    blob = json.dumps(raw, default=str)
    try:
        params = Params.model_validate_json(blob, strict=True)
    except ValidationError as err:
        raise ParamsError(format_validation_error(err, source)) from None
    problems = value_problems(params)
    if problems:
        raise ParamsError(format_problems(source, problems))
    return params


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out

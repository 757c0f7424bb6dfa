"""`mmrepr check` refuses what a run would trip on, naming the file, the key and what is allowed."""

from pathlib import Path

import numpy as np
import pytest

from mmrepr.cli import main
from mmrepr.config import ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]
SMOKE = (ROOT / "params" / "smoke.yaml").read_text()
DEMO = (ROOT / "params" / "demo.yaml").read_text()


def write(tmp_path, text, name="p.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def edit(text, old, new):
    assert old in text, old
    return text.replace(old, new, 1)


# (profile text, key path named, words of the "allowed" part)
BAD = {
    "unknown multimodal model": (edit(DEMO, "[VBPR, LATTICE", "[VPBR, LATTICE"),
                                 "train.multimodal_models.0", ["'VPBR'", "allowed", "VBPR"]),
    "unknown baseline": (edit(DEMO, "ItemKNN, ElliotItemKNN", "ItemKNNN, ElliotItemKNN"),
                         "train.baselines.2", ["'ItemKNNN'", "allowed", "ItemKNN"]),
    "baseline as model": (edit(SMOKE, "multimodal_models: [VBPR]", "multimodal_models: [VBPR, BPR]"),
                          "train.multimodal_models.1", ["train.baselines"]),
    "empty lr grid": (edit(SMOKE, "lr: [0.01]", "lr: []"), "train.grid.lr", ["at least one"]),
    "negative lr": (edit(SMOKE, "lr: [0.01]", "lr: [-0.5]"), "train.grid.lr.0", ["> 0", "-0.5"]),
    "zero factors": (edit(SMOKE, "factors: [16]", "factors: [0]"), "train.grid.factors.0", [">= 1"]),
    "empty seeds": (SMOKE.replace("  epochs: 4", "  seeds: []\n  epochs: 4"), "train.seeds", ["at least one"]),
    "zero cutoff": (SMOKE.replace("  epochs: 4", "  cutoffs: [0]\n  epochs: 4"), "train.cutoffs.0", [">= 1"]),
    "boolean epochs": (edit(SMOKE, "epochs: 4", "epochs: true"), "train.epochs", ["integer"]),
    "boolean lr": (edit(SMOKE, "lr: [0.01]", "lr: [true]"), "train.grid.lr.0", ["number"]),
    "string number": (edit(SMOKE, "epochs: 4", "epochs: '4'"), "train.epochs", ["integer"]),
    "negative seed": (edit(SMOKE, "seed: 7", "seed: -1"), "seed", ["greater than or equal to 0"]),
    "negative rating threshold": (SMOKE.replace("  epochs: 4", "  rating_threshold: -1\n  epochs: 4"),
                                  "train.rating_threshold", ["> 0"]),
    "lvlm model without models": (edit(SMOKE, "source: none", "source: model"), "lvlm.models",
                                  ["no model is listed", "'none'"]),
    "lvlm recorded without files": (edit(SMOKE, "source: none", "source: recorded"), "lvlm.recorded",
                                    ["no answers file"]),
    "lvlm controls with source none": (edit(SMOKE, "source: none", "source: none\n  controls: [{kind: shuffled, "
                                                                   "reference: x}]"),
                                       "lvlm.controls", ["nothing would use it"]),
    "unknown feature set to train": (edit(SMOKE, "feature_sets: [colour]", "feature_sets: [colour, r50]"),
                                     "train.feature_sets.1", ["'r50'", "allowed", "colour", "minilm",
                                                              "noise_gaussian_colour"]),
    "onehot set as dense": (edit(DEMO, "feature_sets: [colour_minilm,", "feature_sets: [qwen2vl_tiny__onehot, "
                                                                         "colour_minilm,"),
                            "train.feature_sets.0", ["train.attribute_feature_sets"]),
    "unknown attribute set": (edit(DEMO, "[qwen2vl_tiny__onehot]", "[qwen2vl__onehot]"),
                              "train.attribute_feature_sets.0", ["allowed", "qwen2vl_tiny__onehot"]),
    "control of an unmade set": (edit(SMOKE, "reference: colour}", "reference: r50}"),
                                 "features.controls.0.reference", ["'r50'", "allowed", "colour"]),
    "unknown stage-2 set": (edit(SMOKE, "sets: [colour, minilm]", "sets: [colour, minilm, resnet]"),
                            "features.sets.2", ["'resnet'", "allowed", "r50"]),
    "selection metric cut-off": (SMOKE.replace("  epochs: 4", "  cutoffs: [10]\n  epochs: 4"),
                                 "train.selection_metric", ["cut-off 20", "train.cutoffs"]),
    "unknown analysis metric": (SMOKE.replace("  bootstrap: 100", "  bootstrap: 100\n  metrics: [MAP@20]"),
                                "analysis.metrics.0", ["Recall@K"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_check_refuses_bad_params(tmp_path, capsys, case):
    text, key, words = BAD[case]
    p = write(tmp_path, text)
    with pytest.raises(ParamsError) as e:
        load_params(p)
    msg = str(e.value)
    assert str(p) in msg, msg
    assert f"'{key}'" in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    # the command line refuses it too, with the same message and exit code 2
    assert main(["check", str(p)]) == 2
    err = capsys.readouterr().err
    assert key in err and str(p) in err


def test_duplicate_yaml_key_names_file_line_and_key(tmp_path):
    p = write(tmp_path, SMOKE.replace("  epochs: 4\n", "  epochs: 4\n  epochs: 9\n"))
    line = p.read_text().splitlines().index("  epochs: 9") + 1
    with pytest.raises(ParamsError) as e:
        load_params(p)
    msg = str(e.value)
    assert str(p) in msg and f"line {line}" in msg and "'epochs' given twice" in msg, msg


def test_scientific_notation_is_a_number(tmp_path):
    P = load_params(write(tmp_path, edit(SMOKE, "lr: [0.01]", "lr: [1e-3, 5E-2]")))
    assert P.train.grid.lr == [0.001, 0.05]


def test_every_profile_still_passes():
    for p in sorted((ROOT / "params").glob("*.yaml")):
        assert main(["check", str(p)]) == 0, p


def test_rating_threshold_against_the_data(tmp_path, capsys):
    from mmrepr.data.checks import RatingThresholdError, check_rating_threshold
    from mmrepr.io import write_parquet
    import pandas as pd

    check_rating_threshold(4.0, np.array([1, 3, 5.0]), "x.parquet")
    with pytest.raises(RatingThresholdError) as e:
        check_rating_threshold(10, np.array([1, 3, 5.0]), "runs/x/data/interactions.parquet")
    msg = str(e.value)
    assert "train.rating_threshold" in msg and "runs/x/data/interactions.parquet" in msg and "1 to 5" in msg
    assert "(0, 5]" in msg
    # `check` applies it once stage 1's output is there
    p = write(tmp_path, SMOKE.replace("  epochs: 4", "  rating_threshold: 10\n  epochs: 4")
              + f"runs_dir: {tmp_path / 'runs'}\n")
    assert main(["check", str(p)]) == 0  # no data yet: nothing to check against
    data = tmp_path / "runs" / "smoke" / "data"
    write_parquet(pd.DataFrame({"user": ["a", "b"], "item": ["i", "j"], "rating": [1.0, 5.0]}),
                  data / "interactions.parquet")
    assert main(["check", str(p)]) == 2
    err = capsys.readouterr().err
    assert "train.rating_threshold" in err and str(data / "interactions.parquet") in err

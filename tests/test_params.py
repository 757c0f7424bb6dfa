from pathlib import Path

import pytest

from mmrepr.config import ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "params").glob("*.yaml"))


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_every_profile_validates(path):
    P = load_params(path)
    assert P.profile == path.stem
    assert P.run_dir.name == path.stem


def test_paper_profiles_match_study():
    expected = {"baby": ("Baby_Products", 5, 1024), "pets": ("Pet_Supplies", 5, 8192),
                "clothing": ("Clothing_Shoes_and_Jewelry", 10, 8192)}
    for name, (cat, k, batch) in expected.items():
        P = load_params(ROOT / "params" / f"{name}.yaml")
        assert (P.data.category, P.data.k_core, P.train.batch_size) == (cat, k, batch)
        assert P.seed == 123 and P.train.epochs == 200 and P.train.eval_every == 10
        assert P.train.baseline_trials == 30
        g = P.train.grid
        assert (g.lr, g.factors, g.reg) == ([0.0001, 0.0005, 0.001, 0.005, 0.01], [64, 128, 256], [0.01, 0.1])
        assert P.train.max_grid_points is None


def write(tmp_path, text):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return p


def test_unknown_key_names_key_file_and_allowed(tmp_path):
    p = write(tmp_path, "profile: x\ndata:\n  source: synthetic\n  synthetic: {}\n  kcore: 5\n")
    with pytest.raises(ParamsError) as e:
        load_params(p)
    msg = str(e.value)
    assert str(p) in msg and "data.kcore" in msg and "k_core" in msg  # names the allowed key


def test_wrong_type_names_key(tmp_path):
    p = write(tmp_path, "profile: x\ndata:\n  source: synthetic\n  synthetic: {n_users: many}\n")
    with pytest.raises(ParamsError, match=r"data\.synthetic\.n_users.*'many'"):
        load_params(p)


def test_bad_choice_lists_allowed(tmp_path):
    p = write(tmp_path, "profile: x\ndata:\n  source: movielens\n")
    with pytest.raises(ParamsError, match=r"data\.source.*'synthetic'"):
        load_params(p)


def test_missing_required_key(tmp_path):
    with pytest.raises(ParamsError, match=r"missing required key 'data'"):
        load_params(write(tmp_path, "profile: x\n"))


def test_missing_files(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    p = write(tmp_path, f"profile: x\ndata:\n  source: allrecipes\n  k_core: 0\n  mirror_dir: {tmp_path / 'absent'}\n")
    with pytest.raises(ParamsError, match=r"data\.mirror_dir.*not found"):
        load_params(p)
    p = write(tmp_path, "profile: x\ndata:\n  source: allrecipes\n  k_core: 0\n"
                        "lvlm:\n  source: recorded\n  prompt: '[A] {x}'\n"
                        "  recorded: [{name: a, path: allrecipes/lvlm/absent.csv}]\n")
    if (ROOT.parent / "shared" / "data").is_dir():
        with pytest.raises(ParamsError, match=r"lvlm\.recorded\.0\.path.*absent\.csv"):
            load_params(p)


def test_not_yaml_and_not_mapping(tmp_path):
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(write(tmp_path, "profile: [unclosed\n"))
    with pytest.raises(ParamsError, match="mapping"):
        load_params(write(tmp_path, "- a\n- b\n"))


def test_cross_field_rules(tmp_path):
    with pytest.raises(ParamsError, match="data.category is required"):
        load_params(write(tmp_path, "profile: x\ndata: {source: amazon2023}\n"))
    with pytest.raises(ParamsError, match="k_core must be 0 for allrecipes"):
        load_params(write(tmp_path, "profile: x\ndata: {source: allrecipes, k_core: 5}\n"))

"""bench pruning on a toy run: both schedules through stage 4's cells, no cell trained twice."""

from __future__ import annotations

import torch
from mmrepr.bench import pruning
from mmrepr.config import params_from_dict
from mmrepr.training.toy import make_toy_run

torch.set_num_threads(1)


def test_pruned_and_exhaustive_share_final_cells_and_report_costs(tmp_path, capsys, spy_trained):
    prof = dict(profile="toy", runs_dir=str(tmp_path), seed=5,
                data=dict(source="synthetic", k_core=0, synthetic=dict(n_users=10, n_items=10,
                                                                       interactions_per_user=3, image_size=8)),
                train=dict(multimodal_models=["VBPR"], baselines=["MostPop"], feature_sets=["real"],
                           grid=dict(lr=[0.001, 0.01, 0.05, 0.1], factors=[8], reg=[0.01]), epochs=8, eval_every=1,
                           early_stop_patience=3, batch_size=128, seeds=[7, 8],
                           pruning=dict(kind="successive_halving", eta=2, min_epochs=2)))
    P = params_from_dict(prof)
    make_toy_run(P.run_dir)
    trained = spy_trained()
    out = pruning.compare(P, ["VBPR"], "real", dict(lr=[0.001, 0.01, 0.05]))
    pruning.print_table(out, ["VBPR"])
    sh, ex = out["successive_halving"]["models"]["VBPR"], out["exhaustive"]["models"]["VBPR"]
    # the subset grid (3 points), first seed only; rung of 2 epochs keeps max(1, 3 // 2) = 1,
    # which goes straight to the final rung (8 epochs)
    assert out["grid"]["lr"] == [0.001, 0.01, 0.05] and out["seed"] == 7
    assert sh["n_cells"] == 3 + 1 and sh["n_final"] == 1
    assert ex["n_cells"] == ex["n_final"] == 3
    # the exhaustive pass trains only what the pruned one did not: its final cell is reused
    assert ex["trained_in_this_pass"] == 2 and len(trained) == len(set(trained)) == 4 + 2
    assert all("seed7" in k for k in trained)
    assert sh["selected"] in ex["final_cells"]
    assert ex["val_recall20"] >= sh["val_recall20"]  # the exhaustive choice is the best final cell
    assert ex["val_recall20"] == max(v["val"] for v in ex["final_cells"].values())
    assert sh["epochs_trained"] <= 3 * 2 + 8 and ex["epochs_trained"] <= 3 * 8
    assert sh["train_seconds"] > 0 and sh["cells_without_timing"] == 0
    printed = capsys.readouterr().out
    assert "| VBPR | successive_halving |" in printed and "| VBPR | exhaustive |" in printed

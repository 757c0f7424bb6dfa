"""What every notebook calls first."""

from __future__ import annotations

import logging
import warnings
from typing import Any

from mmrepr.config import Params, load_params, params_from_dict
from mmrepr.seeding import seed_everything

# Libraries import ``tqdm.auto`` (Cornac's eval methods, optuna), which warns in a kernel
# without ipywidgets; our own bars go to the terminal (mmrepr.progress), never the notebook.
warnings.filterwarnings("ignore", message="IProgress not found")


def setup(params_file: str | None = None, params: dict[str, Any] | None = None) -> Params:
    """Validated params (from papermill's ``params`` dict, else the YAML file), seeds set."""
    if params is not None:
        P = params_from_dict(params, source=str(params_file or "<papermill params>"))
    elif params_file is not None:
        P = load_params(params_file)
    else:
        raise ValueError("give params_file (a YAML profile) or params (a dict)")
    seed_everything(P.seed)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    P.run_dir.mkdir(parents=True, exist_ok=True)
    return P

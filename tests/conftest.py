import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT.parent / "shared" / "data").resolve()

# Never reach the hub from tests: everything runs on what is on this machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tiny_split(n_users: int, n_items: int, n_train: int, seed: int = 0):
    """A hand-sized split: each user ``n_train`` training items, one validation and one test
    item, all distinct and drawn from ``n_items``."""
    import numpy as np

    from mmrepr.training.data import SplitTriples

    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for u in range(n_users):
        items = rng.choice(n_items, size=n_train + 2, replace=False)
        train += [(f"u{u}", f"i{i}", 1.0) for i in items[:n_train]]
        val.append((f"u{u}", f"i{items[n_train]}", 1.0))
        test.append((f"u{u}", f"i{items[n_train + 1]}", 1.0))
    return SplitTriples(train, val, test)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the real-data mirror {SHARED_DATA} is not present")
    return SHARED_DATA


@pytest.fixture
def spy_trained(monkeypatch):
    """``trained = spy_trained()`` starts recording the keys of the stage-4 cells trained from
    then on (cells answered from the cell cache are not recorded)."""

    def start() -> list[str]:
        from mmrepr.training import cells

        trained: list[str] = []
        real = cells.run_cell

        def spy(ctx, cell):
            if cells.load_cell(ctx, cell) is None:
                trained.append(cell.key)
            return real(ctx, cell)

        monkeypatch.setattr(cells, "run_cell", spy)
        return trained

    return start

"""Progress bars for the terminal only.

``tqdm`` writing to the process's real stderr (``sys.__stderr__``), never to a notebook's
captured output: papermill runs the notebooks in kernels whose stderr ends up in the
executed ``.ipynb`` under ``runs/``, and a bar redrawn there is noise. The text bar (not
``tqdm.auto``'s widget) redraws at most every 2 s, one line per loop.
"""

from __future__ import annotations

import sys

from tqdm.std import tqdm as _tqdm


def tqdm(iterable=None, *args, **kwargs):
    kwargs.setdefault("file", sys.__stderr__)
    kwargs.setdefault("mininterval", 2.0)
    kwargs.setdefault("dynamic_ncols", True)
    return _tqdm(iterable, *args, **kwargs)

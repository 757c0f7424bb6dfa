"""Progress bars for the terminal only.

In a notebook kernel (papermill runs every stage in one) the process's stderr is captured
into the executed ``.ipynb`` under ``runs/``, fd 2 included (ipykernel's ``watchfd``), and a
bar redrawn there is noise. ipykernel keeps a copy of the original stderr descriptor
(``sys.stderr._original_stdstream_copy``): bars are written there, i.e. to the terminal that
runs ``make reproduce``, and never into the notebook. In a kernel without that copy the bar
is disabled; outside a kernel it goes to stderr. A text bar (not ``tqdm.auto``'s widget),
redrawn at most every 2 s: one line per loop.
"""

from __future__ import annotations

import os
import sys

from tqdm.std import tqdm as _tqdm

_TERMINAL: dict[str, object] = {}


def terminal():
    """The stream for progress bars, or None where there is none to write to."""
    err = sys.stderr
    if type(err).__module__.startswith("ipykernel"):
        fd = getattr(err, "_original_stdstream_copy", None)
        if fd is None:
            return None
        if fd not in _TERMINAL:
            _TERMINAL[fd] = os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")
        return _TERMINAL[fd]
    return sys.__stderr__ or err


def tqdm(iterable=None, *args, **kwargs):
    out = terminal()
    if out is None:
        kwargs["disable"] = True
    kwargs.setdefault("file", out)
    kwargs.setdefault("mininterval", 2.0)
    kwargs.setdefault("dynamic_ncols", True)
    return _tqdm(iterable, *args, **kwargs)

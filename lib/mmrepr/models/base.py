"""What every mmrepr recommender shares: the Cornac contract, modality access, BPR sampling,
the epoch loop with ``epoch_callback``, and state snapshots.

Index space: Cornac's ``BaseMethod`` builds the training ``Dataset`` first, so train items
get the global indices ``0 .. n_warm-1``, and users likewise. Stage 4 gives our models a
training ``Dataset`` over the whole catalogue (``mmrepr.training.data.full_catalogue``): the
*cold* items (no training interaction, only in validation/test) are appended after the warm
ones. Every score array here covers exactly ``train_set.num_items`` items.

Cold items (docs/models.md, "Cold items"): the base class derives ``warm_items`` from the
training matrix (an item with at least one training interaction); nothing may be learned
from a cold item's own ID. :class:`BPRSampler` draws negatives from warm items only; an
:class:`EmbeddingRecommender` creates its item ID table with :meth:`~EmbeddingRecommender._id_table`
and reads it through :meth:`~EmbeddingRecommender._ids`, which zeroes the cold rows (so
they get no gradient and perturbing them changes nothing); a model that cannot rank cold
items (``scores_cold_items = False``) gives every cold item the user's lowest warm score
(:func:`cold_items_at_min`, Cornac's rule for items a model does not know).
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import torch
from cornac.exception import ScoreException
from cornac.models import Recommender
from mmrepr.progress import tqdm
from mmrepr.models.hugepages import move_large_parameters, move_optimizer_state_after_first_step, on_huge_pages

log = logging.getLogger(__name__)

# Cornac attribute names of the modalities and the role they play here.
VISUAL_ATTR = "item_image"
TEXTUAL_ATTR = "item_text"
ATTRIBUTES_ATTR = "item_feature"


class ModalityError(ValueError):
    pass


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def item_modality_matrix(train_set, attr: str, *, dense: bool = True):
    """Rows of ``train_set.<attr>.features`` aligned to ``train_set``'s item indices.

    Cornac 3.0.1 aligns a ``FeatureModality`` in ``BaseMethod._build_modalities``:
    ``FeatureModality._swap_feature`` moves the row of raw id ``ids[r]`` to row
    ``global_iid_map[ids[r]]`` *in place of* whatever was there, leaving ``ids`` updated.
    An item with no row keeps a stale row silently; so we check ``ids`` row by row and
    fall back to looking rows up by id (for modalities that were never built). Without
    ``ids`` the rows are taken to be in train-set index order already.

    Returns None when the modality (or its feature matrix) is absent.
    """
    modality = getattr(train_set, attr, None)
    if modality is None or getattr(modality, "features", None) is None:
        return None
    feats = modality.features
    n = train_set.num_items
    item_ids = list(train_set.iid_map.keys())  # ordered by index 0..n-1
    ids = modality.ids
    if ids is None:
        if feats.shape[0] < n:
            raise ModalityError(
                f"train_set.{attr}.features has {feats.shape[0]} rows but the training set has {n} items "
                "(and the modality has no ids to align them)"
            )
        rows = np.arange(n)
    else:
        ids = list(ids)
        if len(ids) >= n and all(ids[i] == iid for i, iid in enumerate(item_ids)):
            rows = np.arange(n)
        else:
            index: dict[Any, int] = {}
            dup = []
            for r, iid in enumerate(ids):
                if iid in index:
                    dup.append(iid)
                index.setdefault(iid, r)
            missing = [iid for iid in item_ids if iid not in index]
            if missing:
                raise ModalityError(
                    f"train_set.{attr}: {len(missing)} of {n} training items have no feature row "
                    f"(first: {missing[:3]})"
                )
            if dup:
                raise ModalityError(
                    f"train_set.{attr}: ids are not aligned with train_set.iid_map and contain duplicates "
                    f"(first: {dup[:3]}); was the modality built for items it has no rows for?"
                )
            rows = np.fromiter((index[iid] for iid in item_ids), dtype=np.int64, count=n)
    if sp.issparse(feats):
        out = sp.csr_matrix(feats)[rows].astype(np.float32)
        bad = ~np.isfinite(out.data)
        if bad.any():
            raise ModalityError(f"train_set.{attr}: {int(bad.sum())} non-finite feature values")
        return out.toarray() if dense else out
    out = np.asarray(feats, dtype=np.float32)[rows]
    if not np.isfinite(out).all():
        bad = np.where(~np.isfinite(out).all(axis=1))[0]
        raise ModalityError(
            f"train_set.{attr}: {len(bad)} item rows with NaN/inf (first item: {item_ids[bad[0]]!r})"
        )
    return out


def multimodal_features(train_set, model_name: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(visual, textual) for a multimodal model; at least one must be present."""
    v = item_modality_matrix(train_set, VISUAL_ATTR)
    t = item_modality_matrix(train_set, TEXTUAL_ATTR)
    if v is None and t is None:
        raise ModalityError(
            f"{model_name} needs item features: give the Cornac BaseMethod an item_image "
            "(ImageModality, visual) and/or item_text (TextModality, textual) with a features matrix; "
            "train_set has neither"
        )
    return v, t


def effective_top_k(top_k: int, n_items: int, name: str) -> int:
    """top_k capped at the number of items (the reference would fail in torch.topk)."""
    if top_k > n_items:
        warnings.warn(f"{name}: top_k={top_k} > {n_items} items; using {n_items}")
        return n_items
    return top_k


def warm_item_mask(csr: sp.spmatrix) -> np.ndarray:
    """Bool per item (column): True when it has at least one training interaction."""
    csc = sp.csc_matrix(csr)
    return np.diff(csc.indptr) > 0


def cold_items_at_min(scores: np.ndarray, warm: np.ndarray) -> np.ndarray:
    """``scores`` with every cold column set to the row's lowest warm score (in place when
    writable): a model that cannot rank cold items gives them one constant per user that
    never beats a warm item (Cornac's ``Recommender.rank`` rule for unknown items)."""
    cold = ~np.asarray(warm, dtype=bool)
    if not cold.any() or scores.shape[0] == 0:
        return scores
    if not scores.flags.writeable:
        scores = np.array(scores)
    floor = scores[:, warm].min(axis=1, keepdims=True) if warm.any() else np.zeros((scores.shape[0], 1), scores.dtype)
    scores[:, cold] = floor
    return scores


class BPRSampler:
    """Seeded epoch iterator over all training interactions, shuffled, with one uniform
    negative per positive drawn from the items the user has *not* interacted with (MMRec's
    and Cornac's ``uij_iter`` behaviour, vectorised).

    Negatives come from the *warm* items only (columns with a training interaction): a cold
    item is never a negative, so nothing is learned from its ID. Warm items are drawn as
    ``warm[rng.integers(0, n_warm)]``; when the catalogue has no cold item (or they are
    appended after the warm ones) these are exactly the draws of ``rng.integers(0, n_items)``.
    """

    def __init__(self, csr: sp.csr_matrix, seed: int):
        coo = csr.tocoo()
        self.users = coo.row.astype(np.int64)
        self.items = coo.col.astype(np.int64)
        self.n_items = csr.shape[1]
        self.warm = np.flatnonzero(warm_item_mask(csr)).astype(np.int64)
        self._keys = np.unique(self.users * self.n_items + self.items)
        # membership of (user, item) pairs as a bitmap when it is small (allrecipes: 7.6 MB),
        # one lookup per candidate instead of a binary search (2.5 -> ~0.3 ms per epoch)
        n_pairs = csr.shape[0] * self.n_items
        self._bits = None
        if n_pairs <= self.BITMAP_MAX_BITS:
            self._bits = np.zeros(-(-n_pairs // 8), dtype=np.uint8)
            np.bitwise_or.at(self._bits, self._keys >> 3, (1 << (self._keys & 7)).astype(np.uint8))
        full = np.flatnonzero(np.diff(csr.indptr) >= len(self.warm))
        if full.size:
            raise ValueError(f"users {full[:3].tolist()} interacted with every item: no negative to sample")
        self.rng = np.random.default_rng(seed)

    BITMAP_MAX_BITS = 1 << 29  # 64 MB

    def __len__(self) -> int:
        return len(self.users)

    def _interacted(self, keys: np.ndarray) -> np.ndarray:
        """Whether each ``user * n_items + item`` key is a training interaction."""
        if self._bits is not None:
            return ((self._bits[keys >> 3] >> (keys & 7).astype(np.uint8)) & 1).astype(bool)
        pos = np.searchsorted(self._keys, keys)
        return (pos < len(self._keys)) & (self._keys[np.minimum(pos, len(self._keys) - 1)] == keys)

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self.users) // batch_size)

    def _negatives(self, users: np.ndarray) -> np.ndarray:
        n_warm = len(self.warm)
        neg = self.warm[self.rng.integers(0, n_warm, size=len(users))]
        todo = np.arange(len(users))
        while todo.size:
            todo = todo[self._interacted(users[todo] * self.n_items + neg[todo])]
            neg[todo] = self.warm[self.rng.integers(0, n_warm, size=todo.size)]
        return neg

    def epoch_arrays(self, negatives: bool = True) -> tuple[np.ndarray, ...]:
        """One epoch's (users, items[, negatives]) in shuffled order, drawn at once so that a
        training loop can move them to its device in one copy and slice batches there."""
        order = self.rng.permutation(len(self.users))
        u, i = self.users[order], self.items[order]
        return (u, i, self._negatives(u)) if negatives else (u, i)

    def epoch(self, batch_size: int, negatives: bool = True):
        arrays = self.epoch_arrays(negatives)
        for s in range(0, len(arrays[0]), batch_size):
            yield tuple(a[s : s + batch_size] for a in arrays)


def rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` for a 1-D index as ``index_select``: the same rows and gradient, ~3x faster
    on CPU than advanced indexing (aten::index / index_put backward) for the batch gathers."""
    return x.index_select(0, index)


@torch.no_grad()
def target_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout of a detached tensor (BM3's target network), drawn as
    ``uniform >= p``: the same distribution as ``F.dropout(x, p)``, other random numbers,
    ~2.6x faster on CPU (``bernoulli_`` is scalar there; 8192 x 256, one thread, measured)."""
    if p <= 0.0:
        return x.clone()
    if p >= 1.0:
        return torch.zeros_like(x)
    keep = torch.empty_like(x).uniform_().ge_(p)
    return x * keep.mul_(1.0 / (1.0 - p))


class _GatherIntoGrad(torch.autograd.Function):
    """``table.index_select(0, index)`` whose backward adds the rows' gradient straight into
    the table's persistent ``.grad`` (see ``RowGradTable``) instead of returning a fresh
    zero-filled table-sized gradient."""

    @staticmethod
    def forward(ctx, table, index, tracker):
        ctx.save_for_backward(index)
        ctx.tracker = tracker
        return table.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        ctx.tracker.accumulate(index, grad)
        return None, None, None


class _DiffIntoGrad(torch.autograd.Function):
    """``table[a] - table[b]`` whose backward adds the gradient's rows, ``+`` at ``a`` and
    ``-`` at ``b``, straight into the table's persistent ``.grad`` (see ``RowGradTable``).
    Both sides are gathered from the table itself: going through the batch's distinct rows
    first costs one more gather forward and, backward, a fresh zero-filled (distinct rows x d)
    buffer plus one more scatter (FREEDOM's step ~1 ms slower in the loop, docs/fidelity.md)."""

    @staticmethod
    def forward(ctx, table, a, b, tracker):
        ctx.save_for_backward(a, b)
        ctx.tracker = tracker
        return table.index_select(0, a).sub_(table.index_select(0, b))

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        ctx.tracker.accumulate(a, grad)
        ctx.tracker.accumulate(b, grad, alpha=-1.0)
        return None, None, None, None


class RowGradTable:
    """A trainable table read only through row gathers (FREEDOM's and BM3's feature tables,
    MMRec's ``from_pretrained(freeze=False)``), with its gradient kept in one preallocated
    buffer.

    ``index_select``'s backward allocates a zero-filled gradient the size of the table each
    step (7,506 x 384 floats here: a fresh allocation, so page faults plus the fill, ~20 ms
    under load per table and step in the profile). Here the buffer persists; the backward
    ``index_add_``s the batch's rows into it, after zeroing it in place at the step's first
    write (a memset of memory already mapped: ~0.25 ms, less than zeroing only the touched
    rows). Zeroing at the first write rather than in :meth:`reset` keeps the 11.5 MB memsets
    out of the forward pass, which then reads the small tables while Adam's last writes are
    still in cache (with ``_optimizer``'s largest-first order: FREEDOM's epoch -2 to -4 % at 1 and
    2 threads, docs/models.md "Cost"). The gradient Adam sees is the same tensor value (zeros + the
    same ``index_add_``), so Adam's update, including the m/v decay of rows without
    gradient, is unchanged; a step that reads no row leaves the gradient None, as autograd's
    ``index_select`` would."""

    def __init__(self, param: torch.nn.Parameter):
        self.param = param
        self.buf = torch.zeros_like(param)
        self._dirty = False  # written since it was last zeroed

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self.param.index_select(0, index)
        return _GatherIntoGrad.apply(self.param, index, self)

    def row_difference(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``table[a] - table[b]``, its gradient added in place like ``rows()``'."""
        if not torch.is_grad_enabled():
            return self.param.index_select(0, a) - self.param.index_select(0, b)
        return _DiffIntoGrad.apply(self.param, a, b, self)

    def accumulate(self, index: torch.Tensor, grad: torch.Tensor, alpha: float = 1.0) -> None:
        p = self.param
        if p.grad is None:  # the step's first write (or set_to_none elsewhere): start from zeros
            if self.buf.device != p.device:  # net.to(device) after _build
                self.buf = torch.zeros_like(p)
            elif self._dirty:
                self.buf.zero_()
            p.grad = self.buf
        if p.grad is not self.buf:  # a gradient someone else set: add into it, as autograd would
            p.grad.index_add_(0, index, grad, alpha=alpha)
            return
        self.buf.index_add_(0, index, grad, alpha=alpha)
        self._dirty = True

    def reset(self) -> None:
        """Before a step: no gradient until the step's first write, which zeroes the buffer
        (if written since) and hands it to the parameter."""
        self.param.grad = None

    def __deepcopy__(self, memo):
        new = object.__new__(RowGradTable)
        new.param = copy.deepcopy(self.param, memo)
        new.buf = torch.zeros_like(new.param)
        new._dirty = False
        return new


def set_torch_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads once per process (None/0: every core this process may
    use). Returns the number set. Training loops never change it."""
    import os

    if not n:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            n = os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(int(n))
    return int(n)


class MMReprRecommender(Recommender):
    """Cornac ``Recommender`` with the mmrepr contract (see docs/models.md).

    Subclasses implement ``_fit(train_set, val_set)`` and ``_score_block(users) -> (len, n_items)``.
    """

    epoch_callback: Callable[["MMReprRecommender", int], bool] | None = None
    # False: the model has nothing but IDs (or interactions) to score an item with, so a
    # cold item gets the user's lowest warm score (:func:`cold_items_at_min`).
    scores_cold_items: bool = False

    def __init__(
        self,
        name: str,
        k: int = 64,
        learning_rate: float = 0.001,
        lambda_reg: float = 0.01,
        n_epochs: int = 200,
        batch_size: int = 1024,
        seed: int = 123,
        verbose: bool = False,
        device: str = "auto",
        trainable: bool = True,
    ):
        super().__init__(name=name, trainable=trainable, verbose=verbose)
        self.k = int(k)
        self.learning_rate = float(learning_rate)
        self.lambda_reg = float(lambda_reg)
        self.n_epochs = int(n_epochs)
        self.batch_size = int(batch_size)
        self.seed = int(seed) if seed is not None else None
        self.device = device
        self.epoch_callback = None
        # Cornac's __deepcopy__/save skip these: the callback may close over an evaluator.
        self.ignored_attrs = list(self.ignored_attrs) + ["epoch_callback"]
        self.epochs_run = 0
        self.loss_history: list[float] = []
        self.diverged = False

    # ---- Cornac API -------------------------------------------------------------------
    def fit(self, train_set, val_set=None):
        self._begin_fit(train_set, val_set)
        self._fit(train_set, val_set)
        return self

    def _begin_fit(self, train_set, val_set=None) -> None:
        """What every fit does before training: Cornac's bookkeeping, the binary training
        matrix, the warm-item mask."""
        Recommender.fit(self, train_set, val_set)
        if self.n_epochs < 1 or self.batch_size < 1 or self.k < 1:
            raise ValueError(f"{self.name}: n_epochs, batch_size and k must be >= 1")
        self.epochs_run = 0
        self.loss_history = []
        self.diverged = False
        self._train_csr = train_set.csr_matrix.tocsr().astype(np.float32)
        self._train_csr.data[:] = 1.0  # every training interaction is a positive (MMRec/Elliot)
        # the cold-item mask every model uses: items with no training interaction
        self.warm_items = warm_item_mask(self._train_csr)

    def _check_user(self, user_idx) -> None:
        if not self.knows_user(user_idx):
            raise ScoreException(f"{self.name}: unknown user index {user_idx}")

    def score(self, user_idx, item_idx=None):
        self._check_user(user_idx)
        row = self.score_users(np.asarray([user_idx]))[0]
        if item_idx is None:
            return row
        if not self.knows_item(item_idx):
            raise ScoreException(f"{self.name}: unknown item index {item_idx}")
        return row[item_idx]

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """Scores of the given users for all ``train_set.num_items`` items, float32,
        shape ``(len(user_idx), num_items)``; training items are NOT masked."""
        if not self.is_fitted:
            raise RuntimeError(f"{self.name}: score_users before fit")
        users = np.asarray(user_idx, dtype=np.int64).reshape(-1)
        bad = users[(users < 0) | (users >= self.num_users)]
        if bad.size:
            raise ValueError(f"{self.name}: unknown user indices {bad[:5].tolist()} (num_users={self.num_users})")
        scores = np.asarray(self._score_block(users), dtype=np.float32)
        if not self.scores_cold_items:
            scores = cold_items_at_min(scores, self.warm_items)
        return scores

    def default_score(self):
        return 0.0

    # ---- epoch hook and snapshots -------------------------------------------------------
    def _after_epoch(self, epoch: int) -> bool:
        """Record the epoch; True when ``epoch_callback`` asks to stop."""
        self.epochs_run = epoch
        cb = self.epoch_callback
        return bool(cb(self, epoch)) if cb is not None else False

    def get_state(self) -> dict:
        return copy.deepcopy(self._state())

    def set_state(self, state: dict) -> None:
        self._set_state(copy.deepcopy(state))

    def _state(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _set_state(self, state: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit(self, train_set, val_set):  # pragma: no cover - abstract
        raise NotImplementedError

    def _score_block(self, users: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __deepcopy__(self, memo):
        # Cornac's __deepcopy__ skips ignored_attrs (train_set, ..., epoch_callback); the copy
        # shares the callback instead of deep-copying whatever it closes over.
        result = Recommender.__deepcopy__(self, memo)
        result.epoch_callback = self.epoch_callback
        return result


class EmbeddingRecommender(MMReprRecommender):
    """Torch models whose scores are ``U[u] . V^T``; trains with Adam for ``n_epochs``.

    Subclasses build ``self.net`` (an ``nn.Module``) in ``_build`` and define
    ``_batch_loss(batch)`` and ``_final_embeddings() -> (U, V)``; hooks
    ``_pre_epoch()`` and ``_lr_lambda`` (MMRec's learning_rate_scheduler) are optional.
    """

    uses_negatives = True
    lr_scheduler: tuple[float, float] = (1.0, 50.0)  # MMRec overall.yaml: no decay
    huge_pages = True  # large CPU tables on transparent huge pages where the kernel allows

    def _setup(self, train_set) -> None:
        """Seeds, then the model's tables and graphs (``_build``), untrained."""
        self._device = resolve_device(self.device)
        torch.manual_seed(self.seed if self.seed is not None else 0)
        self._torch_gen = torch.Generator().manual_seed(self.seed if self.seed is not None else 0)
        self._U = self._V = None
        self._row_grad_tables: list[RowGradTable] = []  # filled by _build where a model has them
        self._build(train_set)
        self.net.to(self._device)
        # the long-lived large tables on 2 MB pages (models/hugepages.py): same values, fewer
        # TLB misses in the row gathers and scatters
        self._huge_params = []
        if self.huge_pages:
            self._huge_params = move_large_parameters(self.net)
            for table in self._row_grad_tables:
                table.buf = on_huge_pages(table.buf)

    def prepare(self, train_set) -> None:
        """Everything ``fit`` does before its first epoch, and nothing after: for driving the
        training steps from outside (``bench lockstep``: ``_pre_epoch``, ``_optimizer``,
        ``_zero_grad``, ``_batch_loss``)."""
        self._begin_fit(train_set)
        self._setup(train_set)

    def _fit(self, train_set, val_set):
        self._setup(train_set)
        sampler = BPRSampler(self._train_csr, self.seed if self.seed is not None else 0)
        opt, sched = self._optimizer()
        bar = tqdm(range(1, self.n_epochs + 1), desc=self.name, disable=not self.verbose, leave=False)
        # On CPU a per-batch finiteness check costs nothing; on an accelerator it would be a
        # device->host sync per step, so there it is checked once per epoch instead.
        check_each_batch = self._device.type == "cpu"
        bs = self.batch_size
        self.epoch_seconds = []  # training time of each epoch (not the callback's)
        for epoch in bar:
            t_epoch = time.perf_counter()
            self.net.train()
            self._pre_epoch()
            # the whole epoch's indices reach the device in one copy; batches are views
            arrays = [torch.from_numpy(a).to(self._device) for a in sampler.epoch_arrays(self.uses_negatives)]
            total = torch.zeros((), device=self._device)
            nb = 0
            for s in range(0, arrays[0].shape[0], bs):
                batch = tuple(a[s : s + bs] for a in arrays)
                self._zero_grad(opt)
                loss = self._batch_loss(batch)
                if check_each_batch and not torch.isfinite(loss):
                    # MMRec's trainer stops on a NaN loss; we do the same and flag it.
                    self.diverged = True
                    break
                loss.backward()
                opt.step()
                total += loss.detach()
                nb += 1
            sched.step()
            self._U = self._V = None  # embeddings changed
            mean_loss = float(total) / max(nb, 1)
            if not check_each_batch and not np.isfinite(mean_loss):
                self.diverged = True
            if self.diverged:
                warnings.warn(f"{self.name}: non-finite loss at epoch {epoch}; training stopped")
                break
            self.loss_history.append(mean_loss)
            self.epoch_seconds.append(time.perf_counter() - t_epoch)
            bar.set_postfix(loss=self.loss_history[-1])
            if self._after_epoch(epoch):
                break

    def _pre_epoch(self) -> None:
        pass

    def _optimizer(self):
        """Adam over ``self.net`` and MMRec's per-epoch LR schedule (``lr_scheduler``)."""
        # fused Adam: one pass over each parameter instead of ~10 elementwise kernels (2.6x
        # faster on CPU for a 1M-entry embedding table); same update, rounding differs at the
        # last float bit (max |diff| 2.4e-7 after 50 steps on N(0,1) values).
        fused = self._device.type in ("cpu", "cuda")
        # Largest tables first: Adam's last writes (the ID tables, the projections) are what
        # the next forward pass reads first, and they are still in cache (FREEDOM and BM3's
        # 11.5 MB feature tables are read only row by row). Adam is elementwise per
        # parameter, so the order changes no value.
        params = sorted(self.net.parameters(), key=lambda p: p.numel(), reverse=True)
        opt = torch.optim.Adam(params, lr=self.learning_rate, fused=fused or None)
        move_optimizer_state_after_first_step(opt, getattr(self, "_huge_params", []))
        base, step = self.lr_scheduler
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lambda e: base ** (e / step))

    def _zero_grad(self, opt) -> None:
        """Before a step: gradients to None (``RowGradTable`` buffers are zeroed at their first
        write)."""
        opt.zero_grad(set_to_none=True)
        for table in self._row_grad_tables:
            table.reset()

    # ---- item ID tables and the cold mask ------------------------------------------------
    def _id_table(self, k: int) -> torch.nn.Parameter:
        """The item ID embeddings, one row per item of the catalogue. Warm rows are
        Xavier-uniform drawn as one (n_warm, k) table (the same draws as a warm-only model);
        cold rows start at zero and are never read unmasked (:meth:`_ids`)."""
        warm = torch.from_numpy(np.asarray(self.warm_items, dtype=bool))
        t = torch.zeros(self.num_items, k)
        t[warm] = torch.nn.init.xavier_uniform_(torch.empty(int(warm.sum()), k))
        self._id_mask = warm.to(torch.float32)[:, None].to(self._device)
        return torch.nn.Parameter(t)

    def _ids(self, table: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """``table`` (all rows, or ``items``' rows) with the cold items' rows zeroed: a cold
        item's ID parameters never reach a score or receive a gradient."""
        if items is None:
            return table * self._id_mask
        return rows(table, items) * rows(self._id_mask, items)

    def _ensure_embeddings(self) -> None:
        if self._U is None:
            self.net.eval()
            with torch.no_grad():
                u, v = self._final_embeddings()
            self._U = u.detach().float().cpu().numpy()
            self._V = v.detach().float().cpu().numpy()

    def _score_block(self, users):
        self._ensure_embeddings()
        return self._U[users] @ self._V.T

    def _state(self):
        self._ensure_embeddings()
        return {"epoch": self.epochs_run, "U": self._U, "V": self._V}

    def _set_state(self, state):
        self._U, self._V = state["U"], state["V"]
        self.epochs_run = state["epoch"]

    def get_user_vectors(self):
        self._ensure_embeddings()
        return self._U

    def get_item_vectors(self):
        self._ensure_embeddings()
        return self._V

"""Graph construction shared by LATTICE, FREEDOM, BM3 and LightGCN.

Item-item graphs are built as *sparse* top-k graphs computed in row blocks, never as the
dense n_items x n_items matrices of the MMRec reference: on a 75k-item catalogue a dense
similarity matrix is 22 GB. Keeping the top-k of each row and zeroing the rest is exactly
what the reference's ``build_knn_neighbourhood`` does, so the results are the same.

Edges are returned as ``(rows, cols, values)``; ``to_sparse`` turns them into a torch COO
tensor (duplicates are summed by ``torch.sparse.mm``, which the mixing of graphs relies on).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

# Elements of one similarity block (rows x n_items); ~256 MB of float32.
_BLOCK_ELEMENTS = 1 << 26


def to_sparse(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int, m: int | None = None):
    return torch.sparse_coo_tensor(
        torch.stack([rows, cols]), values, (n, n if m is None else m), check_invariants=False
    )


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    # eps keeps all-zero rows at zero instead of NaN (the reference divides by the norm).
    return F.normalize(x, p=2, dim=-1, eps=1e-12)


def zero_rows(features: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the all-zero rows (an item without content: a zeroed modality, a
    missing feature row)."""
    return ~features.detach().ne(0).any(dim=-1)


@torch.no_grad()
def knn_indices(features: torch.Tensor, k: int, candidates: torch.Tensor | None = None,
                empty: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row i's k most cosine-similar rows (itself included, as in the reference).

    ``candidates``: the row indices a neighbour may be (None: every row). Stage 4 passes
    the warm items, so a cold item (no training interaction, its ID row zeroed) is never
    anyone's neighbour while every item, cold ones included, gets warm neighbours; the warm
    rows' neighbours are then those of a graph over the warm items alone.

    Returns ``(rows, cols)``, rows sorted, cols by decreasing similarity: k per row, except
    that a row without content (``empty``, default: the all-zero rows of ``features``) has no
    edges and is nobody's neighbour. Its similarities are all 0, so top-k would pick k
    arbitrary items (the lowest-index ties), the same ones for every such row: a hub graph,
    not the absence of information (docs/protocol.md, "Modality ablation").
    """
    n = features.shape[0]
    m = n if candidates is None else int(candidates.shape[0])
    if not 1 <= k <= m:
        raise ValueError(f"kNN graph: top_k={k} must be in [1, n_candidates={m}]")
    fn = l2_normalise(features.float())
    ref = fn if candidates is None else fn.index_select(0, candidates)
    block = max(1, _BLOCK_ELEMENTS // max(m, 1))
    cols = []
    for start in range(0, n, block):
        sim = fn[start : start + block] @ ref.T
        idx = torch.topk(sim, k, dim=-1).indices
        cols.append(idx if candidates is None else candidates[idx])
    cols = torch.cat(cols).reshape(-1)
    rows = torch.arange(n, device=features.device).repeat_interleave(k)
    empty = zero_rows(features) if empty is None else empty
    if bool(empty.any()):
        keep = ~(empty[rows] | empty[cols])
        rows, cols = rows[keep], cols[keep]
    return rows, cols


def cosine_values(features: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the given pairs; differentiable w.r.t. ``features``."""
    fn = l2_normalise(features)
    return (fn.index_select(0, rows) * fn.index_select(0, cols)).sum(-1)


def sym_normalise(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """Values of D^-1/2 A D^-1/2 with D the row sums of A (the reference's
    ``compute_normalized_laplacian``; zero/negative-degree rows get 0, as its inf->0)."""
    deg = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, rows, values)
    d = deg.clamp_min(0).pow(-0.5)
    d = torch.where(torch.isinf(d), torch.zeros_like(d), d)
    return d[rows] * values * d[cols]


def lattice_knn_graph(features: torch.Tensor, k: int, rows=None, cols=None, candidates=None, empty=None):
    """LATTICE: weighted top-k cosine graph (values = similarities, not normalised).

    ``rows``/``cols`` may be passed in when the neighbour selection is already known.
    Values are differentiable w.r.t. ``features``; the top-k *selection* is not (as with
    ``torch.topk`` in the reference). ``empty``: rows without content (no edges), see
    :func:`knn_indices`."""
    if rows is None:
        rows, cols = knn_indices(features.detach(), k, candidates, empty)
    return rows, cols, cosine_values(features, rows, cols)


@torch.no_grad()
def freedom_knn_graph(features: torch.Tensor, k: int, candidates: torch.Tensor | None = None):
    """FREEDOM: binary top-k graph, symmetrically normalised by row degree.

    Every row has exactly k entries, so every value is 1/k (reference: ``get_knn_adj_mat``);
    an all-zero row has none (:func:`knn_indices`)."""
    rows, cols = knn_indices(features, k, candidates)
    ones = torch.ones(rows.shape[0], dtype=torch.float32, device=features.device)
    n = features.shape[0]
    deg = 1e-7 + torch.zeros(n, device=features.device).index_add(0, rows, ones)
    d = deg.pow(-0.5)
    return rows, cols, d[rows] * d[cols]


def bipartite_adjacency(train_csr: sp.csr_matrix) -> sp.csr_matrix:
    """The (users+items) square adjacency [[0, R], [R^T, 0]] with binary R."""
    r = train_csr.copy().astype(np.float32)
    r.data[:] = 1.0
    return sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)


def sym_norm_adjacency(train_csr: sp.csr_matrix) -> sp.coo_matrix:
    """D^-1/2 A D^-1/2 without self loops (LightGCN, FREEDOM, BM3 in MMRec; +1e-7 as there)."""
    a = bipartite_adjacency(train_csr)
    deg = np.asarray(a.sum(axis=1)).ravel() + 1e-7
    d = sp.diags(np.power(deg, -0.5))
    return (d @ a @ d).tocoo()


def mean_norm_adjacency_self_loops(train_csr: sp.csr_matrix) -> sp.coo_matrix:
    """D^-1 (A + I), MMRec LATTICE's ``get_adj_mat`` (row-normalised, with self loops)."""
    a = bipartite_adjacency(train_csr) + sp.eye(sum(train_csr.shape), dtype=np.float32, format="csr")
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = np.power(deg, -1.0, where=deg > 0, out=np.zeros_like(deg))
    return (sp.diags(inv) @ a).tocoo()


def scipy_to_torch(m: sp.spmatrix, device) -> torch.Tensor:
    m = m.tocoo()
    idx = torch.from_numpy(np.vstack([m.row, m.col]).astype(np.int64))
    return torch.sparse_coo_tensor(
        idx, torch.from_numpy(m.data.astype(np.float32)), m.shape, check_invariants=False
    ).coalesce().to(device)


def edge_normalised_values(users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int) -> torch.Tensor:
    """1/sqrt(deg_u deg_i) for each user-item edge (FREEDOM ``_normalize_adj_m``)."""
    ones = torch.ones(users.shape[0], device=users.device)
    du = 1e-7 + torch.zeros(n_users, device=users.device).index_add(0, users, ones)
    di = 1e-7 + torch.zeros(n_items, device=users.device).index_add(0, items, ones)
    return du.pow(-0.5)[users] * di.pow(-0.5)[items]


class FixedSparse:
    """A constant sparse matrix kept as CSR together with its transpose.

    ``torch.sparse.mm`` on COO has to transpose the matrix in every backward pass, which
    dominates a CPU training step; with the transpose precomputed (or the matrix itself,
    when symmetric) propagation is about 2-4x faster. Values never need gradients here.

    On CPU the products run on the SciPy arrays (``sa``, ``sat``) through torch CSR views
    with int32 indices and MKL's kernel into preallocated outputs (``product``, ``buffer``):
    with int64 indices or a fresh output torch's CPU CSR ``addmm`` converts or allocates per
    call, which is why an earlier version used SciPy's own kernel; measured against that,
    the int32/MKL path is ~4x faster per product under load and bit-equal (the ``_Scipy*``
    autograd nodes keep their names)."""

    def __init__(self, coo: torch.Tensor, symmetric: bool = False):
        coo = coo.detach().coalesce()
        self.shape = tuple(coo.shape)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            self.a = coo.to_sparse_csr()
            self.at = self.a if symmetric else coo.t().coalesce().to_sparse_csr()
        self.sa = self.sat = None
        if coo.device.type == "cpu" and coo.dtype == torch.float32:
            idx = coo.indices().numpy()
            self.sa = sp.csr_matrix((coo.values().numpy(), (idx[0], idx[1])), shape=self.shape, dtype=np.float32)
            self.sat = self.sa if symmetric else self.sa.T.tocsr()
        self._set_csr32()

    def _set_csr32(self) -> None:
        # torch CSR views of the SciPy arrays with int32 indices: ``torch.addmm(out, a, x,
        # beta=0, out=out)`` then runs MKL's kernel into a preallocated output. Measured on
        # allrecipes' graph (1 thread, load ~8): median 1.1 ms per product against SciPy's
        # 4.5 ms (best 0.8 vs 1.2), bit-equal results; int64 indices or a fresh output cost
        # a conversion or an allocation per call.
        self.a32 = self.at32 = None
        self._ws: dict = {}
        if self.sa is None:
            return

        def csr32(m):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int32)),
                                               torch.from_numpy(m.indices.astype(np.int32)),
                                               torch.from_numpy(m.data), m.shape, check_invariants=False)

        self.a32 = csr32(self.sa)
        self.at32 = self.a32 if self.sat is self.sa else csr32(self.sat)

    def product(self, h: np.ndarray, out: np.ndarray | None = None, transpose: bool = False) -> np.ndarray:
        """``A @ h`` (or ``A^T @ h``) for a C-contiguous float32 ``h``, written into ``out``
        (a fresh array when None)."""
        a = self.at32 if transpose else self.a32
        x = torch.from_numpy(h)
        o = torch.empty((a.shape[0], h.shape[1]), dtype=torch.float32) if out is None else torch.from_numpy(out)
        torch.addmm(o, a, x, beta=0.0, out=o)
        return o.numpy()

    def buffer(self, shape: tuple, slot: int) -> np.ndarray:
        """A reusable scratch array for intermediate layers (never returned to callers):
        fresh allocations of this size page-fault on every step."""
        key = (tuple(shape), slot)
        b = self._ws.get(key)
        if b is None:
            b = self._ws[key] = np.empty(shape, dtype=np.float32)
        return b

    def to_dense(self) -> torch.Tensor:
        return self.a.to_dense()

    def __deepcopy__(self, memo):
        # torch cannot deep-copy sparse CSR tensors; rebuild them from copied parts.
        def copy_csr(m):
            return torch.sparse_csr_tensor(
                m.crow_indices().clone(), m.col_indices().clone(), m.values().clone(), m.shape,
                check_invariants=False,
            )

        new = object.__new__(FixedSparse)
        new.shape = self.shape
        new.a = copy_csr(self.a)
        new.at = new.a if self.at is self.a else copy_csr(self.at)
        new.sa = None if self.sa is None else self.sa.copy()
        new.sat = new.sa if self.sat is self.sa else (None if self.sat is None else self.sat.copy())
        new._set_csr32()
        return new


class _FixedSpMM(torch.autograd.Function):
    # torch.mm, not ``@``: for a sparse CSR left operand ``torch.matmul`` takes a generic
    # path that is 5-10x slower on CPU (allrecipes' 15.6k-node graph, 64 columns, 1 thread:
    # ~6-10 ms vs ~1 ms); the product is the same.
    @staticmethod
    def forward(ctx, x, a, at):
        ctx.at = at
        return torch.mm(a, x)

    @staticmethod
    def backward(ctx, grad):
        return torch.mm(ctx.at, grad.contiguous()), None, None


class _ScipySpMM(torch.autograd.Function):
    """adj @ x on CPU through SciPy (see ``FixedSparse``); the gradient is adj^T @ grad."""

    @staticmethod
    def forward(ctx, x, fixed):
        ctx.fixed = fixed
        return torch.from_numpy(fixed.product(x.detach().contiguous().numpy()))

    @staticmethod
    def backward(ctx, grad):
        return torch.from_numpy(ctx.fixed.product(grad.contiguous().numpy(), transpose=True)), None


class _ScipyPropagateMean(torch.autograd.Function):
    """mean(E, AE, ..., A^L E) on CPU in one autograd node: the layer sum is accumulated in
    place, and the backward is the same recursion with A^T, (g + A^T g + ... + (A^T)^L g) / (L+1),
    instead of L product nodes, L additions and a division, each a pass over the whole
    (users+items) x k matrix with its own allocation. The passes run as torch ops on views of
    the reused buffers (torch's intra-op threads; NumPy's are single-threaded): bit-equal."""

    @staticmethod
    def forward(ctx, x, fixed, n_layers):
        ctx.fixed, ctx.n_layers = fixed, n_layers
        h = x.detach().contiguous()
        out = h.clone()
        for layer in range(n_layers):
            h = _product(fixed, h, layer)
            out += h
        out *= _inverse_count(n_layers)
        return out

    @staticmethod
    def backward(ctx, grad):
        g = grad.contiguous()
        acc = g.clone()
        for layer in range(ctx.n_layers):
            g = _product(ctx.fixed, g, layer, transpose=True)
            acc += g
        acc *= _inverse_count(ctx.n_layers)
        return acc, None, None


class _ScipyPropagateMeanSplit(torch.autograd.Function):
    """``_ScipyPropagateMean`` of ``[users; items]`` taking and returning the two blocks, so
    that no step concatenates the tables or slices the result (whose backward zero-fills a
    full-size gradient per slice and adds them)."""

    @staticmethod
    def forward(ctx, users, items, fixed, n_layers):
        ctx.fixed, ctx.n_layers, ctx.n_users = fixed, n_layers, users.shape[0]
        out = torch.cat([users.detach(), items.detach()])
        h = out
        for layer in range(n_layers):
            h = _product(fixed, h, layer)
            out += h
        out *= _inverse_count(n_layers)
        return out[: ctx.n_users], out[ctx.n_users :]

    @staticmethod
    def backward(ctx, gu, gi):
        nu = ctx.n_users
        acc = torch.empty((ctx.fixed.shape[0], (gu if gu is not None else gi).shape[1]), dtype=torch.float32)
        if gu is None:
            acc[:nu].zero_()
        else:
            acc[:nu].copy_(gu)
        if gi is None:
            acc[nu:].zero_()
        else:
            acc[nu:].copy_(gi)
        g = acc
        for layer in range(ctx.n_layers):
            g = _product(ctx.fixed, g, layer, transpose=True)
            acc += g
        acc *= _inverse_count(ctx.n_layers)
        return acc[:nu], acc[nu:], None, None


def _product(fixed: "FixedSparse", h: torch.Tensor, layer: int, transpose: bool = False) -> torch.Tensor:
    """``A @ h`` (``A^T @ h``) into the layer's reused buffer, as a torch view of it."""
    return torch.from_numpy(fixed.product(h.numpy(), fixed.buffer(tuple(h.shape), layer % 2), transpose=transpose))


class _ScipyPropagateMeanRows(torch.autograd.Function):
    """Rows ``R`` of ``mean(E, AE, ..., A^L E)`` for ``E = [users; items]``, for a training
    step whose loss reads only the batch's rows: the output, its gradient and the layer sums
    are |R| x d instead of (users + items) x d, and the backward starts from the gradient
    scattered into a reused buffer. Every product is the full MKL product into a reused
    buffer (restricting the last product to A[R] with SciPy was slower: SciPy's kernel is
    ~4x slower than MKL's on this graph under load). Forward rows bit-equal to
    ``propagate_mean_split``'s; gradients equal to float rounding."""

    @staticmethod
    def forward(ctx, users, items, fixed, n_layers, user_rows, item_rows):
        # The passes over the (users + items) x d tables run as torch ops on views of the
        # reused buffers: elementwise and gather work then uses torch's intra-op threads
        # (NumPy's is single-threaded); the same operations in the same order, so bit-equal.
        nu, d = users.shape[0], users.shape[1]
        n = fixed.shape[0]
        r = torch.cat([user_rows, item_rows + nu])
        h = torch.from_numpy(fixed.buffer((n, d), "in"))
        h[:nu].copy_(users.detach())
        h[nu:].copy_(items.detach())
        out = h.index_select(0, r)
        for layer in range(n_layers):
            h = _product(fixed, h, layer)
            out += h.index_select(0, r)
        out *= _inverse_count(n_layers)
        ctx.fixed, ctx.n_layers, ctx.nu, ctx.ni, ctx.r = fixed, n_layers, nu, items.shape[0], r
        ctx.n_user_rows = len(user_rows)
        return out[: len(user_rows)], out[len(user_rows) :]

    @staticmethod
    def backward(ctx, gu, gi):
        nu, r, nr = ctx.nu, ctx.r, ctx.n_user_rows
        d = (gu if gu is not None else gi).shape[1]
        n = nu + ctx.ni
        g = torch.from_numpy(ctx.fixed.buffer((n, d), "in"))  # scattered upstream gradient
        g.zero_()
        if gu is not None:
            g.index_copy_(0, r[:nr], gu.contiguous())
        if gi is not None:
            g.index_copy_(0, r[nr:], gi.contiguous())
        acc = g.clone()
        for layer in range(ctx.n_layers):
            g = _product(ctx.fixed, g, layer, transpose=True)
            acc += g
        acc *= _inverse_count(ctx.n_layers)
        return acc[:nu], acc[nu:], None, None, None, None


def _inverse_count(n_layers: int) -> float:
    """``1 / (n_layers + 1)`` rounded to float32 first, as NumPy's ``np.float32`` scalar was."""
    return float(np.float32(1.0 / (n_layers + 1)))


def propagate_mean_rows(adj, users: torch.Tensor, items: torch.Tensor, n_layers: int,
                        user_rows: torch.Tensor, item_rows: torch.Tensor):
    """``(ue[user_rows], ie[item_rows])`` of ``propagate_mean_split(adj, users, items,
    n_layers)`` without propagating the rows nobody reads in the last layer. The row
    indices must be distinct (``torch.unique``)."""
    if isinstance(adj, FixedSparse) and adj.sa is not None and users.device.type == "cpu" \
            and users.dtype == torch.float32 and items.dtype == torch.float32:
        return _ScipyPropagateMeanRows.apply(users, items, adj, n_layers, user_rows, item_rows)
    ue, ie = propagate_mean_split(adj, users, items, n_layers)
    return ue.index_select(0, user_rows), ie.index_select(0, item_rows)


def pad_item_block(m: sp.spmatrix, n_users: int) -> sp.csr_matrix:
    """``[[0, 0], [0, M]]``: an items x items matrix placed in the (users + items) square."""
    return sp.block_diag((sp.csr_matrix((n_users, n_users), dtype=np.float32), sp.csr_matrix(m, dtype=np.float32)),
                         format="csr")


class RowsOperator:
    """``Q = mean(I, A, ..., A^L) + [[0, 0], [0, M]]`` as one sparse matrix, for a training
    step whose loss reads only some rows of ``[users; items]`` after a LightGCN layer mean
    over ``A`` plus an item-graph term ``M @ items`` (FREEDOM: ``M`` = its frozen item graph
    to the power ``n_mm_layers``). The rows ``R`` of ``Q`` are then one small product,
    ``Q[R] @ [U; I]``, and the gradient ``Q[R]^T @ g``: no full-table pass per layer.

    Worth it only while ``Q`` stays sparse: FREEDOM's per-epoch pruned graph (80 % of the
    edges dropped) has 9.5k entries on allrecipes and ``Q`` 98k (75k of them the item
    graph's); the full graph's 3-layer mean would have ~2.3M. :meth:`worthwhile` compares
    the entries a step would touch either way. Values equal to the layer-by-layer products
    up to float rounding (the layer sum is formed in another order)."""

    def __init__(self, a: sp.spmatrix, n_layers: int, n_users: int, item_block: sp.spmatrix | None = None):
        """``item_block``: ``M`` (items x items), or already padded to ``[[0, 0], [0, M]]``
        (users + items square; a caller building one operator per epoch pads it once)."""
        a = sp.csr_matrix(a, dtype=np.float32)
        n = a.shape[0]
        power = sp.identity(n, dtype=np.float32, format="csr")
        q = power
        for _ in range(n_layers):
            power = a @ power
            q = q + power
        q = q * np.float32(1.0 / (n_layers + 1))
        if item_block is not None:
            if item_block.shape[0] != n:
                item_block = pad_item_block(item_block, n_users)
            q = q + item_block
        q = sp.csr_matrix(q, dtype=np.float32)
        self.nnz, self.n_rows, self.n_users, self.n_layers, self.a_nnz = q.nnz, n, n_users, n_layers, a.nnz
        # the user and item column blocks, each row-sliced per step (slicing columns per step
        # costs more than the products)
        self.qu, self.qi = q[:, :n_users].tocsr(), q[:, n_users:].tocsr()

    def worthwhile(self) -> bool:
        """Q's entries against what the layer-by-layer path reads per step (L products over A's
        entries and about 6 passes over the (users+items) rows)."""
        return self.nnz <= self.n_layers * self.a_nnz + 6 * self.n_rows

    def rows(self, user_rows: np.ndarray, item_rows: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """``Q[R]``'s user and item column blocks for ``R = user_rows ∪ (n_users + item_rows)``."""
        r = np.concatenate([user_rows, item_rows + self.n_users])
        return self.qu[r], self.qi[r]


def _csr32(m: sp.csr_matrix) -> torch.Tensor:
    """A torch CSR view of a SciPy CSR matrix with int32 indices (MKL's kernel, see ``FixedSparse``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int32, copy=False)),
                                       torch.from_numpy(m.indices.astype(np.int32, copy=False)),
                                       torch.from_numpy(m.data), m.shape, check_invariants=False)


class _RowsOperatorProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, users, items, op, user_rows, item_rows):
        qu, qi = op.rows(user_rows.numpy(), item_rows.numpy())
        out = torch.mm(_csr32(qu), users.detach())
        torch.addmm(out, _csr32(qi), items.detach(), out=out)
        ctx.qu, ctx.qi, ctx.nr = qu, qi, len(user_rows)
        return out[: ctx.nr], out[ctx.nr :]

    @staticmethod
    def backward(ctx, gu, gi):
        d = (gu if gu is not None else gi).shape[1]
        g = torch.zeros((ctx.qu.shape[0], d), dtype=torch.float32)
        if gu is not None:
            g[: ctx.nr] = gu
        if gi is not None:
            g[ctx.nr :] = gi
        # Q[R]^T @ g straight from the CSR slices (SciPy reads them as CSC: no transpose built).
        # Same sums in the same order as MKL on the transposed CSR (bit-equal), without the two
        # per-step transposes: FREEDOM's backward of this node 1.65 -> 0.94 ms (1 thread, caches
        # cold as after Adam; 0.87 -> 0.78 at 2 threads; the epoch: docs/models.md "Cost").
        gn = g.numpy()
        return torch.from_numpy(ctx.qu.T @ gn), torch.from_numpy(ctx.qi.T @ gn), None, None, None


def rows_operator_product(op: RowsOperator, users: torch.Tensor, items: torch.Tensor,
                          user_rows: torch.Tensor, item_rows: torch.Tensor):
    """``(Q[user_rows] @ [U; I], Q[n_users + item_rows] @ [U; I])`` with gradients to ``users``
    and ``items`` (CPU, float32; ``Q`` a :class:`RowsOperator`)."""
    return _RowsOperatorProduct.apply(users, items, op, user_rows, item_rows)


class _ScipySpMMRows(torch.autograd.Function):
    """``(adj @ x)[rows]`` as ``adj[rows] @ x``; gradient ``adj[rows]^T @ grad``."""

    @staticmethod
    def forward(ctx, x, fixed, rows):
        ctx.a_r = fixed.sa[rows.numpy()]
        return torch.from_numpy(ctx.a_r @ x.detach().contiguous().numpy())

    @staticmethod
    def backward(ctx, grad):
        return torch.from_numpy(np.ascontiguousarray(ctx.a_r.T @ grad.contiguous().numpy())), None, None


def spmm_rows(adj, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``spmm(adj, x)[rows]``, computing only those rows."""
    if isinstance(adj, FixedSparse) and adj.sa is not None and x.device.type == "cpu" and x.dtype == torch.float32:
        return _ScipySpMMRows.apply(x, adj, rows)
    return spmm(adj, x).index_select(0, rows)


def propagate_mean_split(adj, users: torch.Tensor, items: torch.Tensor, n_layers: int):
    """(user rows, item rows) of ``propagate_mean(adj, [users; items], n_layers)``."""
    if isinstance(adj, FixedSparse) and adj.sa is not None and users.device.type == "cpu" \
            and users.dtype == torch.float32 and items.dtype == torch.float32:
        return _ScipyPropagateMeanSplit.apply(users, items, adj, n_layers)
    out = propagate_mean(adj, torch.cat([users, items]), n_layers)
    return out[: users.shape[0]], out[users.shape[0] :]


def propagate_mean(adj, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """mean(E, AE, A^2E, ..., A^L E): the LightGCN layer combination."""
    if isinstance(adj, FixedSparse) and adj.sa is not None and ego.device.type == "cpu" \
            and ego.dtype == torch.float32:
        return _ScipyPropagateMean.apply(ego, adj, n_layers)
    out, h = ego, ego
    for _ in range(n_layers):
        h = spmm(adj, h)
        out = out + h
    return out / (n_layers + 1)


class EdgeGraph:
    """A sparse n x n matrix as edge lists whose ``values`` may carry gradients (LATTICE's
    learned item graph). Duplicated (row, col) pairs add up, as in a COO tensor."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int):
        self.rows, self.cols, self.values, self.n = rows, cols, values, n
        self.shape = (n, n)

    def to_coo(self) -> torch.Tensor:
        return to_sparse(self.rows, self.cols, self.values, self.n)

    def to_dense(self) -> torch.Tensor:
        return self.to_coo().to_dense()


def pair_dots(a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
              chunk: int = 1024) -> torch.Tensor:
    """``(a[rows] * b[cols]).sum(1)`` (no autograd), gathered ``chunk`` pairs at a time: the
    gathered rows stay in cache instead of two E x d copies through memory (allrecipes
    LATTICE at d = 256, 383k edges: 1.0 s -> 0.1 s on one thread, measured)."""
    out = torch.empty(rows.shape[0], dtype=a.dtype, device=a.device)
    for s in range(0, rows.shape[0], chunk):
        torch.sum(a.index_select(0, rows[s : s + chunk]) * b.index_select(0, cols[s : s + chunk]), 1,
                  out=out[s : s + chunk])
    return out


class _EdgeSpMM(torch.autograd.Function):
    """A @ x for an ``EdgeGraph`` on CPU. torch.sparse.mm's backward for the values forms
    the dense n x n product grad @ x^T and masks it (allrecipes LATTICE: ~0.34 s per graph
    build, 7.5k items); here d values[e] = <grad[row_e], x[col_e]>, one gather per edge."""

    @staticmethod
    def forward(ctx, values, x, rows, cols, n):
        a = sp.csr_matrix((values.detach().numpy(), (rows.numpy(), cols.numpy())), shape=(n, x.shape[0]))
        xd = x.detach().contiguous()
        ctx.a, ctx.rows, ctx.cols, ctx.x = a, rows, cols, xd
        return torch.from_numpy(a @ xd.numpy())

    @staticmethod
    def backward(ctx, grad):
        g = grad.contiguous()
        gv = gx = None
        if ctx.needs_input_grad[0]:
            gv = pair_dots(g, ctx.x, ctx.rows, ctx.cols)
        if ctx.needs_input_grad[1]:
            gx = torch.from_numpy(np.ascontiguousarray(ctx.a.T @ g.numpy()))
        return gv, gx, None, None, None


def spmm(adj, x: torch.Tensor) -> torch.Tensor:
    """adj @ x for a ``FixedSparse`` (constant), an ``EdgeGraph`` or a torch sparse tensor
    (both with autograd on the values)."""
    if isinstance(adj, FixedSparse):
        if adj.sa is not None and x.device.type == "cpu" and x.dtype == torch.float32:
            return _ScipySpMM.apply(x, adj)
        return _FixedSpMM.apply(x, adj.a, adj.at)
    if isinstance(adj, EdgeGraph):
        if x.device.type == "cpu" and x.dtype == torch.float32 and adj.values.dtype == torch.float32:
            return _EdgeSpMM.apply(adj.values, x, adj.rows, adj.cols, adj.n)
        return torch.sparse.mm(adj.to_coo(), x)
    return torch.sparse.mm(adj, x)

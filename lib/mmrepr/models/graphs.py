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
def knn_indices(features: torch.Tensor, k: int, empty: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row i's k most cosine-similar rows (itself included, as in the reference).

    Returns ``(rows, cols)``, rows sorted, cols by decreasing similarity: k per row, except
    that a row without content (``empty``, default: the all-zero rows of ``features``) has no
    edges and is nobody's neighbour. Its similarities are all 0, so top-k would pick k
    arbitrary items (the lowest-index ties), the same ones for every such row: a hub graph,
    not the absence of information (docs/protocol.md, "Modality ablation").
    """
    n = features.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"kNN graph: top_k={k} must be in [1, n_items={n}]")
    fn = l2_normalise(features.float())
    block = max(1, _BLOCK_ELEMENTS // max(n, 1))
    cols = []
    for start in range(0, n, block):
        sim = fn[start : start + block] @ fn.T
        cols.append(torch.topk(sim, k, dim=-1).indices)
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


def lattice_knn_graph(features: torch.Tensor, k: int, rows=None, cols=None, empty=None):
    """LATTICE: weighted top-k cosine graph (values = similarities, not normalised).

    ``rows``/``cols`` may be passed in when the neighbour selection is already known.
    Values are differentiable w.r.t. ``features``; the top-k *selection* is not (as with
    ``torch.topk`` in the reference). ``empty``: rows without content (no edges), see
    :func:`knn_indices`."""
    if rows is None:
        rows, cols = knn_indices(features.detach(), k, empty)
    return rows, cols, cosine_values(features, rows, cols)


@torch.no_grad()
def freedom_knn_graph(features: torch.Tensor, k: int):
    """FREEDOM: binary top-k graph, symmetrically normalised by row degree.

    Every row has exactly k entries, so every value is 1/k (reference: ``get_knn_adj_mat``);
    an all-zero row has none (:func:`knn_indices`)."""
    rows, cols = knn_indices(features, k)
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

    On CPU the product is done by SciPy's CSR kernel: torch's CPU CSR ``addmm`` zero-fills
    and copies its operands and result (three copies per call in the profile), which made
    it 1-3 ms against SciPy's ~0.9 ms on allrecipes' user-item graph (15.6k nodes, 64
    columns, one thread). Same sums in the same row order; floats may differ in the last bits."""

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
        return torch.from_numpy(fixed.sa @ x.detach().contiguous().numpy())

    @staticmethod
    def backward(ctx, grad):
        return torch.from_numpy(ctx.fixed.sat @ grad.contiguous().numpy()), None


class _ScipyPropagateMean(torch.autograd.Function):
    """mean(E, AE, ..., A^L E) on CPU in one autograd node: the layer sum is accumulated in
    place, and the backward is the same recursion with A^T, (g + A^T g + ... + (A^T)^L g) / (L+1),
    instead of L product nodes, L additions and a division, each a pass over the whole
    (users+items) x k matrix with its own allocation."""

    @staticmethod
    def forward(ctx, x, fixed, n_layers):
        ctx.fixed, ctx.n_layers = fixed, n_layers
        h = x.detach().contiguous().numpy()
        out = h.copy()
        for _ in range(n_layers):
            h = fixed.sa @ h
            out += h
        out *= np.float32(1.0 / (n_layers + 1))
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad):
        g = grad.contiguous().numpy()
        acc = g.copy()
        for _ in range(ctx.n_layers):
            g = ctx.fixed.sat @ g
            acc += g
        acc *= np.float32(1.0 / (ctx.n_layers + 1))
        return torch.from_numpy(acc), None, None


class _ScipyPropagateMeanSplit(torch.autograd.Function):
    """``_ScipyPropagateMean`` of ``[users; items]`` taking and returning the two blocks, so
    that no step concatenates the tables or slices the result (whose backward zero-fills a
    full-size gradient per slice and adds them)."""

    @staticmethod
    def forward(ctx, users, items, fixed, n_layers):
        ctx.fixed, ctx.n_layers, ctx.n_users = fixed, n_layers, users.shape[0]
        h = np.concatenate([users.detach().numpy(), items.detach().numpy()])
        out = h.copy()
        for _ in range(n_layers):
            h = fixed.sa @ h
            out += h
        out *= np.float32(1.0 / (n_layers + 1))
        t = torch.from_numpy(out)
        return t[: ctx.n_users], t[ctx.n_users :]

    @staticmethod
    def backward(ctx, gu, gi):
        nu = ctx.n_users
        g = np.empty((ctx.fixed.shape[0], (gu if gu is not None else gi).shape[1]), dtype=np.float32)
        g[:nu] = 0.0 if gu is None else gu.numpy()
        g[nu:] = 0.0 if gi is None else gi.numpy()
        acc = g.copy()
        for _ in range(ctx.n_layers):
            g = ctx.fixed.sat @ g
            acc += g
        acc *= np.float32(1.0 / (ctx.n_layers + 1))
        t = torch.from_numpy(acc)
        return t[:nu], t[nu:], None, None


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
            gv = (g.index_select(0, ctx.rows) * ctx.x.index_select(0, ctx.cols)).sum(1)
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

"""PyTorch modules of the shapes sparse-serve serves, computing exactly what
the engine computes (docs/checkpoint-format.md), so a model trained here and
exported with sparse_serve.export predicts the same on the server.

    DSM(d, o, experts, active_units, blocks=1, router="lsh")
        y = top(mask(x) * act(bottom(x))); bottom = nn.Linear(d, t),
        top = nn.Linear(t, o), t = blocks * experts * active_units. Each block
        keeps the `active_units` units of one expert slice (router lsh or
        kmeans), or (router="topk", experts=0, block_units=n: t = blocks * n)
        its active_units largest pre-activations.
    Dense(d, t, o)     the dense twin: top(act(bottom(x))) at full width.
    LshTable(...)      an LSH table model from its arrays (hyperplane hashes).

The lsh router's hyperplanes are fixed at construction (drawn to cut through
inputs in [-1, 1]^d, as sparse-train draws them) and not trained; kmeans
centroids are parameters you may set (e.g. from k-means on the data).
"""
import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "identity": nn.Identity}


def _activation(name):
    if name not in ACTIVATIONS:
        raise ValueError("activation must be relu or identity, got %r" % (name,))
    return ACTIVATIONS[name]()


class Dense(nn.Module):
    def __init__(self, d, t, o, activation="relu"):
        super().__init__()
        self.activation_name = activation
        self.bottom = nn.Linear(d, t)
        self.activation = _activation(activation)
        self.top = nn.Linear(t, o)

    def forward(self, x):
        return self.top(self.activation(self.bottom(x)))


class DSM(nn.Module):
    ROUTERS = ("lsh", "kmeans", "topk")

    def __init__(self, d, o, experts, active_units, blocks=1, router="lsh", activation="relu", seed=0,
                 block_units=None):
        super().__init__()
        if router not in self.ROUTERS:
            raise ValueError("router must be one of %s, got %r" % (", ".join(self.ROUTERS), router))
        if router == "lsh" and (experts < 2 or experts & (experts - 1)):
            raise ValueError("the lsh router needs a power-of-two number of experts >= 2, got %d" % experts)
        self.router_kind, self.activation_name = router, activation
        self.experts, self.active_units, self.blocks = experts, active_units, blocks
        if router == "topk":
            # No expert slices: each block of block_units keeps its k largest.
            if block_units is None or not 0 < active_units <= block_units:
                raise ValueError("topk needs block_units >= active_units > 0, got block_units=%s, "
                                 "active_units=%d" % (block_units, active_units))
            self.experts, self.width = 0, blocks * block_units
        else:
            self.width = blocks * experts * active_units
        self.bottom = nn.Linear(d, self.width)
        self.activation = _activation(activation)
        self.top = nn.Linear(self.width, o)
        g = torch.Generator().manual_seed(seed)
        if router == "lsh":
            r = experts.bit_length() - 1
            self.router = nn.Linear(d, blocks * r)
            with torch.no_grad():
                w = torch.randn(blocks * r, d, generator=g)
                self.router.weight.copy_(w)
                # Offsets so each hyperplane cuts through [-1, 1]^d along its
                # normal: b = -a.c for a point c in the box.
                c = torch.rand(blocks * r, d, generator=g) * 2 - 1
                self.router.bias.copy_(-(w * c).sum(1) * 0.5)
            self.router.requires_grad_(False)
        elif router == "kmeans":
            self.centroids = nn.Parameter(torch.rand(blocks * experts, d, generator=g) * 2 - 1)

    def expert_ids(self, x):
        """(rows, blocks) expert per block (lsh, kmeans)."""
        if self.router_kind == "lsh":
            r = self.experts.bit_length() - 1
            bits = (self.router(x) >= 0).reshape(-1, self.blocks, r).long()
            return (bits << torch.arange(r, device=x.device)).sum(-1)
        c = self.centroids.reshape(self.blocks, self.experts, -1)
        distance = ((x[:, None, None, :] - c[None]) ** 2).sum(-1)  # (rows, blocks, experts)
        return distance.argmin(-1)

    def mask(self, x, pre_activation):
        rows = x.shape[0]
        if self.router_kind == "topk":
            z = pre_activation.reshape(rows, self.blocks, -1)
            keep = z.topk(self.active_units, dim=-1).indices
            m = torch.zeros_like(z).scatter_(-1, keep, 1.0)
            return m.reshape(rows, -1)
        unit_expert = torch.arange(self.width // self.blocks, device=x.device) // self.active_units
        m = unit_expert[None, None, :] == self.expert_ids(x)[:, :, None]
        return m.reshape(rows, -1).to(x.dtype)

    def forward(self, x):
        z = self.bottom(x)
        return self.top(self.mask(x, z) * self.activation(z))


class LshTable(nn.Module):
    """y = sum_i alpha_i * g_i(x), g_i the value of table i's bucket for the
    key of x (or the table's fallback when that key is not stored).
    hyperplane family: bit j of table i's key is [a_ij . x + b_ij >= 0].

    projection: (tables * hashes, d); offset: (tables * hashes,);
    tables: one (keys, values, fallback) per table, keys strictly increasing
    integers, values (n, o) for degree 0 or (n, o, d + 1) for degree 1
    (W . [x; 1]), fallback (o,) or (o, d + 1); alpha: (tables,), default 1/s."""

    def __init__(self, projection, offset, tables, degree=0, alpha=None):
        super().__init__()
        self.degree, self.family = degree, "hyperplane"
        self.projection = torch.as_tensor(projection, dtype=torch.float32)
        self.offset = torch.as_tensor(offset, dtype=torch.float32)
        s = len(tables)
        if s == 0 or self.projection.shape[0] % s:
            raise ValueError("projection has %d rows, not a multiple of %d tables" % (self.projection.shape[0], s))
        self.hashes = self.projection.shape[0] // s
        if self.hashes > 62:
            raise ValueError("LshTable computes keys in int64: at most 62 hashes per table, got %d" % self.hashes)
        self.keys, self.values = [], []
        for k, v, _ in tables:  # sorted by key, for the lookup
            k, v = torch.as_tensor(k, dtype=torch.int64), torch.as_tensor(v, dtype=torch.float32)
            order = torch.argsort(k)
            self.keys.append(k[order])
            self.values.append(v[order])
        self.fallbacks = [torch.as_tensor(f, dtype=torch.float32) for _, _, f in tables]
        self.alpha = torch.full((s,), 1.0 / s) if alpha is None else torch.as_tensor(alpha, dtype=torch.float32)

    def arrays(self):
        """The keyword arguments of sparse_serve.export.export_lsh_table."""
        return {"projection": self.projection, "offset": self.offset, "degree": self.degree, "family": self.family,
                "alpha": self.alpha, "tables": list(zip(self.keys, self.values, self.fallbacks))}

    def bucket_keys(self, x):
        z = x @ self.projection.T + self.offset
        bits = (z >= 0).reshape(x.shape[0], len(self.keys), self.hashes).long()
        return (bits << torch.arange(self.hashes)).sum(-1)  # (rows, tables)

    def forward(self, x):
        keys = self.bucket_keys(x)
        y = 0
        for i, (stored, values, fallback) in enumerate(zip(self.keys, self.values, self.fallbacks)):
            if len(stored) == 0:
                chosen = fallback.expand(x.shape[0], *fallback.shape)
            else:
                at = torch.searchsorted(stored, keys[:, i].contiguous()).clamp(max=len(stored) - 1)
                found = stored[at] == keys[:, i]
                chosen = torch.where(found.reshape(-1, *([1] * fallback.dim())), values[at], fallback)
            if self.degree == 1:
                ones = torch.ones(x.shape[0], 1, dtype=x.dtype)
                chosen = (chosen @ torch.cat([x, ones], 1)[:, :, None])[..., 0]
            y = y + self.alpha[i] * chosen
        return y

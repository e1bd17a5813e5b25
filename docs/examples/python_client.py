#!/usr/bin/python3
"""docs/python.md's example: train a small DSM in PyTorch, export it into a
model repository that sparse-server polls, wait until it serves, and compare
the server's predictions and cost with PyTorch's.

    PYTHONPATH=build/python /usr/bin/python3 docs/examples/python_client.py \\
        127.0.0.1:8500 models/example_dsm
"""
import sys
import time

import numpy as np
import torch

import sparse_serve
from sparse_serve import export, nn

target, model_dir = sys.argv[1], sys.argv[2]
name = model_dir.rstrip("/").split("/")[-1]

# 1. Train: y = sum(sin(3x)) on [-1, 1]^8 with 8 experts of 16 units each.
torch.manual_seed(0)
model = nn.DSM(d=8, o=1, experts=8, active_units=16, router="lsh")
x = torch.rand(4096, 8) * 2 - 1
y = torch.sin(3 * x).sum(1, keepdim=True)
opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
for step in range(200):
    opt.zero_grad()
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
print("trained: mse %.4f (the target's variance is %.4f)" % (loss.item(), y.var().item()))

# 2. Export: a new version directory, published atomically.
print("exported", export.export_dsm(model, model_dir, info={"trained_with": "pytorch"}))

# 3. Wait for the server to load it, then predict.
with sparse_serve.Client(target) as client:
    deadline = time.time() + 60
    while True:
        try:
            if client.health(name):
                break
        except sparse_serve.SparseServeError:
            pass  # NOT_FOUND until the next rescan picks it up
        if time.time() > deadline:
            sys.exit("%s did not start serving within 60 s (is the server polling?)" % name)
        time.sleep(0.2)
    batch = np.random.default_rng(1).uniform(-1, 1, (4, 8)).astype(np.float32)
    p = client.predict(name, batch, route=True)
    dense = client.predict(name, batch, dense=True)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    print("server  :", np.round(p.outputs[:, 0], 5))
    print("pytorch :", np.round(expected[:, 0], 5))
    print("experts :", p.route.expert_ids[:, 0])
    print("FLOPs   : sparse %d, dense baseline %d (%.1fx fewer)"
          % (p.cost.flops, dense.cost.flops, dense.cost.flops / p.cost.flops))
    err = float(np.abs(p.outputs - expected).max())
    if err > 1e-5:
        sys.exit("the server's outputs differ from PyTorch's by %.2e" % err)

"""The reference workload's teacher phase in PyTorch, for comparison with nnops-train.

Same model (Linear(1000, 2000) -> ReLU -> Linear(2000, 1000)), MSE, Adam (lr 1e-3), batch 64,
8192 samples per epoch, float32, and the same thread count. Prints samples/s of the timed epochs.
Use the PyTorch a user installs from the Python package index, in a virtual environment:
    python3 -m venv .venv && .venv/bin/pip install torch
    OMP_NUM_THREADS=2 .venv/bin/python bench/torch_mlp.py --threads 2
and compare with:
    OMP_NUM_THREADS=2 build/cpu/examples/nnops-train --device cpu --epochs 2 \\
        --finetune-epochs 0 --distill-epochs 0
"""
import argparse
import time

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--samples", type=int, default=8192)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    x = torch.randn(a.samples, 1000)
    y = torch.randn(a.samples, 1000)
    model = torch.nn.Sequential(torch.nn.Linear(1000, 2000), torch.nn.ReLU(),
                                torch.nn.Linear(2000, 1000))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.MSELoss()
    batches = a.samples // a.batch
    for epoch in range(1, a.epochs + 1):
        order = torch.randperm(batches)
        t0 = time.perf_counter()
        total = 0.0
        for b in order.tolist():
            xb = x[b * a.batch:(b + 1) * a.batch]
            yb = y[b * a.batch:(b + 1) * a.batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.detach()
        total = float(total)  # one wait per epoch, as nnops-train
        dt = time.perf_counter() - t0
        print(f"torch {torch.__version__} epoch {epoch}: {batches * a.batch / dt:.0f} samples/s "
              f"({a.threads} threads, loss {total / batches:.4f})")


if __name__ == "__main__":
    main()

"""PyTorch's CPU times for the transformer ops that bench_ops times in nnops, on the same shapes
and thread count: causal F.scaled_dot_product_attention forward + backward at [B, H, T, D] =
[4, 12, 1024, 64] (F32), F.layer_norm and F.rms_norm forward at [8192, 4096].
Use the PyTorch a user installs from the Python package index, in a virtual environment:
    python3 -m venv .venv && .venv/bin/pip install torch
    .venv/bin/python bench/torch_attention.py --threads 2 [--json out.json]
Prints the median milliseconds of each; tools/bench-report puts them beside nnops' times.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def median_ms(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default="")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    results = {"torch": torch.__version__, "threads": a.threads}

    b, h, t, d = 4, 12, 1024, 64
    q, k, v = (torch.rand(b, h, t, d) * 2 - 1 for _ in range(3))
    for x in (q, k, v):
        x.requires_grad_(True)
    dout = torch.rand(b, h, t, d) * 2 - 1

    def attention():
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out.backward(dout)

    results["attention/4/12/1024"] = median_ms(attention, a.repeats)

    x = torch.rand(8192, 4096) * 2 - 1
    w, bias = torch.rand(4096), torch.rand(4096)
    with torch.no_grad():
        results["layer_norm_fwd/8192/4096"] = median_ms(
            lambda: F.layer_norm(x, (4096,), w, bias, 1e-5), a.repeats)
        results["rms_norm_fwd/8192/4096"] = median_ms(
            lambda: F.rms_norm(x, (4096,), w, 1e-5), a.repeats)
    for name, value in results.items():
        print(f"{name}: {value:.2f} ms" if isinstance(value, float) else f"{name}: {value}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

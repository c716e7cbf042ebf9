#!/usr/bin/env python3
"""nnops-gpt against PyTorch, step for step.

Runs nnops-gpt with --dump (its teacher phase from the initial weights, and its masked
fine-tuning phase after 2:4 pruning), rebuilds the same transformer in PyTorch from the dumped
safetensors, replays the dumped batches with the same AdamW, schedule and clipping, and compares
the per-step training losses. Prints both curves and the largest relative difference; exits 0
when every step agrees within --rtol, 1 otherwise.

  python3 bench/torch_gpt.py --nnops-gpt build/cpu/examples/nnops-gpt [--arch llama]

With --speed it instead times the teacher phase of the default model (tokens/s, peak memory) in
nnops-gpt and in PyTorch eager (and torch.compile with --compile) on the same batch size and
thread count (FP32).
Needs torch >= 2.4 (nn.RMSNorm, scaled_dot_product_attention with enable_gqa), numpy and
safetensors, from pip.
"""
import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, safe_open


class RoundGrad(torch.autograd.Function):
    """Identity forward; the gradient rounded to BF16 (nnops-gpt rounds a product's dy)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g.to(torch.bfloat16).float()


def bf(t):
    """t rounded to BF16, in float32; its gradient reaches t unchanged (the FP32 master)."""
    return t + (t.to(torch.bfloat16).float() - t).detach()


def product(cfg, x, weight, bias=None):
    """x w^T + b: in FP32, or as nnops-gpt --precision bf16 computes it (BF16 operands,
    FP32 sums and output, the output's gradient rounded to BF16)."""
    if not cfg.bf16:
        return F.linear(x, weight, bias)
    return RoundGrad.apply(F.linear(bf(x), bf(weight), bias))


class Config:
    def __init__(self, meta):
        self.arch = meta["arch"]
        self.bf16 = meta.get("precision", "fp32") == "bf16"
        for key in ("layers", "heads", "kv_heads", "dim", "context", "vocab"):
            setattr(self, key, int(meta[key]))
        self.norm_eps = float(meta.get("norm_eps", 1e-5))
        self.rope_theta = float(meta.get("rope_theta", 10000.0))
        self.head_dim = self.dim // self.heads
        self.hidden = 4 * self.dim if self.arch == "gpt2" else (8 * self.dim // 3 + 31) // 32 * 32


def norm(cfg):
    if cfg.arch == "gpt2":
        return nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
    return nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)


def rotary(x, theta):
    """Rotate-half RoPE on [B, H, T, D]: pair (i, i + D/2) turned by pos * theta^(-2i/D)."""
    t, d = x.shape[-2], x.shape[-1]
    inv = theta ** (-torch.arange(0, d // 2, dtype=torch.float64) * 2.0 / d)
    angles = torch.arange(t, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        bias = cfg.arch == "gpt2"
        d = cfg.head_dim
        self.cfg = cfg
        self.q = nn.Linear(cfg.dim, cfg.heads * d, bias=bias)
        self.k = nn.Linear(cfg.dim, cfg.kv_heads * d, bias=bias)
        self.v = nn.Linear(cfg.dim, cfg.kv_heads * d, bias=bias)
        self.proj = nn.Linear(cfg.heads * d, cfg.dim, bias=bias)

    def forward(self, x):
        b, t, _ = x.shape
        c = self.cfg
        q = product(c, x, self.q.weight, self.q.bias).view(b, t, c.heads, c.head_dim).transpose(1, 2)
        k = product(c, x, self.k.weight, self.k.bias).view(b, t, c.kv_heads, c.head_dim)
        v = product(c, x, self.v.weight, self.v.bias).view(b, t, c.kv_heads, c.head_dim)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        if c.arch == "llama":
            q, k = rotary(q, c.rope_theta), rotary(k, c.rope_theta)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           enable_gqa=c.heads != c.kv_heads)
        y = y.transpose(1, 2).reshape(b, t, c.heads * c.head_dim)
        return product(c, y, self.proj.weight, self.proj.bias)


class Mlp(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gpt2 = cfg.arch == "gpt2"
        self.cfg = cfg
        width = cfg.hidden if self.gpt2 else 2 * cfg.hidden  # llama: gate rows, then up rows
        self.fc = nn.Linear(cfg.dim, width, bias=self.gpt2)
        self.proj = nn.Linear(cfg.hidden, cfg.dim, bias=self.gpt2)

    def forward(self, x):
        h = product(self.cfg, x, self.fc.weight, self.fc.bias)
        if self.gpt2:
            a = F.gelu(h, approximate="tanh")
        else:
            gate, up = h.chunk(2, dim=-1)
            a = F.silu(gate) * up
        return product(self.cfg, a, self.proj.weight, self.proj.bias)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = norm(cfg), Attention(cfg), norm(cfg), Mlp(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Gpt(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab, cfg.dim)
        if cfg.arch == "gpt2":
            self.wpe = nn.Embedding(cfg.context, cfg.dim)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = norm(cfg)
        if cfg.arch == "llama":
            self.lm_head = nn.Linear(cfg.dim, cfg.vocab, bias=False)

    def forward(self, idx):
        x = self.wte(idx)
        if self.cfg.arch == "gpt2":
            x = x + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        head = self.wte.weight if self.cfg.arch == "gpt2" else self.lm_head.weight
        return product(self.cfg, x, head)


def learning_rate(step, steps, warmup, peak, min_ratio):
    """nnops-gpt's schedule: linear warm-up, then a cosine to min_ratio * peak."""
    if warmup > 0 and step <= warmup:
        return peak * step / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def replay(folder, phase):
    """Trains the PyTorch model over nnops-gpt's dumped batches; returns (nnops, torch) losses."""
    start = os.path.join(folder, phase + "-start.safetensors")
    with safe_open(start, "pt") as f:
        meta = f.metadata()
    cfg = Config(meta)
    tensors = load_file(start)
    model = Gpt(cfg)
    names = set(model.state_dict().keys())
    model.load_state_dict({k: v for k, v in tensors.items() if k in names}, strict=True)
    masks = {k[: -len("_mask")]: v.bool() for k, v in tensors.items() if k.endswith("_mask")}
    params = dict(model.named_parameters())
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    wd = float(meta["weight_decay"])
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=0.0, betas=(float(meta["beta1"]), float(meta["beta2"])),
                            eps=float(meta["eps"]))
    steps_file = load_file(os.path.join(folder, phase + "-steps.safetensors"))
    windows, nnops_loss, nnops_lr = steps_file["windows"].long(), steps_file["loss"], steps_file["lr"]
    steps, clip = int(meta["steps"]), float(meta["clip"])
    torch_loss = []
    for s in range(1, steps + 1):
        w = windows[s - 1]
        logits = model(w[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for name, m in masks.items():  # a pruned weight gets no gradient (prune's weight_orig)
            params[name].grad.mul_(m)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        lr = learning_rate(s, steps, int(meta["warmup"]), float(meta["lr"]),
                           float(meta["min_lr_ratio"]))
        if abs(lr - float(nnops_lr[s - 1])) > 1e-6 * max(lr, 1e-12):
            raise SystemExit(f"{phase} step {s}: nnops-gpt used lr {float(nnops_lr[s - 1])}, "
                             f"this script computes {lr}")
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        with torch.no_grad():
            for name, m in masks.items():
                params[name].mul_(m)
        torch_loss.append(loss.item())
    return [float(x) for x in nnops_loss], torch_loss


def parity(args):
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workdir or tmp
        cmd = [args.nnops_gpt, "--device", "cpu", "--arch", args.arch,
               "--layers", "2", "--dim", "64", "--heads", "4", "--context", "64",
               "--batch", "4", "--steps", str(args.steps), "--finetune-steps", str(args.steps),
               "--distill-steps", "0", "--warmup", "5", "--lr", "3e-3", "--finetune-lr", "1e-3",
               "--corpus-bytes", "100000", "--eval-batches", "1", "--log-every", str(args.steps),
               "--student-layers", "1", "--student-dim", "32", "--precision", args.precision,
               "--dump", folder]
        if args.arch == "llama":
            cmd += ["--kv-heads", "2"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        worst = 0.0
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, arch {args.arch}, "
              f"{args.precision}")
        for phase in ("teacher", "finetune"):
            ours, theirs = replay(folder, phase)
            print(f"{phase}{' (2:4 masks)' if phase == 'finetune' else ''}:")
            print(f"  {'step':>4} {'nnops':>12} {'torch':>12} {'rel diff':>10}")
            for i, (a, b) in enumerate(zip(ours, theirs)):
                rel = abs(a - b) / abs(b)
                worst = max(worst, rel)
                print(f"  {i + 1:4d} {a:12.7f} {b:12.7f} {rel:10.2e}")
    ok = worst <= args.rtol
    print(f"largest relative difference {worst:.3e} (tolerance {args.rtol:g}): "
          f"{'agree' if ok else 'DISAGREE'}")
    return 0 if ok else 1


def status_mib(field):
    """A memory figure of this process from /proc/self/status, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def speed(args):
    """Teacher-phase tokens/s and peak memory: nnops-gpt's own figures against PyTorch eager (and
    torch.compile with --compile) on the same model, batch and thread count, in FP32 or in BF16
    mixed precision (nnops-gpt --precision bf16 against torch.autocast to bfloat16: both keep
    FP32 weights and run the products in BF16). With --rounds N the two alternate N times, each
    ratio pairing runs seconds apart (a shared machine's speed drifts by tens of percent within
    minutes), and the median ratio is printed last."""
    bf16 = args.precision == "bf16"
    steps = args.steps
    before_model = status_mib("VmRSS")  # torch and its libraries loaded, no model yet
    cfg = Config({"arch": args.arch, "layers": 4, "heads": 4, "kv_heads": 4, "dim": 256,
                  "context": 256, "vocab": 256})
    batch = 8
    gen = torch.Generator().manual_seed(1)

    def nnops_run():
        out = subprocess.run([args.nnops_gpt, "--device", "cpu", "--arch", args.arch,
                              "--steps", str(steps), "--finetune-steps", "0",
                              "--distill-steps", "0", "--log-every", str(steps),
                              "--eval-batches", "1", "--corpus-bytes", "400000",
                              "--precision", args.precision],
                             check=True, capture_output=True, text=True).stdout
        row = re.search(r"^\s+teacher\s+\S+\s+\S+\s+\S+\s+\d+\s+\d+\s+(\d+)", out, re.M)
        return float(row.group(1)), float(re.search(r"peak resident memory ([0-9.]+) MiB",
                                                    out).group(1))

    def tokens_per_second(model):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)

        def step():
            w = torch.randint(0, 256, (batch, cfg.context + 1), generator=gen)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(w[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, 256), w[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        for _ in range(3):  # warm-up (and compilation)
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return steps * batch * cfg.context / (time.perf_counter() - t0)

    print(f"teacher phase, {args.arch} 4 layers dim 256 context 256 batch 8, "
          f"{'BF16 mixed precision' if bf16 else 'FP32'}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    ratios = []
    for r in range(args.rounds):
        nnops_tps, nnops_mib = nnops_run()
        eager = tokens_per_second(Gpt(cfg))
        torch_mib = status_mib("VmHWM")
        ratios.append(nnops_tps / eager)
        label = f" (round {r + 1})" if args.rounds > 1 else ""
        print(f"  nnops-gpt         {nnops_tps:8.0f} tok/s   peak RSS {nnops_mib:7.1f} MiB{label}")
        print(f"  PyTorch eager     {eager:8.0f} tok/s   peak RSS {torch_mib:7.1f} MiB "
              f"({before_model:.0f} MiB of it before the model existed)")
        print(f"  nnops / eager     {nnops_tps / eager:8.2f}x")
    if args.rounds > 1:
        ordered = sorted(ratios)
        print(f"  nnops / eager over {args.rounds} rounds: median {statistics.median(ratios):.2f}x "
              f"(min {ordered[0]:.2f}, max {ordered[-1]:.2f})")
    if args.compile:
        try:
            compiled = tokens_per_second(torch.compile(Gpt(cfg)))
            print(f"  torch.compile     {compiled:8.0f} tok/s")
            print(f"  nnops / compiled  {nnops_tps / compiled:8.2f}x")
        except Exception as e:  # inductor needs a working C++ toolchain
            print(f"  torch.compile did not run here: {type(e).__name__}: {e}"[:300])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nnops-gpt", required=True, help="path to the nnops-gpt program")
    ap.add_argument("--arch", choices=("gpt2", "llama"), default="gpt2")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--rtol", type=float, help="default 1e-4 (fp32), 2e-2 (bf16)")
    ap.add_argument("--workdir", help="keep nnops-gpt's dump here (default: a temporary folder)")
    ap.add_argument("--speed", action="store_true", help="compare teacher-phase tokens/s instead")
    ap.add_argument("--compile", action="store_true", help="with --speed, time torch.compile too")
    ap.add_argument("--rounds", type=int, default=1,
                    help="with --speed, alternate the two this many times; the median ratio last")
    args = ap.parse_args()
    if args.rtol is None:
        args.rtol = 2e-2 if args.precision == "bf16" else 1e-4
    torch.manual_seed(0)
    return speed(args) if args.speed else parity(args)


if __name__ == "__main__":
    sys.exit(main())

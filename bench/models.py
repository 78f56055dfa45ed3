"""Forward+backward throughput of every registered model, against a bare ``nn.LSTM`` in the same process.

Two sizes: X-MethaneWet's (the registry defaults: hidden / d_model 8) and a realistic one (hidden / d_model 64,
d_ff 256). Inputs have X-MethaneWet's shape: 365 days, 5 dynamic and 10 static features. The reference is a plain
``nn.LSTM(15, H, 3 layers, batch_first)`` + ``Linear`` at the same hidden size, with the same loss and batch, so the
``vs_lstm_ref`` column is model samples/s ÷ reference samples/s (> 1 = faster than the plain LSTM), the median
over rounds in which model and reference alternate (robust to load changes on a shared machine).

    .venv/bin/python bench/models.py [--device cuda] [--batch 32] [--seconds 0.4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from xmw_ray.data.contract import ANNUAL_VARS, DYNAMIC_VARS, STATIC_VARS
from xmw_ray.models import MODELS, build_model
from xmw_ray.train.losses import masked_mse

#: Registered models that wrap another model (their cost is the wrapped models'): not benchmarked alone.
WRAPPERS = {"residual", "ensemble"}
N_DYN, N_STAT = len(DYNAMIC_VARS), len(STATIC_VARS) + len(ANNUAL_VARS)


def size_hparams(name: str, hidden: int) -> dict:
    """Hyper-parameters for a model of width ``hidden`` (None = the registry defaults, X-MethaneWet's sizes)."""
    fields = MODELS[name].hparam_fields()
    if "d_model" in fields:
        return {"d_model": hidden, "n_heads": 4, "d_ff": 4 * hidden}
    return {"hidden_size": hidden}


def throughput(step: Callable[[], None], batch: int, seconds: float, device: torch.device) -> float:
    """Samples/s of ``step`` (one forward+backward of ``batch`` samples) over at least ``seconds``."""
    n, start = 0, time.perf_counter()
    while True:
        step()
        n += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n * batch / elapsed


def paired(
    model_step: Callable[[], None],
    ref_step: Callable[[], None],
    args: argparse.Namespace,
    device: torch.device,
) -> tuple[float, float, float]:
    """Median samples/s of model and reference, and the median of their per-round ratio.

    Model and reference alternate in short rounds, so a load change on a shared machine hits both alike.
    """
    model_step(), ref_step()  # warm-up
    rates, refs = [], []
    for _ in range(args.rounds):
        refs.append(throughput(ref_step, args.batch, args.seconds, device))
        rates.append(throughput(model_step, args.batch, args.seconds, device))
    ratios = [r / q for r, q in zip(rates, refs, strict=True)]
    return statistics.median(rates), statistics.median(refs), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=0.4, help="minimum timed seconds per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating model/reference rounds")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    dyn = torch.randn(args.batch, 365, N_DYN, device=device)
    stat = torch.randn(args.batch, N_STAT, device=device)
    target = torch.randn(args.batch, 365, device=device)
    target[:, ::2] = float("nan")

    print(
        f"device={device} batch={args.batch} threads={args.threads} input=(B, 365, {N_DYN}) + (B, {N_STAT})"
    )
    print(f"{'model':<13}{'size':>5}{'params':>10}{'samples/s':>12}{'ref samples/s':>15}{'vs_lstm_ref':>13}")
    for hidden in (8, 64):
        ref_rnn = nn.LSTM(N_DYN + N_STAT, hidden, 3, batch_first=True).to(device)
        ref_head = nn.Linear(hidden, 1).to(device)
        ref_in = torch.cat([dyn, stat.unsqueeze(1).expand(-1, 365, -1)], dim=-1)

        def ref_step(rnn: nn.LSTM = ref_rnn, head: nn.Linear = ref_head, x: torch.Tensor = ref_in) -> None:
            rnn.zero_grad()
            masked_mse(head(rnn(x)[0]).squeeze(-1), target).backward()

        for name in sorted(n for n in MODELS if n not in WRAPPERS):
            hp = {} if hidden == 8 else size_hparams(name, hidden)
            model = build_model(name, N_DYN, N_STAT, **hp).to(device).train()

            def step(model: nn.Module = model) -> None:
                model.zero_grad()
                masked_mse(model.forward_normalized(dyn, stat), target).backward()

            rate, ref, ratio = paired(step, ref_step, args, device)
            n_params = sum(p.numel() for p in model.parameters())
            print(f"{name:<13}{hidden:>5}{n_params:>10}{rate:>12.1f}{ref:>15.1f}{ratio:>13.2f}", flush=True)


if __name__ == "__main__":
    main()

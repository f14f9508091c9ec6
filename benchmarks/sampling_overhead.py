"""MDM sampling overhead: the share of a sampler call spent outside the model's forward.

    python benchmarks/sampling_overhead.py --run runs/demo/mdm-E64 --threads 1

Times `sample_mdm` (low-confidence by default, one token per step, temperature 1) on a trained
run (or, without --run, a freshly initialised demo-size MDM) and, inside the same calls, every
forward of the model; prints the median share outside the forward over --repeats calls. The
forward is timed by wrapping the model's `forward` (on CPU the work is synchronous; on CUDA each
timing point synchronises, which the share then includes).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from unmask.config import ModelConfig
from unmask.model import Transformer
from unmask.sampling import SamplerConfig, sample_mdm


class TimedForward(torch.nn.Module):
    """The model, with the wall time of its forward calls added up in `seconds`."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.cfg, self.seconds = model, model.cfg, 0.0

    def forward(self, *args, **kwargs):
        sync = torch.cuda.synchronize if next(self.model.parameters()).is_cuda else (lambda: None)
        sync()  # host-device sync: only when timing on CUDA
        start = time.perf_counter()
        out = self.model(*args, **kwargs)
        sync()
        self.seconds += time.perf_counter() - start
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="MDM run directory; none = a random demo-size model")
    parser.add_argument("--n", type=int, default=8, help="sequences per call (one batch)")
    parser.add_argument("--length", type=int, default=63)
    parser.add_argument("--steps", type=int, default=None, help="default: one token per step")
    parser.add_argument("--method", default="low_confidence")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if args.run:
        from unmask.run import Run

        opened = Run(args.run)
        model, ids = opened.load_model("last", dev), opened.special_ids
        mask_id, banned, eod = ids.mask_id, (ids.pad_id, ids.mask_id), ids.eod_id
    else:
        torch.manual_seed(0)
        model = Transformer(ModelConfig(size="demo", vocab_size=1024, seq_len=64, causal=False)).to(dev).eval()
        mask_id, banned, eod = 1, (1, 2), 0
    timed = TimedForward(model)
    steps = args.steps or args.length
    sampler = SamplerConfig.from_flat(method=args.method, steps=steps, temperature=args.temperature)
    prompt = torch.full((args.n, 1), eod, device=dev)
    shares, totals = [], []
    for i in range(args.repeats + 1):  # the first call warms up
        timed.seconds = 0.0
        g = torch.Generator(dev).manual_seed(i)
        start = time.perf_counter()
        sample_mdm(timed, prompt, args.length, mask_id, sampler, banned, g)
        if dev.type == "cuda":
            torch.cuda.synchronize()  # host-device sync: the call's GPU work is done
        total = time.perf_counter() - start
        if i:
            shares.append(1 - timed.seconds / total)
            totals.append(total)
    print(
        f"{args.method}, {args.n} x {args.length} tokens in {steps} steps, temperature {args.temperature}, "
        f"{torch.get_num_threads()} thread(s), {dev}: call {statistics.median(totals) * 1000:.1f} ms (median of "
        f"{args.repeats}); outside the forward {100 * statistics.median(shares):.1f}% "
        f"(range {100 * min(shares):.1f}-{100 * max(shares):.1f}%)"
    )


if __name__ == "__main__":
    main()

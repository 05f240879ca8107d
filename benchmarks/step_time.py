"""Issue 4 benchmark 1: step time of bottom:K (K = 0..L) and head, cached and uncached,
fp32 and bf16, on minilm-l6 with SST-2 batches, each in its own process (for peak RSS).

A step = forward + backward + AdamW step on a batch of 32 SST-2 sentences (dynamic padding).
Each configuration runs two "epochs" over the same --steps batches: the first fills the cache
(when caching), the second is timed (median step and the epoch's sum). "Cached" steps start
above the frozen prefix from the stored states. Prints a Markdown table.

    python benchmarks/step_time.py --steps 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

SPECS = ["bottom:0", "bottom:1", "bottom:2", "bottom:3", "bottom:4", "bottom:5", "head"]


def measure(spec: str, cached: bool, bf16: bool, steps: int) -> dict:
    import torch

    from freezetune import RunConfig
    from freezetune.batching import Collator, make_loader, tokenize
    from freezetune.caching import make_caches
    from freezetune.freezing import apply_frozen, set_train_modes
    from freezetune.loop import autocast, forward
    from freezetune.optim import build_optimizer
    from freezetune.records import peak_rss_mb
    from freezetune.training import prepare

    config = RunConfig.from_dict(
        {
            "freeze": "full" if spec == "full" else spec,
            "data": {"task": "sst2", "max_train_samples": 32 * steps, "max_eval_samples": 8},
            "train": {"batch_size": 32, "bf16": bf16, "cache": cached, "progress": False},
            "out": "runs/bench-step-time-unused",
        }
    )
    setup = prepare(config)
    model, n = setup.model, setup.spec.frozen_units(setup.units.num_blocks)
    apply_frozen(model, setup.frozen)
    set_train_modes(model, setup.units, n, True)
    features = tokenize(setup.data.train, setup.loaded.processor)
    loader = make_loader(
        features,
        batch_size=32,
        shuffle=True,
        seed=0,
        collate=Collator.for_task(setup.loaded.processor, setup.data.task),
    )
    batches = list(loader)
    t = setup.config.train
    splits = {"train": features}
    cache = make_caches(model, setup.units, setup.spec, t, setup.out, splits, setup.modality).train
    cache = cache if cached else None
    optimizer = build_optimizer(model, setup.units, setup.spec, setup.config.optim)

    def step(batch: dict) -> float:
        started = time.perf_counter()
        with autocast(bf16, torch.device("cpu")):
            loss = forward(model, cache, dict(batch), n).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    # epoch 1 (fills the cache when caching), then epoch 2 over the very same batches
    fill = [step(b) for b in batches]
    timed = [step(b) for b in batches]
    return {
        "spec": spec,
        "cached": cached,
        "bf16": bf16,
        "s_per_step": statistics.median(timed),
        "epoch_s": sum(timed),
        "first_epoch_s": sum(fill),
        "peak_rss_mb": peak_rss_mb(),
        "cache_hits": cache.hits if cache else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        spec, cached, bf16 = args.one.split(",")
        print(json.dumps(measure(spec, cached == "1", bf16 == "1", args.steps)))
        return
    rows = []
    for bf16 in (False, True):
        for spec in ["full", *SPECS]:
            for cached in (False, True):
                if cached and spec in ("full", "bottom:0"):
                    continue  # nothing (or only the embeddings) to cache
                one = f"{spec},{int(cached)},{int(bf16)}"
                out = subprocess.run(
                    [sys.executable, __file__, "--one", one, "--steps", str(args.steps)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(
        "| precision | --freeze | cached | s/step | step vs full | epoch s | epoch vs full "
        "| first epoch s (fills the cache) | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = next(x for x in rows if x["spec"] == "full" and x["bf16"] == r["bf16"])
        print(
            f"| {'bf16' if r['bf16'] else 'fp32'} | {r['spec']} | {'yes' if r['cached'] else 'no'} "
            f"| {r['s_per_step']:.4f} | {base['s_per_step'] / r['s_per_step']:.2f}x "
            f"| {r['epoch_s']:.2f} | {base['epoch_s'] / r['epoch_s']:.2f}x "
            f"| {r['first_epoch_s']:.2f} | {r['peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()

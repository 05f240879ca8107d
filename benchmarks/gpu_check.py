"""One short check on a lent GPU machine: the CUDA path end to end.

1. Cached vs uncached forward on CUDA (tiny BERT and Llama, bf16 autocast) agree.
2. Real MiniLM-L6 on SST-2 (8,000 examples, 3 epochs, bf16): full fine-tuning, bottom:3 and
   autofreeze with and without caching, head with caching; accuracy, time and throughput.

Run there with the model folder, GLUE data and transformers wheel carried in ``.gpu/``:

    python benchmarks/gpu_check.py --model .gpu/minilm --data-dir .gpu/glue
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def equality_check() -> list[str]:
    from transformers import AutoConfig, AutoModel

    from freezetune.cache import PrefixCache
    from freezetune.classifier import FreezetuneConfig, FreezetuneForSequenceClassification
    from freezetune.modality import TEXT
    from freezetune.units import split_units

    lines = []
    for family, extra in (("bert", {}), ("llama", {"num_key_value_heads": 2, "head_dim": 32})):
        torch.manual_seed(0)
        config = AutoConfig.for_model(
            family,
            vocab_size=512,
            hidden_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=256,
            **extra,
        )
        encoder = AutoModel.from_config(config)
        head = FreezetuneConfig(
            encoder=encoder.config, num_labels=2, pooling="last" if family == "llama" else "mean"
        )
        model = FreezetuneForSequenceClassification(head, encoder=encoder).cuda().eval()
        lengths = [17, 9, 12, 5]
        ids = torch.randint(3, 500, (4, 17), device="cuda")
        mask = (
            torch.arange(17, device="cuda")[None] < torch.tensor(lengths, device="cuda")[:, None]
        ).long()
        batch = {
            "input_ids": ids * mask,
            "attention_mask": mask,
            "labels": torch.tensor([0, 1, 0, 1], device="cuda"),
        }
        for level in (2, 3, 5):
            cache = PrefixCache(model, split_units(model), lengths, shapes=TEXT)
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                expected = model(**batch).logits.float()
                cache.forward({**batch, "index": torch.arange(4, device="cuda")}, level)
                got = cache.forward({**batch, "index": torch.arange(4, device="cuda")}, level)
            diff = (got.logits.float() - expected).abs().max().item()
            lines.append(
                f"{family} level {level}: hits {cache.hits}, max |cached - uncached| "
                f"logit = {diff:.2e}"
            )
    return lines


RUNS = {
    "full": "full",
    "bottom:3 uncached": "bottom:3",
    "bottom:3 cached": "bottom:3",
    "autofreeze uncached": "autofreeze",
    "autofreeze cached": "autofreeze",
    "head cached": "head",
}


def training_runs(model: str, data_dir: str, out: Path) -> list[str]:
    from freezetune import RunConfig, train

    rows = [
        "| run | dev acc (final) | train time s | train examples/s | vs full |",
        "|---|---|---|---|---|",
    ]
    base = None
    for name, freeze in RUNS.items():
        config = RunConfig.from_dict(
            {
                "model": {"name": model},
                "data": {"task": "sst2", "data_dir": data_dir, "max_train_samples": 8000},
                "optim": {"lr": 1e-3 if freeze == "head" else 1e-4},
                "train": {
                    "epochs": 3,
                    "batch_size": 32,
                    "bf16": True,
                    "progress": False,
                    "cache": "uncached" not in name,
                },
                "freeze": freeze,
                "out": str(out / name.replace(" ", "-").replace(":", "")),
                "overwrite": True,
            }
        )
        started = time.perf_counter()
        r = train(config).to_dict()
        total = time.perf_counter() - started
        base = base or r["train_time_s"]
        rows.append(
            f"| {name} | {r['final']['accuracy']:.4f} | {r['train_time_s']:.1f} | "
            f"{r['train_examples_per_s']:.0f} | {base / r['train_time_s']:.2f}x |"
        )
        print(
            json.dumps({"run": name, "process_s": round(total, 1), "cache": r["cache"]}), flush=True
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=".gpu/minilm")
    parser.add_argument("--data-dir", default=".gpu/glue")
    parser.add_argument("--out", default="/tmp/freezetune-gpu")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    print("\n".join(equality_check()), flush=True)
    print("\n".join(training_runs(args.model, args.data_dir, Path(args.out))), flush=True)


if __name__ == "__main__":
    main()

"""Issue 4 benchmark 2: the same full fine-tuning run in Hugging Face ``Trainer`` and in
``freezetune train``, one after the other in this process's machine state.

Same model (minilm-l6 with BERT's pooler head: exactly BertForSequenceClassification's
architecture), same seeded SST-2 subset, batch size, max length, epochs, LR schedule, weight
decay, bf16 autocast and dynamic padding. Trainer is written as the Hugging Face course's
fine-tuning chapter does (TrainingArguments + DataCollatorWithPadding). Prints a table.

    python benchmarks/trainer_peer.py --max-train-samples 4000 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_trainer(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from freezetune.models import resolve_model_path
    from freezetune.tasks import load_task

    path = resolve_model_path("minilm-l6")
    data = load_task("sst2", max_train_samples=args.max_train_samples, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(path)

    def encode(examples: list) -> list[dict]:
        texts = [e.texts[0] for e in examples]
        enc = tokenizer(texts, truncation=True, max_length=args.max_length)
        return [
            {
                "input_ids": enc["input_ids"][i],
                "attention_mask": enc["attention_mask"][i],
                "token_type_ids": enc["token_type_ids"][i],
                "labels": e.label,
            }
            for i, e in enumerate(examples)
        ]

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    training_args = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=128,
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        warmup_steps=0.1,  # v5: a float < 1 is a ratio of the steps
        weight_decay=0.01,
        lr_scheduler_type="linear",
        bf16=True,
        use_cpu=True,
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        seed=0,
        logging_steps=1000,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=encode(data.train),
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    predictions = trainer.predict(encode(data.validation))
    accuracy = float((np.argmax(predictions.predictions, -1) == predictions.label_ids).mean())
    return {
        "train_time_s": seconds,
        "examples_per_s": len(data.train) * args.epochs / seconds,
        "accuracy": accuracy,
    }


def run_freezetune(args: argparse.Namespace, out: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "freezetune",
        "train",
        "--task",
        "sst2",
        "--freeze",
        "full",
        "--pooling",
        "pooler",
        "--max-train-samples",
        str(args.max_train_samples),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
        "--max-length",
        str(args.max_length),
        "--bf16",
        "--seed",
        "0",
        "--no-progress",
        "--out",
        str(out),
        "--overwrite",
    ]
    subprocess.run(command, check=True)
    result = json.loads((out / "result.json").read_text())
    return {
        "train_time_s": result["train_time_s"],
        "examples_per_s": result["train_examples_per_s"],
        "accuracy": result["final"]["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-train-samples", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--out", default="runs/bench/trainer-peer")
    parser.add_argument("--only", choices=["trainer", "freezetune"])
    args = parser.parse_args()
    if args.only == "trainer":
        print(json.dumps(run_trainer(args)))
        return
    trainer_out = subprocess.run(
        [sys.executable, __file__, "--only", "trainer", *sys.argv[1:]],
        check=True,
        capture_output=True,
        text=True,
    )
    hf = json.loads(trainer_out.stdout.strip().splitlines()[-1])
    ft = run_freezetune(args, Path(args.out))
    print("| run | train time s | train examples/s | dev accuracy (end) |")
    print("|---|---|---|---|")
    for name, r in (("HF Trainer", hf), ("freezetune train --freeze full", ft)):
        print(
            f"| {name} | {r['train_time_s']:.1f} | {r['examples_per_s']:.1f} | "
            f"{r['accuracy']:.4f} |"
        )
    print(f"\nfreezetune / Trainer throughput: {ft['examples_per_s'] / hf['examples_per_s']:.2f}x")


if __name__ == "__main__":
    main()

"""The Hugging Face course's fine-tuning script (chapter 3, "Fine-tuning a model with the
Trainer API"), with freezetune's callback added: the lines marked ``# freezetune``.

    python examples/trainer_course.py --freeze autofreeze --train-samples 2000

The course loads GLUE MRPC from the hub and bert-base-uncased; offline, this loads SST-2 from
the local GLUE folder (``$FREEZETUNE_GLUE_DIR``) with ``datasets``' csv reader and uses the
packaged all-MiniLM-L6-v2. Everything else is the course's code.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from datasets import load_dataset
from sklearn.metrics import accuracy_score
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from freezetune.integrations.transformers import FreezeCallback  # freezetune
from freezetune.models import resolve_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--freeze", default="autofreeze", help="any freezetune --freeze spec")
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--out", default="runs/trainer-course")
    args = parser.parse_args()

    glue = Path(os.environ.get("FREEZETUNE_GLUE_DIR", "../shared/data/glue")) / "SST-2"
    files = {"train": str(glue / "train.tsv"), "validation": str(glue / "dev.tsv")}
    raw = load_dataset("csv", data_files=files, delimiter="\t", quoting=3)
    raw["train"] = raw["train"].shuffle(seed=0).select(range(args.train_samples))
    checkpoint = resolve_model_path("minilm-l6")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)

    def tokenize_function(example):
        return tokenizer(example["sentence"], truncation=True, max_length=64)

    tokenized = raw.map(tokenize_function, batched=True).remove_columns(["sentence"])
    collator = DataCollatorWithPadding(tokenizer=tokenizer)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=2)

    def compute_metrics(eval_preds):
        logits, labels = eval_preds
        return {"accuracy": accuracy_score(labels, np.argmax(logits, axis=-1))}

    training_args = TrainingArguments(
        args.out,
        eval_strategy="epoch",
        num_train_epochs=2,
        learning_rate=1e-4,
        per_device_train_batch_size=32,
        bf16=True,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
    )
    freeze = FreezeCallback(args.freeze)  # freezetune
    trainer = Trainer(
        model,
        training_args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        callbacks=[freeze],  # freezetune
        optimizers=freeze.optimizers(model, training_args),  # freezetune (for llrd & co.)
    )
    trainer.train()
    print(trainer.evaluate())
    print(freeze.changes[-1]["trainable"])  # freezetune: what trains at the end


if __name__ == "__main__":
    main()

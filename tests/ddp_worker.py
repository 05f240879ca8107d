"""Launched by tests under torchrun: train each config given, then save this rank's weights.

    torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py CONFIGS.json

Each rank writes ``<out>/rank<R>.safetensors`` with its final parameters, so a test can check
that replicas are bit-identical and match a single-process run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from freezetune import distributed
from freezetune.config import RunConfig
from freezetune.training import prepare, train


def main() -> None:
    d = distributed.init_from_env()
    try:
        for config_dict in json.loads(Path(sys.argv[1]).read_text()):
            config = RunConfig.from_dict(config_dict)
            setup = prepare(config)
            train(setup)
            weights = {n: p.detach().contiguous() for n, p in setup.model.named_parameters()}
            save_file(weights, Path(config.out) / f"rank{d.rank}.safetensors")
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()

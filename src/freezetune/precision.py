"""Mixed precision: bf16 autocast where a run asks for it (``--bf16``), on any device."""

from __future__ import annotations

import torch

__all__ = ["autocast"]


def autocast(enabled: bool, device: torch.device) -> torch.autocast:
    """bf16 autocast on ``device`` when ``enabled``; a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)

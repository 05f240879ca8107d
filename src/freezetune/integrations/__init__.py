"""freezetune inside other people's training loops.

``freezetune.integrations.transformers.FreezeCallback`` applies any ``--freeze`` spec or
schedule to the model a Hugging Face ``Trainer`` trains. Nothing is imported here: the
integration modules import their framework, so ``import freezetune`` stays cheap.
"""

from __future__ import annotations

__all__: list[str] = []

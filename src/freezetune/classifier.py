"""A sequence classifier over any Hugging Face base model, with a choice of pooling.

Hugging Face's ``*ForSequenceClassification`` classes hard-wire the pooling (BERT: the tanh
pooler over ``[CLS]``; GPT-2: the last token). Sentence-embedding models such as
all-MiniLM-L6-v2 were trained to be *mean*-pooled, and a head on their ``[CLS]`` pooler stays
near chance when the body is frozen. So freezetune wraps the base model (``encoder``) with its
own pooling + linear head, registered with the Auto classes so that, once ``freezetune`` is
imported, ``AutoModelForSequenceClassification.from_pretrained(out_dir)`` and
``transformers.pipeline("text-classification", model=out_dir)`` load a saved run.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import SequenceClassifierOutput

from freezetune.errors import UserError
from freezetune.families import hidden_size

__all__ = ["POOLINGS", "FreezetuneConfig", "FreezetuneForSequenceClassification", "pool"]

POOLINGS = ("pooler", "cls", "mean", "last")


class FreezetuneConfig(PreTrainedConfig):
    """Config of :class:`FreezetuneForSequenceClassification`: the base model's config + head."""

    model_type = "freezetune"
    sub_configs_defaults = {  # noqa: RUF012 (transformers reads this class attribute)
        "encoder": SubConfigSpec(config_class=AutoConfig, model_type="bert")
    }

    encoder: PreTrainedConfig | dict | None = None
    pooling: str = "mean"
    classifier_dropout: float = 0.1


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str, pooler_output: Any = None):
    """Reduce ``hidden`` [batch, seq, dim] to [batch, dim].

    >>> pool(torch.ones(1, 3, 2), torch.tensor([[1, 1, 0]]), "mean").tolist()
    [[1.0, 1.0]]
    """
    if how == "pooler":
        return pooler_output
    if how == "cls":
        return hidden[:, 0]
    if how == "mean":  # masked mean: padding must not dilute the average
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    if how == "last":  # last non-padding token, whichever side was padded
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask.long() * positions).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling {how!r}; choose one of {', '.join(POOLINGS)}")


class FreezetuneForSequenceClassification(PreTrainedModel):
    """``encoder`` (any ``AutoModel``) -> pooling -> dropout -> ``classifier`` (linear)."""

    config_class = FreezetuneConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True

    # forward(**kwargs) would make Trainer think the loss is normalised by num_items_in_batch
    # here, and under gradient accumulation it would then never divide the loss
    accepts_loss_kwargs = False
    _supports_sdpa = True
    _supports_flash_attn = True

    def __init__(self, config: FreezetuneConfig, encoder: nn.Module | None = None):
        super().__init__(config)
        encoder_config: Any = config.encoder
        self.encoder = encoder if encoder is not None else AutoModel.from_config(encoder_config)
        if getattr(self.encoder.config, "_attn_implementation", None) is None:
            # wrapping an existing encoder's config resets its attention backend to None, and
            # attention then silently ignores the padding mask: re-set it (and sub-configs)
            self.config._attn_implementation = self.config._attn_implementation or "sdpa"
        # an unused pooler would be counted as trainable and never get a gradient: drop it
        if config.pooling != "pooler" and getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None
        hidden = hidden_size(encoder_config)
        if hidden is None:
            kind = getattr(encoder_config, "model_type", type(self.encoder).__name__)
            raise UserError(
                f"cannot tell the hidden size of the {kind} encoder; set hidden_size in its config"
            )
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(hidden, int(config.num_labels or 2))
        self._encoder_kwargs = set(inspect.signature(self.encoder.forward).parameters)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # only the head is ours to initialise; the encoder comes pretrained (or from its own init)
        if module is getattr(self, "classifier", None):
            assert isinstance(module, nn.Linear)
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            assert input_ids is not None
            attention_mask = torch.ones_like(input_ids)
        extra = {k: v for k, v in kwargs.items() if k in self._encoder_kwargs and v is not None}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra)
        return self.head_forward(out.last_hidden_state, attention_mask, labels, out)

    def head_forward(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        encoder_output: Any = None,
    ) -> SequenceClassifierOutput:
        """Pool the last hidden state, classify, and compute the loss when labels are given."""
        pooler_output = getattr(encoder_output, "pooler_output", None)
        pooled = pool(hidden, attention_mask, self.config.pooling, pooler_output)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:  # regression
                loss = nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


AutoConfig.register("freezetune", FreezetuneConfig, exist_ok=True)
AutoModelForSequenceClassification.register(
    FreezetuneConfig, FreezetuneForSequenceClassification, exist_ok=True
)

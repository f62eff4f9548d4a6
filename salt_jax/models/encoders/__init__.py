"""ImageNet backbones for the U-Nets (SPEC 3.3): registry entries of one `ResNet`, stem max-pool removed.

Every encoder is a linen module with field `dtype` (compute dtype; params stay float32), called as
`encoder(x (B,H,W,3), train)` and returning (c2, c3, c4, c5) = layer1..layer4 outputs at strides 2, 4,
8, 16. Keys are timm model names (and the IBN-Net release name); weights import with
`salt_jax.models.convert.torch_to_flax`. Parameter names follow each release: timm's conv1, bn1,
layer{i}.{j}.conv1/bn1/.., .se.fc1/.fc2, .downsample.0/.1; legacy SENet (Cadene weights) puts the stem in
layer0 and names SE `se_module`; IBN-Net's IBN-a bn1 holds .IN/.BN.
"""
from functools import partial
from typing import Callable, Dict

import flax.linen as nn

from salt_jax.models.encoders.common import BasicBlock, Bottleneck
from salt_jax.models.encoders.resnet import STEM_DEEP, ResNet

_RESNEXT_32X4D = partial(Bottleneck, widths=(2, 2), groups=32)

ENCODERS: Dict[str, Callable[..., nn.Module]] = {
    # layer1..layer4: 64, 128, 256, 512 channels.
    "resnet34": partial(ResNet, (3, 4, 6, 3), BasicBlock),
    # layer1..layer4 of the rest: 256, 512, 1024, 2048 channels; stride on the grouped 3x3, SE before the sum.
    "seresnext50_32x4d": partial(ResNet, (3, 4, 6, 3), partial(_RESNEXT_32X4D, se_name="se")),
    "seresnext101_32x4d": partial(ResNet, (3, 4, 23, 3), partial(_RESNEXT_32X4D, se_name="se")),
    # Legacy SE-ResNet-152: stride on the first 1x1.
    "legacy_seresnet152": partial(ResNet, (3, 8, 36, 3),
                                  partial(Bottleneck, stride_on_1x1=True, se_name="se_module"),
                                  stem_name="layer0"),
    # Legacy SENet-154: deep stem to 128 channels, 3x3 projection shortcuts (padding 1) in layer2..4.
    "legacy_senet154": partial(ResNet, (3, 8, 36, 3),
                               partial(Bottleneck, widths=(2, 4), groups=64, se_name="se_module"),
                               stem=STEM_DEEP, stem_name="layer0", downsample_kernels=(1, 3, 3, 3)),
    # IBN-Net release: IBN-a in layer1..3, no SE.
    "resnext101_ibn_a": partial(ResNet, (3, 4, 23, 3), _RESNEXT_32X4D, ibn_stages=(True, True, True, False)),
    # CPU-sized runs only (configs/cpu_small.py), no ImageNet weights: a quarter-width ResNet-18,
    # layer1..layer4 16, 32, 64, 128 channels.
    "resnet_tiny": partial(ResNet, (2, 2, 2, 2), BasicBlock, widths=(16, 32, 64, 128), stem=((16, 7, 2),)),
    "resnet_small": partial(ResNet, (2, 2, 2, 2), BasicBlock, widths=(24, 48, 96, 192), stem=((24, 7, 2),)),
}


def get_encoder(name: str, /, **kw) -> nn.Module:
  """Instantiates ENCODERS[name](**kw), e.g. get_encoder('resnet34', dtype=jnp.bfloat16, name='encoder')."""
  if name not in ENCODERS:
    raise ValueError(f"unknown encoder {name!r}; choose from {sorted(ENCODERS)}")
  return ENCODERS[name](**kw)


__all__ = ["ENCODERS", "get_encoder", "ResNet", "BasicBlock", "Bottleneck"]

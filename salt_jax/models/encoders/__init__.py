"""ImageNet backbones for the U-Nets (SPEC 3.3), stem max-pool removed.

Every encoder is a linen module with fields `dtype` (compute dtype; params stay float32) and
`bn_axis_name` (cross-device BatchNorm under pmap), called as `encoder(x (B,H,W,3), train)` and
returning (c2, c3, c4, c5) = layer1..layer4 outputs at strides 2, 4, 8, 16. Keys are timm model names
(and the IBN-Net release name); weights import with `salt_jax.models.convert.torch_to_flax`.
"""
from typing import Dict, Tuple

import flax.linen as nn

from salt_jax.models.encoders.resnet import ResNet34, ResNetTiny, SEResNeXt50, SEResNeXt101
from salt_jax.models.encoders.resnext_ibn import ResNeXt101IBNa
from salt_jax.models.encoders.senet import SENet154, SEResNet152

ENCODERS: Dict[str, type] = {
    "resnet34": ResNet34,
    "seresnext50_32x4d": SEResNeXt50,
    "seresnext101_32x4d": SEResNeXt101,
    "legacy_seresnet152": SEResNet152,
    "legacy_senet154": SENet154,
    "resnext101_ibn_a": ResNeXt101IBNa,
    "resnet_tiny": ResNetTiny,  # CPU-sized runs only; no ImageNet weights
}

ENCODER_CHANNELS: Dict[str, Tuple[int, int, int, int]] = {
    name: (64, 128, 256, 512) if name == "resnet34" else (256, 512, 1024, 2048) for name in ENCODERS}
ENCODER_CHANNELS["resnet_tiny"] = ResNetTiny.widths


def get_encoder(name: str, /, **kw) -> nn.Module:
  """Instantiates ENCODERS[name](**kw), e.g. get_encoder('resnet34', dtype=jnp.bfloat16, name='encoder')."""
  if name not in ENCODERS:
    raise ValueError(f"unknown encoder {name!r}; choose from {sorted(ENCODERS)}")
  return ENCODERS[name](**kw)


__all__ = ["ENCODERS", "ENCODER_CHANNELS", "get_encoder", "ResNet34", "ResNetTiny", "SEResNeXt50", "SEResNeXt101",
           "SEResNet152", "SENet154", "ResNeXt101IBNa"]

"""The three U-Net families (SPEC 3.4-3.6) built from `blocks` on an encoder from `encoders`.

All map (B,H,W,3) -> (class_logits (B,2), no_empty_logits (B,H,W,1), final_logits (B,H,W,1)), float32
raw logits. The encoder submodule is named `encoder`, so ImageNet weights live at params['encoder'].
H = W = 128 in the original; any multiple of 32 works here (the center broadcast follows the feature size).

Dropout knobs: `decoder_dropout` is the rate of the dropout calls that never ran in the original
(post-concat in `Decoder` and on the hypercolumn, SPEC 10.1; default 0.0 = faithful); `head_dropout` is the
channel dropout inside the two segmentation heads (0.5 for 101A/101B, where it was real, SPEC 3.6).
"""
from typing import Any, Tuple

import flax.linen as nn
import jax.numpy as jnp

from salt_jax.models import encoders as encoders_lib
from salt_jax.models.blocks import (ClassHead, Center, Decoder, DecoderBottleneckStage,
                                    IBNaDecoderBlock, Lateral, SegHead, SELayer, broadcast_center,
                                    channel_dropout, hypercolumn)
from salt_jax.models.layers import resize_bilinear

Dtype = Any


def _heads(module: nn.Module, features, center_64, hidden: int, train: bool):
  """no_empty head on the features, final head on concat([features, broadcast(center_64)])."""
  kw = dict(hidden=hidden, dropout_rate=module.head_dropout, dtype=module.dtype)
  no_empty = SegHead(**kw, name="head_no_empty")(features, train)
  fused = jnp.concatenate([features, broadcast_center(center_64.astype(features.dtype),
                                                      features.shape[1:3])], axis=-1)
  final = SegHead(**kw, name="head_final")(fused, train)
  return no_empty, final


def _outputs(class_logits, no_empty, final):
  return tuple(t.astype(jnp.float32) for t in (class_logits, no_empty, final))


class UNet(nn.Module):
  """The fields every family has: the `encoders.ENCODERS` key, compute dtype, the bilinear convention and
  the two dropout rates (module docstring). Subclasses add their widths and `__call__`."""
  encoder: str
  dtype: Dtype = jnp.float32
  align_corners: bool = True
  decoder_dropout: float = 0.0
  head_dropout: float = 0.0


class HypercolumnUNet(UNet):
  """model_34 / model_50A (SPEC 3.4): center, five plain `Decoder`s, 320-channel hypercolumn, two heads.

  The width fields default to the original's; `model_tiny` narrows them for CPU-sized runs.
  `head_stride` 1 is the original: decoder1 upsamples d2 to the input size (it has no skip) and the heads
  run there. 2 drops decoder1 (`decoder_mids` then names decoder5 .. decoder2): the hypercolumn of
  d2..d5 and the heads run at d2's size (half the input) and the two logit maps are resized bilinearly
  to the input size, which halves a narrow model's train step on CPU (`model_tiny_s2`).
  """
  center_widths: Tuple[int, int] = (512, 256)
  decoder_mids: Tuple[int, ...] = (512, 256, 128, 64, 32)   # decoder5 .. decoder1
  decoder_width: int = 64                                   # each decoder's output; hypercolumn = 5x
  class_features: int = 64                                  # center_64 width
  head_hidden: int = 64
  head_stride: int = 1                                      # 1: heads at the input size; 2: at half

  @nn.compact
  def __call__(self, x, train: bool = False):
    if (self.head_stride, len(self.decoder_mids)) not in ((1, 5), (2, 4)):
      raise ValueError(f"head_stride {self.head_stride} needs {6 - self.head_stride} decoder_mids "
                       f"(head_stride is 1 or 2), got {len(self.decoder_mids)}")
    size = x.shape[1:3]
    x = x.astype(self.dtype)
    c2, c3, c4, c5 = encoders_lib.get_encoder(self.encoder, dtype=self.dtype, name="encoder")(x, train)
    class_logits, center_64 = ClassHead(self.class_features, dtype=self.dtype, name="classifier")(c5)
    kw = dict(dtype=self.dtype, align_corners=self.align_corners, dropout_rate=self.decoder_dropout)
    center = Center(self.center_widths, dtype=self.dtype, name="center")(c5, train)
    d, w = center, self.decoder_width
    outs = []
    for i, (mid, skip) in enumerate(zip(self.decoder_mids, (c5, c4, c3, c2, None))):
      d = Decoder(mid, w, **kw, name=f"decoder{5 - i}")(d, skip, train)
      outs.append(d)
    h = hypercolumn(*outs[::-1], align_corners=self.align_corners)
    h = channel_dropout(self.decoder_dropout, train)(h)
    no_empty, final = _heads(self, h, center_64, self.head_hidden, train)
    if self.head_stride != 1:
      no_empty, final = (resize_bilinear(t, size, self.align_corners) for t in (no_empty, final))
    return _outputs(class_logits, no_empty, final)


SLIM_LATERALS = (64, 128, 256, 512)  # layer1..layer4 reduced widths (SPEC 3.5)


class SlimHypercolumnUNet(UNet):
  """model_50A_slim / model_152 / model_154 (SPEC 3.5): lateral 1x1 reductions, `Decoder_bottleneck`s."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    feats = encoders_lib.get_encoder(self.encoder, dtype=self.dtype, name="encoder")(x, train)
    c5 = feats[3]
    class_logits, center_64 = ClassHead(dtype=self.dtype, name="classifier")(c5)
    center = Center(dtype=self.dtype, name="center")(c5, train)
    l2, l3, l4, l5 = (Lateral(w, dtype=self.dtype, name=f"lateral{i + 2}")(f, train)
                      for i, (w, f) in enumerate(zip(SLIM_LATERALS, feats)))
    kw = dict(dtype=self.dtype, align_corners=self.align_corners)
    d5 = DecoderBottleneckStage(512, 64, **kw, name="decoder5")(center, l5, train)
    d4 = DecoderBottleneckStage(256, 64, **kw, name="decoder4")(d5, l4, train)
    d3 = DecoderBottleneckStage(128, 64, **kw, name="decoder3")(d4, l3, train)
    d2 = DecoderBottleneckStage(64, 64, **kw, name="decoder2")(d3, l2, train)
    d1 = DecoderBottleneckStage(32, 64, **kw, name="decoder1")(d2, None, train)
    h = hypercolumn(d1, d2, d3, d4, d5, align_corners=self.align_corners)
    h = channel_dropout(self.decoder_dropout, train)(h)
    return _outputs(class_logits, *_heads(self, h, center_64, 64, train))


class IBNDecoderUNet(UNet):
  """model_101A / model_101B (SPEC 3.6): SE gate + IBN-a transposed-conv decoder blocks, no hypercolumn.

  The original has no never-run dropout calls here, so `decoder_dropout` must stay 0.0 (kept for a
  uniform interface); its real Dropout2d(0.5) sits in the heads (`head_dropout`). `align_corners` is
  unused: this family has no bilinear upsampling.
  """
  head_dropout: float = 0.5
  num_filters: int = 32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.decoder_dropout:
      raise ValueError("IBNDecoderUNet has no decoder dropout (SPEC 3.6); use head_dropout")
    x = x.astype(self.dtype)
    c2, c3, c4, c5 = encoders_lib.get_encoder(self.encoder, dtype=self.dtype, name="encoder")(x, train)
    class_logits, center_64 = ClassHead(dtype=self.dtype, name="classifier")(c5)
    nf = self.num_filters

    def stage(i, inp, out):
      inp = SELayer(dtype=self.dtype, name=f"se{i}")(inp)
      return IBNaDecoderBlock(out, dtype=self.dtype, name=f"decoder{i}")(inp, train)

    cat = lambda a, b: jnp.concatenate([a, b], axis=-1)
    center = stage("_center", nn.max_pool(c5, (2, 2), strides=(2, 2)), nf * 8)
    d5 = stage(5, cat(center, c5), nf * 8)
    d4 = stage(4, cat(d5, c4), nf * 8)
    d3 = stage(3, cat(d4, c3), nf * 4)
    d2 = stage(2, cat(d3, c2), nf * 4)
    return _outputs(class_logits, *_heads(self, d2, center_64, nf, train))


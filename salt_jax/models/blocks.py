"""Decoder and head blocks of the seven U-Net variants (SPEC 3.1, 3.2), NHWC.

Every block takes `(x, ..., train)`; `dtype` is the compute dtype, parameters stay float32. Training is a
`jit` over a sharded global batch, so BatchNorm statistics are global-batch statistics. Channel dropout is
`nn.Dropout(rate, broadcast_dims=(1,2))` on the 'dropout' rng stream; a rate of 0.0 (the default wherever
the original's dropout never ran, SPEC 10.1) is a no-op.
"""
from functools import partial
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from salt_jax.models.layers import IBN, batch_norm, conv, resize_bilinear, torch_default_init

Dtype = Any


def channel_dropout(rate: float, train: bool, name: Optional[str] = None) -> nn.Dropout:
  """Dropout2d on NHWC: zeroes whole channels per sample, survivors scaled by 1/(1-rate)."""
  return nn.Dropout(rate, broadcast_dims=(1, 2), deterministic=not train, name=name)


def _dense(features: int, *, bias: bool = True, dtype: Dtype, name: str) -> nn.Dense:
  return nn.Dense(features, use_bias=bias, dtype=dtype, kernel_init=torch_default_init, name=name)


class SCSE(nn.Module):
  """scSE (SPEC 3.2): x*sigmoid(FC(ReLU(FC(GAP x)))) + x*sigmoid(Conv1x1(x)); (B,H,W,C) -> (B,H,W,C).

  cSE FCs have biases (C -> C//16 -> C); the sSE 1x1 conv (C -> 1) has none.
  """
  reduction: int = 16
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    c = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2))
    s = nn.relu(_dense(max(1, c // self.reduction), dtype=self.dtype, name="fc1")(s))
    s = nn.sigmoid(_dense(c, dtype=self.dtype, name="fc2")(s))
    cse = x * s[:, None, None, :]
    sse = x * nn.sigmoid(conv(1, 1, bias=False, dtype=self.dtype, name="spatial")(x))
    return cse + sse


class SELayer(nn.Module):
  """SE gate of the 101A/101B decoders (SPEC 3.2): FCs C -> int(C/16) -> C without biases."""
  reduction: int = 16
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    c = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2))
    s = nn.relu(_dense(int(c / self.reduction), bias=False, dtype=self.dtype, name="fc1")(s))
    s = nn.sigmoid(_dense(c, bias=False, dtype=self.dtype, name="fc2")(s))
    return x * s[:, None, None, :]


class ConvBNReLU(nn.Module):
  """Conv(k, bias) -> BN -> ReLU."""
  features: int
  kernel: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = conv(self.features, self.kernel, dtype=self.dtype, name="conv")(x)
    x = batch_norm(train, dtype=self.dtype, name="bn")(x)
    return nn.relu(x)


class DecoderBottleneck(nn.Module):
  """Decoder-side Bottleneck (SPEC 3.2): (B,H,W,in) -> (B,H,W,out), mid = in // 4.

  Conv1x1 -> BN -> ReLU -> Conv3x3 -> BN -> ReLU -> Conv1x1 -> BN (no conv biases), + identity only when
  in == out (there is no projection shortcut), ReLU.
  """
  out: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    cin = x.shape[-1]
    mid = cin // 4
    bn = lambda name: batch_norm(train, dtype=self.dtype, name=name)
    y = nn.relu(bn("bn1")(conv(mid, 1, bias=False, dtype=self.dtype, name="conv1")(x)))
    y = nn.relu(bn("bn2")(conv(mid, 3, bias=False, dtype=self.dtype, name="conv2")(y)))
    y = bn("bn3")(conv(self.out, 1, bias=False, dtype=self.dtype, name="conv3")(y))
    if cin == self.out:
      y = y + x
    return nn.relu(y)


class DecoderStage(nn.Module):
  """A U-Net decoder stage (SPEC 3.2, 3.5), parametrised by its `block`.

  (B,H,W,Cin) [+ skip (B,H',W',Cs)] -> (B,H',W',out) (2H,2W without a skip): bilinear resize to the skip's
  size (x2 at the original's 128 px input; also odd sizes at other inputs), concat [up, skip], channel dropout
  (`dropout_rate`, 0.0 = the original's no-op), `block`(mid) then `block`(out) named f"{block_name}1|2",
  scSE. `block` is called as `block(features, dtype=, name=)(x, train)`.
  """
  mid: int
  out: int
  block: Callable[..., nn.Module]
  block_name: str
  dropout_rate: float = 0.0
  align_corners: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, skip=None, train: bool = False):
    size = (2 * x.shape[1], 2 * x.shape[2]) if skip is None else skip.shape[1:3]
    x = resize_bilinear(x, size, self.align_corners)
    if skip is not None:
      x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
      x = channel_dropout(self.dropout_rate, train)(x)
    x = self.block(self.mid, dtype=self.dtype, name=f"{self.block_name}1")(x, train)
    x = self.block(self.out, dtype=self.dtype, name=f"{self.block_name}2")(x, train)
    return SCSE(dtype=self.dtype, name="scse")(x)


# Plain stage of model_34/model_50A: (Conv3x3+BN+ReLU) x2.
Decoder = partial(DecoderStage, block=ConvBNReLU, block_name="block")
# `Decoder_bottleneck` of the slim family: DecoderBottleneck x2; the original has no dropout call here.
DecoderBottleneckStage = partial(DecoderStage, block=DecoderBottleneck, block_name="bottleneck")


class IBNaDecoderBlock(nn.Module):
  """ImprovedIBNaDecoderBlock (SPEC 3.2): (B,H,W,in) -> (B,2H,2W,out), m = in // 4.

  Conv1x1 -> IBN -> ReLU -> ConvTranspose(4x4, stride 2, torch padding 1) -> BN -> ReLU -> Conv1x1 -> BN
  -> ReLU, all convs with bias. Flax padding 2 on the dilated input equals torch padding 1 (k - 1 - p).
  """
  out: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    m = x.shape[-1] // 4
    bn = lambda name: batch_norm(train, dtype=self.dtype, name=name)
    x = conv(m, 1, dtype=self.dtype, name="conv1")(x)
    x = nn.relu(IBN(dtype=self.dtype, name="ibn")(x, train))
    x = nn.ConvTranspose(m, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)), dtype=self.dtype,
                         kernel_init=torch_default_init, name="deconv")(x)
    x = nn.relu(bn("bn2")(x))
    x = conv(self.out, 1, dtype=self.dtype, name="conv3")(x)
    return nn.relu(bn("bn3")(x))


class Center(nn.Module):
  """Hypercolumn-family center (SPEC 3.4): (B,h,w,C5) -> (B,h/2,w/2,256).

  Conv3x3(C5 -> 512)+BN+ReLU, Conv3x3(512 -> 256)+BN+ReLU, MaxPool 2x2/2 (`widths` = (512, 256)).
  """
  widths: Tuple[int, int] = (512, 256)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = ConvBNReLU(self.widths[0], dtype=self.dtype, name="block1")(x, train)
    x = ConvBNReLU(self.widths[1], dtype=self.dtype, name="block2")(x, train)
    return nn.max_pool(x, (2, 2), strides=(2, 2))


class Lateral(nn.Module):
  """Slim-family skip reduction (SPEC 3.5): Conv1x1(bias) -> BN -> ReLU, (B,H,W,C) -> (B,H,W,features)."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    return ConvBNReLU(self.features, 1, dtype=self.dtype, name="block")(x, train)


def hypercolumn(*maps, align_corners: bool = True):
  """Hypercolumn (SPEC 3.4 step 7): concat([d1, up(d2), up(d3), up(d4), up(d5)]) at d1's size.

  Decoder maps finest first, five (B,*,*,64) -> (B,H,W,320) in the original; each coarser map is resized
  bilinearly straight to the first one's size (the original's single `scale_factor` 2/4/8/16 upsample).
  """
  size = maps[0].shape[1:3]
  ups = [resize_bilinear(d.astype(maps[0].dtype), size, align_corners) for d in maps[1:]]
  return jnp.concatenate([maps[0]] + ups, axis=-1)


class SegHead(nn.Module):
  """Conv3x3(bias) -> ReLU -> channel dropout -> Conv1x1(bias); (B,H,W,C) -> (B,H,W,1) logits.

  `hidden` is 64 for the hypercolumn families (SPEC 3.4) and 32 for 101A/101B, whose Dropout2d(0.5) is
  the only dropout that ran in the original (SPEC 3.6).
  """
  hidden: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(conv(self.hidden, 3, dtype=self.dtype, name="conv1")(x))
    x = channel_dropout(self.dropout_rate, train)(x)
    return conv(1, 1, dtype=self.dtype, name="conv2")(x)


class ClassHead(nn.Module):
  """Image-level branch (SPEC 3.1): (B,h,w,C5) -> (class_logits (B,2), center_64 (B,64)).

  center_64 = Conv1x1(C5 -> 64, bias)(GAP) with no activation; class_logits = Linear(64 -> 2).
  """
  features: int = 64
  num_classes: int = 2
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    g = jnp.mean(x, axis=(1, 2), keepdims=True)
    center_64 = conv(self.features, 1, dtype=self.dtype, name="conv")(g)[:, 0, 0, :]
    logits = _dense(self.num_classes, dtype=self.dtype, name="fc")(center_64)
    return logits, center_64


def broadcast_center(center_64, size: Sequence[int]):
  """(B,64) -> (B,H,W,64): the original's bilinear upsample of a 1x1 map, a pure broadcast."""
  b, c = center_64.shape
  return jnp.broadcast_to(center_64[:, None, None, :], (b, size[0], size[1], c))

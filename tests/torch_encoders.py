"""PyTorch reference backbones for the weight-import tests, written from the architecture facts.

Parameter names and layer order match timm (`resnet34`, `seresnext50_32x4d`, `seresnext101_32x4d`,
`legacy_seresnet152`, `legacy_senet154`) and the IBN-Net release (`resnext101_ibn_a`), classifier
included, so their state dicts look like the real checkpoints. `forward_features` returns the
layer1..layer4 outputs with the stem max-pool removed (SPEC 3.1). timm itself is not importable here.
"""
from collections import OrderedDict

import torch
from torch import nn


def _conv(cin, cout, k, stride=1, groups=1, bias=False):
  return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=bias)


class SE(nn.Module):
  """GAP -> fc1 (1x1 conv, bias) -> ReLU -> fc2 -> sigmoid gate; reduction 16."""

  def __init__(self, c, reduction=16):
    super().__init__()
    self.fc1 = nn.Conv2d(c, c // reduction, 1)
    self.fc2 = nn.Conv2d(c // reduction, c, 1)

  def forward(self, x):
    s = x.mean((2, 3), keepdim=True)
    return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class IBN(nn.Module):
  """InstanceNorm (affine) on the first C//2 channels, BatchNorm on the rest."""

  def __init__(self, c):
    super().__init__()
    self.half = c // 2
    self.IN = nn.InstanceNorm2d(self.half, affine=True)
    self.BN = nn.BatchNorm2d(c - self.half)

  def forward(self, x):
    a, b = torch.split(x, [self.half, x.shape[1] - self.half], 1)
    return torch.cat([self.IN(a.contiguous()), self.BN(b.contiguous())], 1)


def _downsample(cin, cout, k, stride):
  return nn.Sequential(_conv(cin, cout, k, stride), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):

  def __init__(self, cin, planes, stride):
    super().__init__()
    self.conv1, self.bn1 = _conv(cin, planes, 3, stride), nn.BatchNorm2d(planes)
    self.conv2, self.bn2 = _conv(planes, planes, 3), nn.BatchNorm2d(planes)
    self.downsample = _downsample(cin, planes, 1, stride) if stride != 1 or cin != planes else None

  def forward(self, x):
    y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
  """conv1 1x1 -> bn1 -> relu -> conv2 3x3 -> bn2 -> relu -> conv3 1x1 -> bn3 [-> SE] + shortcut -> relu."""

  def __init__(self, cin, w1, w2, cout, stride, groups=1, stride_1x1=False, ds_kernel=0, se_name=None,
               ibn=False):
    super().__init__()
    s1, s3 = (stride, 1) if stride_1x1 else (1, stride)
    self.conv1 = _conv(cin, w1, 1, s1)
    self.bn1 = IBN(w1) if ibn else nn.BatchNorm2d(w1)
    self.conv2, self.bn2 = _conv(w1, w2, 3, s3, groups), nn.BatchNorm2d(w2)
    self.conv3, self.bn3 = _conv(w2, cout, 1), nn.BatchNorm2d(cout)
    self.se_name = se_name
    if se_name:
      setattr(self, se_name, SE(cout))
    self.downsample = _downsample(cin, cout, ds_kernel, stride) if ds_kernel else None

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = torch.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    if self.se_name:
      y = getattr(self, self.se_name)(y)
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class Encoder(nn.Module):
  """Stem (`conv1`/`bn1` or legacy `layer0`) + layer1..layer4 + classifier (`fc` or `last_linear`)."""

  def __init__(self, stem, layers, cout, head):
    super().__init__()
    if isinstance(stem, nn.Sequential):
      self.layer0 = stem
    else:
      self.conv1, self.bn1 = stem
    for i, blocks in enumerate(layers, 1):
      setattr(self, f"layer{i}", nn.Sequential(*blocks))
    setattr(self, head, nn.Linear(cout, 1000))

  def forward_features(self, x):
    x = self.layer0(x) if hasattr(self, "layer0") else torch.relu(self.bn1(self.conv1(x)))
    outs = []
    for i in range(1, 5):
      x = getattr(self, f"layer{i}")(x)
      outs.append(x)
    return outs


def _stages(make_block, depths, cin):
  layers = []
  for i, (planes, n) in enumerate(zip((64, 128, 256, 512), depths)):
    blocks = []
    for j in range(n):
      block, cin = make_block(i, j, cin, planes, 2 if i > 0 and j == 0 else 1)
      blocks.append(block)
    layers.append(blocks)
  return layers


def resnet34():
  make = lambda i, j, cin, p, s: (BasicBlock(cin, p, s), p)
  return Encoder((_conv(3, 64, 7, 2), nn.BatchNorm2d(64)), _stages(make, (3, 4, 6, 3), 64), 512, "fc")


def _resnext(depths, se_name, ibn_layers=()):
  def make(i, j, cin, p, s):
    w = p * 4 // 64 * 32
    return Bottleneck(cin, w, w, p * 4, s, 32, ds_kernel=1 if j == 0 else 0, se_name=se_name,
                      ibn=i in ibn_layers), p * 4
  return Encoder((_conv(3, 64, 7, 2), nn.BatchNorm2d(64)), _stages(make, depths, 64), 2048, "fc")


def seresnext50_32x4d():
  return _resnext((3, 4, 6, 3), "se")


def seresnext101_32x4d():
  return _resnext((3, 4, 23, 3), "se")


def resnext101_ibn_a():
  return _resnext((3, 4, 23, 3), None, ibn_layers=(0, 1, 2))


def _layer0(spec):
  mods = []
  for k, (cin, cout, kernel, stride) in enumerate(spec, 1):
    mods += [(f"conv{k}", _conv(cin, cout, kernel, stride)), (f"bn{k}", nn.BatchNorm2d(cout)),
             (f"relu{k}", nn.ReLU())]
  return nn.Sequential(OrderedDict(mods))


def legacy_seresnet152():
  make = lambda i, j, cin, p, s: (Bottleneck(cin, p, p, p * 4, s, stride_1x1=True,
                                             ds_kernel=1 if j == 0 else 0, se_name="se_module"), p * 4)
  return Encoder(_layer0([(3, 64, 7, 2)]), _stages(make, (3, 8, 36, 3), 64), 2048, "last_linear")


def legacy_senet154():
  make = lambda i, j, cin, p, s: (Bottleneck(cin, 2 * p, 4 * p, 4 * p, s, 64,
                                             ds_kernel=(1 if i == 0 else 3) if j == 0 else 0,
                                             se_name="se_module"), p * 4)
  stem = _layer0([(3, 64, 3, 2), (64, 64, 3, 1), (64, 128, 3, 1)])
  return Encoder(stem, _stages(make, (3, 8, 36, 3), 128), 2048, "last_linear")


REFERENCES = {f.__name__: f for f in (resnet34, seresnext50_32x4d, seresnext101_32x4d, legacy_seresnet152,
                                      legacy_senet154, resnext101_ibn_a)}


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
  """Random non-trivial norm affine params and BN running stats (eval mode must use them)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)):
        m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
        m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
      if isinstance(m, nn.BatchNorm2d):
        m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
  return model

"""Import of PyTorch weights into Flax: ImageNet encoders (SPEC 3.3) and the original solution's models.

torch is only imported inside `load_torch_state_dict` (a test/import-time dependency, never needed to
train). Torch names map mechanically onto the Flax tree: a numeric segment joins its parent with `_`
(`layer1.0.downsample.1.weight` -> `layer1_0/downsample_1` + leaf), conv `weight` (O,I/g,kh,kw) ->
`kernel` (kh,kw,I/g,O), Linear `weight` (O,I) -> `kernel` (I,O), BN/IN `weight` -> `scale`, `bias` ->
`bias`, `running_mean`/`running_var` -> batch_stats `mean`/`var`. ConvTranspose2d `weight` (I,O,kh,kw)
-> `kernel` (kh,kw,I,O) flipped in space (Flax's transposed conv does not flip the kernel).

`from_original(name, state_dict)` takes a whole checkpoint of the original solution (keys as in
/work/shared/bench/torch_variants.py: module attributes of model.py, with or without DataParallel's
`module.` prefix) for one of the seven variants:

* `encoder.*` maps mechanically to params['encoder'], except for the Cadene SE-ResNeXt encoders of
  50A/50A_slim/101B, whose Flax modules use timm names: `layer0.conv1`/`layer0.bn1` -> `conv1`/`bn1`,
  `layer{i}.{j}.se_module` -> `layer{i}_{j}/se`. Legacy SENet-152/154 and ResNeXt-IBN keep their names.
* Aliases (`conv1`..`conv5` are the encoder's stem and layer1..layer4 registered a second time):
  `conv1.{3k}`/`conv1.{3k+1}` -> the stem's conv{k+1}/bn{k+1}, `conv{i}` -> `encoder.layer{i-1}`; an alias
  must equal its `encoder.` spelling (either spelling alone is enough).
* Decoder and heads by a small regex table per family (`_DECODER_RULES`): e.g. `center_conv1x1` ->
  `classifier/conv`, `center_fc` -> `classifier/fc`, `center.0|1|3|4` -> `center/block1|2/conv|bn`,
  `decoder5.conv1.0` -> `decoder5/block1/conv`, `decoder5.SCSE.channel_excitation.0` -> `decoder5/scse/fc1`,
  `dec5_1x1.1` -> `lateral5/block/bn`, `decoder5.block1` -> `decoder5/bottleneck1`, `dec5_se.fc.0` ->
  `se5/fc1`, `center.norm1.IN` -> `decoder_center/ibn/IN`, `dec5.deconv2` -> `decoder5/deconv`,
  `logits_final.0(.conv)` / `.2` -> `head_final/conv1` / `conv2`.
* Ignored, by name: the unused ImageNet classifier (`encoder.fc`, `encoder.last_linear`), BN
  `num_batches_tracked`, and the running buffers torch 0.3 kept on InstanceNorm (IBN-a always normalises
  with per-sample statistics, SPEC 3.1).
"""
import functools
import pathlib
import re
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from flax.core import unfreeze

from salt_jax import geometry

# Classifier heads of the backbones (timm/torchvision `fc`, Cadene/timm-legacy `last_linear`): unused.
CLASSIFIER_PREFIXES = ("fc.", "last_linear.")
# Buffers without a Flax counterpart: BN step counters, and the running stats torch 0.3 registered on
# InstanceNorm (IBN-a always normalises with per-sample statistics, SPEC 3.1).
IGNORED_SUFFIXES = ("num_batches_tracked", ".IN.running_mean", ".IN.running_var")


def load_torch_state_dict(path) -> Dict[str, np.ndarray]:
  """Reads a .pth/.pth.tar (a state dict, or a checkpoint with 'state_dict') or a .safetensors file.

  Strips DataParallel `module.` prefixes; returns name -> numpy array.
  """
  path = pathlib.Path(path)
  if path.suffix == ".safetensors":
    try:
      from safetensors.numpy import load_file
    except ImportError as e:
      raise ImportError(f"reading {path} needs the `safetensors` package (pip install safetensors)") from e
    sd = load_file(str(path))
  else:
    import torch
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
      sd = sd["state_dict"]
    sd = {k: v.detach().cpu().numpy() for k, v in sd.items() if isinstance(v, torch.Tensor)}
  return {(k[len("module."):] if k.startswith("module.") else k): np.asarray(v) for k, v in sd.items()}


def _flax_module_path(torch_module: str) -> Tuple[str, ...]:
  out = []
  for seg in torch_module.split("."):
    if seg.isdigit() and out:
      out[-1] = f"{out[-1]}_{seg}"
    else:
      out.append(seg)
  return tuple(out)


def encoder_shapes(encoder_name: str) -> Dict[str, Any]:
  """Abstract variables ({'params', 'batch_stats'} of ShapeDtypeStruct) of the named encoder (traced at
  the original's canvas; the shapes do not depend on the input size)."""
  from salt_jax.models import init_variables
  from salt_jax.models.encoders import get_encoder
  model = get_encoder(encoder_name)
  return jax.eval_shape(lambda: init_variables(model, jax.random.key(0), size=geometry.CANVAS))


def torch_to_flax(encoder_name: str, state_dict: Dict[str, Any]) -> Dict[str, Any]:
  """Converts a torch state dict of the named backbone to {'params': ..., 'batch_stats': ...}.

  Strict: raises ValueError listing Flax variables left unfilled, torch keys that match nothing
  (classifier keys and the IGNORED_SUFFIXES buffers excepted) and shape mismatches.
  """
  entries = [(key, *_split(key), value) for key, value in state_dict.items()
             if not (key.startswith(CLASSIFIER_PREFIXES) or key.endswith(IGNORED_SUFFIXES))]
  return _fill(f"torch -> {encoder_name}", encoder_shapes(encoder_name), entries)


# The seven variants of the original solution (SPEC 3); `model_tiny` and `model_tiny_s2` have none in torch.
ORIGINAL_VARIANTS = ("model_34", "model_50A", "model_50A_slim", "model_101A", "model_101B", "model_152",
                     "model_154")
# Flax module names whose torch counterpart is a ConvTranspose2d.
TRANSPOSED_CONVS = ("deconv",)
# The original's torch encoder stem prefix, where it is not the SENet family's `layer0.`.
_TORCH_STEM = {"resnet34": "", "resnext101_ibn_a": ""}
# (torch module regex, Flax module template), first full match wins; other names map mechanically.
_TIMM_SE = ((r"layer0\.(conv1|bn1)", r"\1"), (r"(layer\d\.\d+)\.se_module\.(fc[12])", r"\1.se.\2"))
_ENCODER_RULES = {"seresnext50_32x4d": _TIMM_SE, "seresnext101_32x4d": _TIMM_SE}
_HEADS = ((r"center_conv1x1", "classifier.conv"), (r"center_fc", "classifier.fc"),
          (r"logits_(no_empty|final)\.0(?:\.conv)?", r"head_\1.conv1"),
          (r"logits_(no_empty|final)\.2", r"head_\1.conv2"))
_CENTER = ((r"center\.0", "center.block1.conv"), (r"center\.1", "center.block1.bn"),
           (r"center\.3", "center.block2.conv"), (r"center\.4", "center.block2.bn"))
_SCSE = ((r"decoder(\d)\.SCSE\.channel_excitation\.0", r"decoder\1.scse.fc1"),
         (r"decoder(\d)\.SCSE\.channel_excitation\.2", r"decoder\1.scse.fc2"),
         (r"decoder(\d)\.SCSE\.spatial_se\.0", r"decoder\1.scse.spatial"))
_DECODER_RULES = {
    "HypercolumnUNet": _HEADS + _CENTER + _SCSE + (
        (r"decoder(\d)\.conv([12])\.0", r"decoder\1.block\2.conv"),
        (r"decoder(\d)\.conv([12])\.1", r"decoder\1.block\2.bn")),
    "SlimHypercolumnUNet": _HEADS + _CENTER + _SCSE + (
        (r"dec(\d)_1x1\.0", r"lateral\1.block.conv"), (r"dec(\d)_1x1\.1", r"lateral\1.block.bn"),
        (r"decoder(\d)\.block([12])\.(\w+)", r"decoder\1.bottleneck\2.\3")),
    "IBNDecoderUNet": _HEADS + (
        (r"center_se\.fc\.0", "se_center.fc1"), (r"center_se\.fc\.2", "se_center.fc2"),
        (r"dec(\d)_se\.fc\.0", r"se\1.fc1"), (r"dec(\d)_se\.fc\.2", r"se\1.fc2"),
        (r"center\.(conv[13])", r"decoder_center.\1"), (r"dec(\d)\.(conv[13])", r"decoder\1.\2"),
        (r"center\.norm1\.(IN|BN)", r"decoder_center.ibn.\1"),
        (r"dec(\d)\.norm1\.(IN|BN)", r"decoder\1.ibn.\2"),
        (r"center\.deconv2", "decoder_center.deconv"), (r"dec(\d)\.deconv2", r"decoder\1.deconv"),
        (r"center\.norm([23])", r"decoder_center.bn\1"), (r"dec(\d)\.norm([23])", r"decoder\1.bn\2")),
}
_ENCODER_RULES = {k: tuple((re.compile(p), t) for p, t in v) for k, v in _ENCODER_RULES.items()}
_DECODER_RULES = {k: tuple((re.compile(p), t) for p, t in v) for k, v in _DECODER_RULES.items()}


@functools.lru_cache(maxsize=None)
def model_shapes(name: str) -> Dict[str, Any]:
  """Abstract variables ({'params', 'batch_stats'} of ShapeDtypeStruct) of `get_model(name)` (traced at the
  original's canvas; the shapes do not depend on the input size)."""
  from salt_jax.models import get_model, init_variables
  model = get_model(name)
  return jax.eval_shape(lambda: init_variables(model, jax.random.key(0), size=geometry.CANVAS))


def from_original(name: str, state_dict: Dict[str, Any]) -> Dict[str, Any]:
  """Converts a state dict of the original solution's variant `name` to {'params', 'batch_stats'}.

  `state_dict`: name -> numpy array or torch tensor, e.g. `torch_variants.build(name).state_dict()` or an
  original checkpoint, `module.`-prefixed or not (mapping in the module docstring). Strict: raises
  ValueError when two spellings of one tensor differ, or listing (a few of) the Flax variables left
  unfilled, torch keys that match nothing, shape mismatches and variables filled twice.
  """
  if name not in ORIGINAL_VARIANTS:
    raise ValueError(f"{name!r} has no original torch model; valid: {', '.join(ORIGINAL_VARIANTS)}")
  from salt_jax.models import MODELS
  family, defaults = MODELS[name]
  encoder = defaults["encoder"]
  canonical: Dict[str, Tuple[str, Any]] = {}
  differing = []
  for key, value in state_dict.items():
    key = key[len("module."):] if key.startswith("module.") else key
    canon = _unalias(key, _TORCH_STEM.get(encoder, "layer0."))
    if canon.startswith(("encoder.fc.", "encoder.last_linear.")) or canon.endswith(IGNORED_SUFFIXES):
      continue
    if canon not in canonical:
      canonical[canon] = (key, value)
    elif not np.array_equal(_numpy(canonical[canon][1]), _numpy(value)):
      differing.append(f"{key} != {canonical[canon][0]}")
  if differing:
    raise ValueError(f"original -> {name}: two spellings of one tensor (alias or `module.` prefix) with "
                     f"different values {_few(differing)}")
  entries, encoder_rules = [], _ENCODER_RULES.get(encoder, ())
  for canon, (key, value) in canonical.items():
    module, _, leaf = canon.rpartition(".")
    if module.startswith("encoder."):
      path = ("encoder",) + _flax_module_path(_rewrite(module[len("encoder."):], encoder_rules))
    else:
      path = _flax_module_path(_rewrite(module, _DECODER_RULES[family.__name__]))
    entries.append((key, path, leaf, value))
  return _fill(f"original -> {name}", model_shapes(name), entries)


def load_original(path, name: str) -> Dict[str, Any]:
  """{'params', 'batch_stats'} of variant `name` from an original .pth/.pth.tar (see from_original)."""
  return from_original(name, load_torch_state_dict(path))


def _unalias(key: str, stem: str) -> str:
  """Alias -> `encoder.` key: `conv1.{3k}|{3k+1}.*` -> stem conv|bn{k+1}, `conv{i}.*` -> `layer{i-1}.*`."""
  m = re.match(r"conv([1-5])\.(\d+)\.(.+)", key)
  if not m:
    return key
  if m[1] != "1":
    return f"encoder.layer{int(m[1]) - 1}.{m[2]}.{m[3]}"
  k, r = divmod(int(m[2]), 3)  # the stem is a Sequential of (conv, bn, relu) triples
  return f"encoder.{stem}{('conv', 'bn')[r]}{k + 1}.{m[3]}" if r < 2 else key


def _rewrite(module: str, rules) -> str:
  for pattern, template in rules:
    m = pattern.fullmatch(module)
    if m:
      return m.expand(template)
  return module


def _split(key: str) -> Tuple[Tuple[str, ...], str]:
  module, _, leaf = key.rpartition(".")
  return _flax_module_path(module), leaf


def _numpy(value) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch tensor, without importing torch
    value = value.detach().cpu()
    value = value.float() if value.is_floating_point() else value
    return value.numpy()
  return np.asarray(value)


def _few(items: List[str], n: int = 6) -> str:
  return f"{items[:n]}" + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _fill(what: str, shapes: Dict[str, Any],
          entries: Iterable[Tuple[str, Tuple[str, ...], str, Any]]) -> Dict[str, Any]:
  """Fills every leaf of `shapes` once from (torch key, Flax module path, torch leaf name, value) entries."""
  target = {col: traverse_util.flatten_dict(unfreeze(tree)) for col, tree in shapes.items()}
  out = {col: {} for col in target}
  unexpected, mismatched, twice = [], [], []
  for key, path, leaf, value in entries:
    value = _numpy(value)
    if leaf == "weight" and path + ("kernel",) in target["params"]:
      col, name = "params", "kernel"
      if value.ndim == 2:
        value = value.T
      elif path[-1] in TRANSPOSED_CONVS:  # torch (I,O,kh,kw)
        value = value.transpose(2, 3, 0, 1)[::-1, ::-1]
      else:
        value = value.transpose(2, 3, 1, 0)
    elif leaf in ("weight", "bias"):
      col, name = "params", {"weight": "scale", "bias": "bias"}[leaf]
    elif leaf in ("running_mean", "running_var"):
      col, name = "batch_stats", leaf[len("running_"):]
    else:
      unexpected.append(key)
      continue
    flat = path + (name,)
    if flat not in target.get(col, {}):
      unexpected.append(key)
    elif target[col][flat].shape != value.shape:
      mismatched.append(f"{key} {value.shape} -> {col}/{'/'.join(flat)} {target[col][flat].shape}")
    elif flat in out[col]:
      twice.append(f"{key} -> {col}/{'/'.join(flat)}")
    else:
      out[col][flat] = np.array(value, dtype=np.float32, order="C")  # a copy: never a view of a tensor
  missing = [f"{col}/{'/'.join(k)}" for col in target for k in target[col] if k not in out[col]]
  if missing or unexpected or mismatched or twice:
    raise ValueError(f"{what}: missing Flax variables {_few(missing)}; unexpected torch keys "
                     f"{_few(unexpected)}; shape mismatches {_few(mismatched)}"
                     + (f"; filled twice {_few(twice)}" if twice else ""))
  return {col: traverse_util.unflatten_dict(v) for col, v in out.items()}


def merge_encoder_weights(variables: Dict[str, Any], encoder_vars: Dict[str, Any],
                          path: Sequence[str] = ("encoder",)) -> Dict[str, Any]:
  """Returns a copy of a full model's `variables` with variables[col][*path] replaced by encoder_vars[col].

  Every collection of `encoder_vars` must match the existing subtree exactly (names and shapes), else
  ValueError; values are cast to the existing dtypes.
  """
  variables = unfreeze(variables)
  new = dict(variables)
  for col, tree in unfreeze(encoder_vars).items():
    sub = variables.get(col, {})
    for p in path:
      if not isinstance(sub, dict) or p not in sub:
        raise ValueError(f"variables[{col!r}] has no subtree {'/'.join(path)}")
      sub = sub[p]
    old, src = traverse_util.flatten_dict(sub), traverse_util.flatten_dict(tree)
    if old.keys() != src.keys():
      raise ValueError(f"{col}/{'/'.join(path)}: names differ; only in model "
                       f"{sorted('/'.join(k) for k in old.keys() - src.keys())}, only in encoder weights "
                       f"{sorted('/'.join(k) for k in src.keys() - old.keys())}")
    bad = [f"{'/'.join(k)} {np.shape(src[k])} vs {np.shape(old[k])}" for k in old
           if np.shape(src[k]) != np.shape(old[k])]
    if bad:
      raise ValueError(f"{col}/{'/'.join(path)}: shape mismatches {bad}")
    cast = traverse_util.unflatten_dict({k: jnp.asarray(src[k], dtype=old[k].dtype) for k in old})
    new[col] = _set_in(variables[col], tuple(path), cast)
  return new


def _set_in(tree: Dict[str, Any], path: Tuple[str, ...], value: Any) -> Dict[str, Any]:
  tree = dict(tree)
  tree[path[0]] = value if len(path) == 1 else _set_in(tree[path[0]], path[1:], value)
  return tree

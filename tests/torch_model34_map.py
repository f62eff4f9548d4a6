"""Weight copy from /work/shared/bench/torch_reference.py's `Model34` into our `model_34` variables.

The reference's module names (stem, l1..l4 with a/b/down conv_bn pairs, cls_conv/cls_fc, center, d5..d1
with c1/c2/se, head_ne/head_final) map one to one onto ours; torch conv (O,I,kh,kw) -> Flax (kh,kw,I,O),
Linear (O,I) -> Dense (I,O), BN weight/bias/running_* -> scale/bias + batch_stats mean/var.
"""
import importlib.util
import os
import pathlib
import re

import numpy as np
from flax import traverse_util

_DEFAULT = pathlib.Path(__file__).resolve().parents[2] / "shared" / "bench" / "torch_reference.py"
REFERENCE = pathlib.Path(os.environ.get("SALT_TORCH_REFERENCE", _DEFAULT))

_STATIC = {
    "stem.0": "encoder/conv1", "stem.1": "encoder/bn1",
    "cls_conv": "classifier/conv", "cls_fc": "classifier/fc",
    "center.0": "center/block1/conv", "center.1": "center/block1/bn",
    "center.3": "center/block2/conv", "center.4": "center/block2/bn",
    "head_ne.0": "head_no_empty/conv1", "head_ne.2": "head_no_empty/conv2",
    "head_final.0": "head_final/conv1", "head_final.2": "head_final/conv2",
}
_ENC = {"a.0": "conv1", "a.1": "bn1", "b.0": "conv2", "b.1": "bn2", "down.0": "downsample_0",
        "down.1": "downsample_1"}
_DEC = {"c1.0": "block1/conv", "c1.1": "block1/bn", "c2.0": "block2/conv", "c2.1": "block2/bn",
        "se.fc.0": "scse/fc1", "se.fc.2": "scse/fc2", "se.sp": "scse/spatial"}


def load_reference():
  """The reference module (needs torch), imported by path."""
  spec = importlib.util.spec_from_file_location("salt_torch_reference", REFERENCE)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def flax_module(torch_module: str) -> str:
  """'l2.0.down.1' -> 'encoder/layer2_0/downsample_1', 'd5.se.fc.0' -> 'decoder5/scse/fc1'."""
  if torch_module in _STATIC:
    return _STATIC[torch_module]
  m = re.fullmatch(r"l(\d)\.(\d+)\.(.+)", torch_module)
  if m:
    return f"encoder/layer{m[1]}_{m[2]}/{_ENC[m[3]]}"
  m = re.fullmatch(r"d(\d)\.(.+)", torch_module)
  if m:
    return f"decoder{m[1]}/{_DEC[m[2]]}"
  raise KeyError(f"no Flax counterpart for torch module {torch_module!r}")


def torch_model34_to_flax(state_dict, target):
  """torch state dict of Model34 -> {'params', 'batch_stats'} with exactly `target`'s names and shapes.

  `target` is our model_34's variables (arrays or ShapeDtypeStructs); raises on any missing, extra or
  mis-shaped entry.
  """
  flat_target = {col: traverse_util.flatten_dict(dict(target[col]), sep="/")
                 for col in ("params", "batch_stats")}
  out = {col: {} for col in flat_target}
  for key, value in state_dict.items():
    module, _, leaf = key.rpartition(".")
    if leaf == "num_batches_tracked":
      continue
    path = flax_module(module)
    value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    if leaf == "weight" and f"{path}/kernel" in flat_target["params"]:
      col, name = "params", "kernel"
      value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
    elif leaf in ("weight", "bias"):
      col, name = "params", "scale" if leaf == "weight" else "bias"
    else:
      col, name = "batch_stats", {"running_mean": "mean", "running_var": "var"}[leaf]
    flat = f"{path}/{name}"
    if flat not in flat_target[col]:
      raise KeyError(f"{key} -> {col}/{flat}: not in the Flax model")
    if tuple(flat_target[col][flat].shape) != value.shape:
      raise ValueError(f"{key} {value.shape} -> {col}/{flat} {flat_target[col][flat].shape}")
    out[col][flat] = np.asarray(value, np.float32)
  for col in out:
    missing = sorted(set(flat_target[col]) - set(out[col]))
    if missing:
      raise KeyError(f"Flax {col} not filled from torch: {missing}")
  return {col: traverse_util.unflatten_dict(v, sep="/") for col, v in out.items()}

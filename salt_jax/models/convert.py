"""Import of PyTorch ImageNet weights into the Flax encoders (SPEC 3.3).

torch is only imported inside `load_torch_state_dict` (a test/import-time dependency, never needed to
train). Torch names map mechanically onto the Flax tree: a numeric segment joins its parent with `_`
(`layer1.0.downsample.1.weight` -> `layer1_0/downsample_1` + leaf), conv `weight` (O,I/g,kh,kw) ->
`kernel` (kh,kw,I/g,O), BN/IN `weight` -> `scale`, `bias` -> `bias`, `running_mean`/`running_var` ->
batch_stats `mean`/`var`.
"""
import pathlib
from typing import Any, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from flax.core import unfreeze

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
  """Abstract variables ({'params', 'batch_stats'} of ShapeDtypeStruct) of the named encoder."""
  from salt_jax.models.encoders import get_encoder
  model = get_encoder(encoder_name)
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), train=False))


def torch_to_flax(encoder_name: str, state_dict: Dict[str, Any]) -> Dict[str, Any]:
  """Converts a torch state dict of the named backbone to {'params': ..., 'batch_stats': ...}.

  Strict: raises ValueError listing Flax variables left unfilled, torch keys that match nothing
  (classifier keys and the IGNORED_SUFFIXES buffers excepted) and shape mismatches.
  """
  target = {col: traverse_util.flatten_dict(unfreeze(tree))
            for col, tree in encoder_shapes(encoder_name).items()}
  out = {col: {} for col in target}
  unexpected, mismatched = [], []
  for key, value in state_dict.items():
    if key.startswith(CLASSIFIER_PREFIXES) or key.endswith(IGNORED_SUFFIXES):
      continue
    module, _, leaf = key.rpartition(".")
    path = _flax_module_path(module)
    value = np.asarray(value)
    if leaf == "weight" and path + ("kernel",) in target["params"]:
      col, name = "params", "kernel"
      value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
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
    else:
      out[col][flat] = value.astype(np.float32)
  missing = [f"{col}/{'/'.join(k)}" for col in target for k in target[col] if k not in out[col]]
  if missing or unexpected or mismatched:
    raise ValueError(f"torch -> {encoder_name}: missing Flax variables {missing}; "
                     f"unexpected torch keys {unexpected}; shape mismatches {mismatched}")
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

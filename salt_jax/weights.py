"""The weights a training run starts from (the config's weights section): an ImageNet encoder
(`pretrained`), the original solution's whole model or a salt_jax snapshot (`init_from`), read and checked
before anything is written, then merged into a fresh train state."""
import os
import pathlib
from typing import Any, Dict

from absl import logging

from salt_jax import configlib, models
from salt_jax.workdir import checkpoints, rundir


def load(s) -> Dict[str, Any]:
  """{"pretrained": encoder variables, "init_from": whole-model variables} of the weight files that the
  config's weights section names, read and checked before anything is written (one ConfigError line for a
  bad file). A salt_jax snapshot folder as init_from fine-tunes that snapshot (its recorded model must be
  the model section's). s: the config's sections."""
  loaded, name = {}, s.model.model
  if s.weights.pretrained:
    loaded["pretrained"] = torch_weights("pretrained", s.weights.pretrained, name)
  if s.weights.init_from:
    loaded["init_from"] = (snapshot_weights(s.weights.init_from, s.model, s.data.input_size)
                           if os.path.isdir(s.weights.init_from)
                           else torch_weights("init_from", s.weights.init_from, name))
  return loaded


def torch_weights(key: str, path, name: str) -> Any:
  """The variables of a PyTorch weight file: "init_from", the original solution's whole model of variant
  `name`; "pretrained", its ImageNet encoder's. Any failure is one ConfigError line naming the file."""
  from salt_jax.models import convert  # pylint: disable=import-outside-toplevel  (torch: only for .pth)
  path = pathlib.Path(path)
  try:
    if key == "init_from":
      return convert.load_original(path, name)
    return convert.torch_to_flax(models.MODELS[name][1]["encoder"], convert.load_torch_state_dict(path))
  except Exception as e:  # torch/pickle/safetensors raise many types; the user needs the file and the cause
    text = " ".join(str(e).split()) or type(e).__name__
    text = text if len(text) <= 300 else text[:297] + "..."
    raise configlib.ConfigError(f"config.{key}: cannot use {path} as {name} weights "
                                f"({type(e).__name__}: {text})") from None


def snapshot_weights(path: str, model_section, input_size: int) -> Dict[str, Any]:
  """{"params", "batch_stats"} of the salt_jax snapshot folder `path`, a snapshot of the model section's
  network."""
  try:
    meta = checkpoints.snapshot_meta(path)
    if meta.get("model") != model_section.model:
      raise configlib.ConfigError(f"config.init_from: {path} is a snapshot of {meta.get('model')}, "
                                  f"not of {model_section.model}")
    variables, _ = checkpoints.load_model_snapshot(path, model_section, input_size)
  except rundir.WorkdirError as e:
    raise configlib.ConfigError(f"config.init_from: {e}") from None
  return variables


def merge(state, loaded: Dict[str, Any]):
  """The train state with what `load` read: the ImageNet encoder (pretrained) merged in, then every weight
  of init_from (the original solution's checkpoint or a salt_jax snapshot)."""
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  if "pretrained" in loaded:
    from salt_jax.models import convert  # pylint: disable=import-outside-toplevel
    variables = convert.merge_encoder_weights(variables, loaded["pretrained"])
    logging.info("loaded ImageNet encoder weights")
  if "init_from" in loaded:
    variables = loaded["init_from"]
    logging.info("initialised every weight from config.init_from")
  return state.replace(params=variables["params"], batch_stats=variables["batch_stats"])

"""The seven model variants of the solution (SPEC 3), plus `model_tiny`: `MODELS` registry and `get_model`.

    model = get_model("model_34", dtype=jnp.bfloat16)
    variables = model.init(rng, images, train=False)          # images (B,128,128,3)
    class_logits, no_empty_logits, final_logits = model.apply(variables, images, train=False)
"""
import dataclasses
from typing import Any, Dict, Tuple, Type

import flax.linen as nn

from salt_jax.models.unet import HypercolumnUNet, IBNDecoderUNet, SlimHypercolumnUNet

# name -> (family, default kwargs); SPEC 3.3 table for the encoders.
MODELS: Dict[str, Tuple[Type[nn.Module], Dict[str, Any]]] = {
    "model_34": (HypercolumnUNet, dict(encoder="resnet34")),
    "model_50A": (HypercolumnUNet, dict(encoder="seresnext50_32x4d")),
    "model_50A_slim": (SlimHypercolumnUNet, dict(encoder="seresnext50_32x4d")),
    "model_101A": (IBNDecoderUNet, dict(encoder="resnext101_ibn_a", head_dropout=0.5)),
    "model_101B": (IBNDecoderUNet, dict(encoder="seresnext101_32x4d", head_dropout=0.5)),
    "model_152": (SlimHypercolumnUNet, dict(encoder="legacy_seresnet152")),
    "model_154": (SlimHypercolumnUNet, dict(encoder="legacy_senet154")),
    # Not in the original: a narrow model_34 for laptops and CI (configs/cpu_small.py).
    "model_tiny": (HypercolumnUNet, dict(encoder="resnet_tiny", center_widths=(64, 32),
                                         decoder_mids=(32, 32, 16, 16, 8), decoder_width=8,
                                         class_features=8, head_hidden=8)),
}


def get_model(name: str, **overrides: Any) -> nn.Module:
  """The variant `name` with its defaults updated by `overrides` (e.g. dtype, bn_axis_name, align_corners)."""
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
  family, defaults = MODELS[name]
  fields = {f.name for f in dataclasses.fields(family) if f.init and f.name not in ("parent", "name")}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise TypeError(f"{name} ({family.__name__}) got unknown option(s) {unknown}; "
                    f"accepted: {sorted(fields)}")
  return family(**{**defaults, **overrides})


__all__ = ["MODELS", "get_model", "HypercolumnUNet", "SlimHypercolumnUNet", "IBNDecoderUNet"]

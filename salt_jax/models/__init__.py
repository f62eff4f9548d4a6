"""The seven model variants of the solution (SPEC 3), plus the CPU-sized `model_tiny` and `model_tiny_s2`:
`MODELS` registry, `get_model`, and `build`, the one way every program builds the model of a training
config from its model section.

    model = get_model("model_34", dtype=jnp.bfloat16)
    model = build(**configlib.section(config, "model"))     # model, dtype and the variant's switches
    variables = init_variables(model, rng, size=config.input_size)  # {'params', 'batch_stats'}
    class_logits, no_empty_logits, final_logits = model.apply(variables, images, train=False)
"""
import dataclasses
import functools
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Type

import flax.linen as nn
import jax
import jax.numpy as jnp

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
    # model_tiny without decoder1: heads at half the input size, logits resized up; twice as fast on CPU.
    "model_tiny_s2": (HypercolumnUNet, dict(encoder="resnet_tiny", center_widths=(64, 32),
                                            decoder_mids=(32, 32, 16, 16), decoder_width=8,
                                            class_features=8, head_hidden=16, head_stride=2)),
    # model_tiny_s2 at 1.5x every width: 1.75x its step time on CPU (docs/recipes.md, the wide ablation).
    "model_small_s2": (HypercolumnUNet, dict(encoder="resnet_small", center_widths=(96, 48),
                                             decoder_mids=(48, 48, 24, 24), decoder_width=12,
                                             class_features=12, head_hidden=24, head_stride=2)),
}


def get_model(name: str, **overrides: Any) -> nn.Module:
  """The variant `name` with its defaults updated by `overrides` (e.g. dtype, align_corners)."""
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
  family, defaults = MODELS[name]
  fields = {f.name for f in dataclasses.fields(family) if f.init and f.name not in ("parent", "name")}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise TypeError(f"{name} ({family.__name__}) got unknown option(s) {unknown}; "
                    f"accepted: {sorted(fields)}")
  return family(**{**defaults, **overrides})


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
  """'float32' | 'bfloat16' -> the JAX dtype of the model's computation (parameters stay float32)."""
  if name not in DTYPES:
    raise ValueError(f"config.dtype must be one of {sorted(DTYPES)}, got {name!r}")
  return DTYPES[name]


def build(model: str, dtype: str = "float32", **options: Any) -> nn.Module:
  """The network of a config's model section, `build(**section)`: the variant `model` computing in `dtype`
  ('float32' | 'bfloat16') with its switches (align_corners, decoder_dropout, ...); a switch left None
  takes the variant's default."""
  return get_model(model, dtype=compute_dtype(dtype), **{k: v for k, v in options.items() if v is not None})


def resolved_options(section: Mapping[str, Any]) -> Dict[str, Any]:
  """The switches of a model section (every key but model and dtype) with those left None set to the
  variant's defaults: two sections build the same network exactly when these (and model, dtype) agree."""
  if section["model"] not in MODELS:
    raise ValueError(f"unknown model {section['model']!r}; valid names: {', '.join(MODELS)}")
  family, defaults = MODELS[section["model"]]
  fields = {f.name: f.default for f in dataclasses.fields(family)}
  return {k: (v if v is not None else defaults.get(k, fields[k]))
          for k, v in section.items() if k not in ("model", "dtype")}


def init_compiler_options() -> Optional[Dict[str, Any]]:
  """Compiler options of one-off initialisation programs: on CPU, no LLVM optimisation. model_tiny's
  initialisation then compiles in 10 s instead of 60 s (2 busy cores) and gives bitwise the same values
  (tests/test_unet.py); other backends keep their defaults (None)."""
  return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


def _init(model: nn.Module, rng: jax.Array, batch: int, size: int):
  x = jnp.zeros((batch, size, size, 3), jnp.float32)
  return model.init({"params": rng, "dropout": rng}, x, train=False)


@functools.lru_cache(maxsize=None)
def _compiled_init(backend: str) -> Callable:
  del backend  # the cache key: init_compiler_options() depends on it
  return jax.jit(_init, static_argnums=(0, 2, 3), compiler_options=init_compiler_options())


def init_variables(model: nn.Module, rng: jax.Array, *, size: int, batch: int = 1):
  """Fresh {'params', 'batch_stats'} of a U-Net or an encoder: `model.init` on a zero (batch,size,size,3)
  float32 input in eval mode, `rng` seeding the 'params' and 'dropout' streams, as one compiled program
  (init_compiler_options) or, under a trace, as part of the caller's. The shapes do not depend on
  `size`; under `jax.eval_shape` nothing is allocated."""
  if isinstance(rng, jax.core.Tracer):  # under jit or eval_shape: part of the caller's program
    return _init(model, rng, batch, size)
  return _compiled_init(jax.default_backend())(model, rng, batch, size)


def check_input_size(model: nn.Module, size: int) -> None:
  """Raises ValueError unless `model` maps a (1, size, size, 3) input to (1, size, size) masks (traced with
  jax.eval_shape: nothing is computed)."""
  try:
    shapes = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                                           train=False)[0])
  except (TypeError, ValueError) as e:
    raise ValueError(str(e).splitlines()[0][:120]) from None
  if shapes[2].shape[1:3] != (size, size):
    raise ValueError(f"it returns {shapes[2].shape[1]}x{shapes[2].shape[2]} masks")


__all__ = ["MODELS", "DTYPES", "get_model", "build", "compute_dtype", "resolved_options", "init_variables",
           "HypercolumnUNet", "SlimHypercolumnUNet", "IBNDecoderUNet"]

"""Where a CPU training step goes: one 3x3 conv's forward, input gradient and weight gradient, JAX vs PyTorch.

model_34's step is almost all 3x3 convolutions, so these three times, per layer shape, explain the
whole-model ratio against PyTorch that `python -m salt_jax.bench --vs-torch` reports.

  python scripts/conv_profile.py [--threads=2] [--repeats=5]
"""
import json
import time

import numpy as np
from absl import flags

from salt_jax import cli

FLAGS = flags.FLAGS

# (batch, height=width, in channels, out channels): encoder stage 1/2 and the 128x128 decoder convs.
SHAPES = ((16, 64, 64, 64), (16, 32, 128, 128), (16, 128, 64, 32))


def median_ms(fn, repeats: int) -> float:
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times) * 1e3)


def jax_times(n, h, c, k, repeats):
  import jax
  import jax.numpy as jnp
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(n, h, h, c)).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(3, 3, c, k)).astype(np.float32))
  dy = jnp.ones((n, h, h, k), jnp.float32)
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  fwd = jax.jit(conv)
  dx = jax.jit(lambda x, w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy)[0])
  dw = jax.jit(lambda x, w, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0])
  return {"fwd": median_ms(lambda: fwd(x, w).block_until_ready(), repeats),
          "dx": median_ms(lambda: dx(x, w, dy).block_until_ready(), repeats),
          "dw": median_ms(lambda: dw(x, w, dy).block_until_ready(), repeats)}


def torch_times(n, h, c, k, repeats):
  import torch
  x = torch.randn(n, c, h, h, requires_grad=True)
  layer = torch.nn.Conv2d(c, k, 3, padding=1, bias=False)
  dy = torch.ones(n, k, h, h)
  with torch.no_grad():
    fwd = median_ms(lambda: layer(x), repeats)
  y = layer(x)
  return {"fwd": fwd,
          "dx": median_ms(lambda: torch.autograd.grad(y, x, dy, retain_graph=True), repeats),
          "dw": median_ms(lambda: torch.autograd.grad(y, layer.weight, dy, retain_graph=True), repeats)}


def define_flags() -> None:
  flags.DEFINE_integer("threads", 2, "PyTorch intra-op threads.")
  flags.DEFINE_integer("repeats", 5, "Timed calls per figure (the median is reported).")


def main(argv) -> None:
  del argv
  import torch
  torch.set_num_threads(FLAGS.threads)
  for n, h, c, k in SHAPES:
    j, t = jax_times(n, h, c, k, FLAGS.repeats), torch_times(n, h, c, k, FLAGS.repeats)
    gflop = 2 * n * h * h * c * k * 9 / 1e9
    print(json.dumps({"shape": f"{n}x{h}x{h}x{c}->{k}", "gflop": round(gflop, 2),
                      **{f"jax_{p}_ms": round(j[p], 1) for p in j},
                      **{f"torch_{p}_ms": round(t[p], 1) for p in t},
                      **{f"{p}_jax_speed_vs_torch": round(t[p] / j[p], 2) for p in j}}))


if __name__ == "__main__":
  cli.run(main, define_flags, prog="scripts/conv_profile.py")

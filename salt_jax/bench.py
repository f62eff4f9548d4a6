"""Speed of the hot paths, optionally side by side with the PyTorch reference, one JSON line per figure.

    python -m salt_jax.bench --model=model_34 --batch=16 --size=128 [--dtype=bfloat16] [--vs-torch]

Figures (after compilation; compile times are reported separately): training step images/s (on-device
augmentation, forward, backward, SGD), flip-TTA inference images/s, Lovasz hinge forward+backward ms
(batch 32 of 101x101 by default), and the 80-threshold metric sweep over 3,600 tiles. On an accelerator,
the model FLOP utilisation (XLA's FLOP count of the step over time, divided by --peak_tflops).
--vs-torch runs ../shared/bench/torch_reference.py (eager PyTorch model_34 and Lovasz) with the same
settings in the same run and adds the ratio JAX/PyTorch (its inference has no TTA, so it is run on
2x the batch and counted per original image).
"""
import argparse
import functools
import json
import pathlib
import re
import subprocess
import sys
import time
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from salt_jax import geometry, losses, metrics, models, schedules, steps

# Dense peak TFLOP/s by device kind and dtype, for the utilisation figure (vendor data sheets).
PEAK_TFLOPS = {("NVIDIA H100 80GB HBM3", "bfloat16"): 989.0, ("NVIDIA H100 80GB HBM3", "float32"): 494.0,
               ("NVIDIA H200", "bfloat16"): 989.0, ("NVIDIA H200", "float32"): 494.0}
REPO = pathlib.Path(__file__).resolve().parents[1]


def timed(fn: Callable, args, steps_: int, warmup: int) -> float:
  """Seconds per call of an already compiled fn, after `warmup` calls (results blocked on)."""
  out = None
  for _ in range(warmup):
    out = fn(*args)
  jax.block_until_ready(out)
  t0 = time.perf_counter()
  for _ in range(steps_):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / steps_


def compile_timed(jitted, *args):
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - t0


def flops_of(compiled) -> Optional[float]:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"]) if cost and "flops" in cost else None


def fake_batch(batch: int, seed: int = 0) -> Dict[str, np.ndarray]:
  """Random uint8 tiles and blob-like masks, a quarter of them empty (like the real data)."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (batch, *geometry.TILE_SHAPE), dtype=np.uint8)
  yy, xx = np.mgrid[:geometry.TILE, :geometry.TILE]
  cy, cx, r = rng.uniform(0, geometry.TILE, (3, batch, 1, 1))
  masks = (((yy - cy) ** 2 + (xx - cx) ** 2) < (r * 0.6) ** 2).astype(np.uint8)
  masks[: batch // 4] = 0
  return {"image": images, "mask": masks}


def bench_train(model, batch: int, dtype, steps_: int, warmup: int):
  tx = schedules.make_optimizer(lr=0.01)
  state = steps.create_train_state(model, tx, jax.random.key(0))
  state = state.replace(opt_state=schedules.set_learning_rate(state.opt_state, 0.01))
  data = jax.tree.map(jnp.asarray, fake_batch(batch))
  weights = dict(class_weight=0.05, no_empty_weight=0.5, dice_weight=0.5, bce_weight=0.9)
  fn = jax.jit(functools.partial(steps.train_step, seg_loss="lovasz", loss_weights=weights, dtype=dtype),
               donate_argnums=(0,))
  compiled, compile_s = compile_timed(fn, state, data, jax.random.key(1))
  holder = [state]

  def step():
    holder[0], m = compiled(holder[0], data, jax.random.key(1))
    return m["loss"]
  sec = timed(step, (), steps_, warmup)
  return batch / sec, compile_s, flops_of(compiled), sec


def bench_infer(model, batch: int, dtype, steps_: int, warmup: int):
  x = jnp.zeros((1, geometry.CANVAS, geometry.CANVAS, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  images = jnp.asarray(fake_batch(batch)["image"])
  fn = jax.jit(lambda v, x: steps.tta_logits(model.apply, v, x, dtype))
  compiled, compile_s = compile_timed(fn, variables, images)
  sec = timed(compiled, (variables, images), steps_, warmup)
  return batch / sec, compile_s, flops_of(compiled), sec


def bench_lovasz(batch: int, size: int, steps_: int, warmup: int):
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(batch, size, size)).astype(np.float32))
  labels = jnp.asarray((rng.random((batch, size, size)) > 0.6).astype(np.float32))
  fn = jax.jit(jax.value_and_grad(losses.lovasz_hinge))
  compiled, compile_s = compile_timed(fn, logits, labels)
  return timed(compiled, (logits, labels), steps_, warmup) * 1e3, compile_s


def bench_sweep(n: int = 3600, repeats: int = 3) -> float:
  truth = np.concatenate([fake_batch(400, seed=s)["mask"] for s in range(n // 400)])
  rng = np.random.default_rng(0)
  logits = (np.where(truth > 0, 2.0, -2.0) + rng.normal(size=truth.shape)).astype(np.float32)
  best = np.inf
  for _ in range(repeats):
    t0 = time.perf_counter()
    metrics.threshold_sweep(logits, truth)
    best = min(best, time.perf_counter() - t0)
  return best


def torch_figure(reference: pathlib.Path, what: str, batch: int, size: int, device: str, steps_: int,
                 warmup: int) -> float:
  """Runs the PyTorch reference in a subprocess; returns its images/s (train, infer) or ms (lovasz)."""
  cmd = [sys.executable, str(reference), "--what", what, "--batch", str(batch), "--size", str(size),
         "--steps", str(steps_), "--warmup", str(warmup), "--device", device]
  out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
  m = re.search(r"images_per_s=([\d.]+) ms_per_step=([\d.]+)", out)
  if not m:
    raise RuntimeError(f"unexpected output from {reference}: {out!r}")
  return float(m.group(2)) if what == "lovasz" else float(m.group(1))


def emit(figure: str, value: float, unit: str, context: Dict, torch_value: Optional[float] = None,
         higher_is_better: bool = True, **extra) -> Dict:
  row = dict(figure=figure, value=round(value, 4), unit=unit, **context, **extra)
  if torch_value is not None:
    row["torch"] = round(torch_value, 4)
    row["ratio_vs_torch"] = round(value / torch_value if higher_is_better else torch_value / value, 3)
  print(json.dumps(row), flush=True)
  return row


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m salt_jax.bench", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="model_34", choices=sorted(models.MODELS))
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--size", type=int, default=geometry.CANVAS,
                 help="network input size; the solution fixes 128")
  p.add_argument("--dtype", default="float32", choices=sorted(models.DTYPES))
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--lovasz_batch", type=int, default=32)
  p.add_argument("--lovasz_size", type=int, default=geometry.TILE)
  p.add_argument("--only", default="train,infer,lovasz,sweep", help="comma list of figures to run")
  p.add_argument("--vs-torch", dest="vs_torch", action="store_true")
  p.add_argument("--torch_reference", default=str(REPO.parent / "shared" / "bench" / "torch_reference.py"))
  p.add_argument("--device", default=None, help="torch device for --vs-torch (default: cuda if JAX has a GPU)")
  p.add_argument("--peak_tflops", type=float, default=None, help="peak for the utilisation figure")
  a = p.parse_args(argv)
  if a.size != geometry.CANVAS:
    p.error("--size must be 128: tiles are padded 101 -> 128 and the model broadcasts at 128 (SPEC 10.4)")
  dev = jax.devices()[0]
  torch_device = a.device or ("cuda" if dev.platform == "gpu" else "cpu")
  context = dict(model=a.model, batch=a.batch, size=a.size, dtype=a.dtype, device=dev.device_kind,
                 backend=dev.platform, n_devices=jax.device_count())
  peak = a.peak_tflops or PEAK_TFLOPS.get((dev.device_kind, a.dtype))
  reference = pathlib.Path(a.torch_reference)
  if a.vs_torch and not reference.exists():
    p.error(f"--vs-torch: {reference} not found (set --torch_reference)")
  torch_val = lambda *args: torch_figure(reference, *args, torch_device, a.steps, a.warmup) if a.vs_torch else None
  only = set(a.only.split(","))
  model = models.get_model(a.model, dtype=models.DTYPES[a.dtype])
  rows = []
  if "train" in only:
    ips, compile_s, flops, sec = bench_train(model, a.batch, models.DTYPES[a.dtype], a.steps, a.warmup)
    extra = {"compile_s": round(compile_s, 2)}
    if flops:
      extra["tflops_per_s"] = round(flops / sec / 1e12, 3)
      if peak:
        extra["mfu_percent"] = round(100 * flops / sec / 1e12 / peak, 2)
    rows.append(emit("train_images_per_s", ips, "images/s", context,
                     torch_val("train", a.batch, a.size), **extra))
  if "infer" in only:
    ips, compile_s, _, _ = bench_infer(model, a.batch, models.DTYPES[a.dtype], a.steps, a.warmup)
    t = torch_val("infer", 2 * a.batch, a.size)
    rows.append(emit("infer_tta_images_per_s", ips, "images/s", context, t / 2 if t else None,
                     compile_s=round(compile_s, 2)))
  if "lovasz" in only:
    ms, compile_s = bench_lovasz(a.lovasz_batch, a.lovasz_size, a.steps, a.warmup)
    rows.append(emit("lovasz_fwd_bwd_ms", ms, "ms/batch", dict(context, batch=a.lovasz_batch,
                     size=a.lovasz_size, dtype="float32"), torch_val("lovasz", a.lovasz_batch, a.lovasz_size),
                     higher_is_better=False, compile_s=round(compile_s, 2)))
  if "sweep" in only:
    rows.append(emit("metric_sweep_s", bench_sweep(), "s (80 thresholds x 3,600 tiles)",
                     dict(backend="numpy", device="host CPU")))
  return rows


if __name__ == "__main__":
  main()

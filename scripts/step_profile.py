"""Where one training step's time goes, by kind of op, in JAX (jax.profiler) and eager PyTorch (torch.profiler).

    python scripts/step_profile.py --model=model_tiny_s2 --input_size=104 --batch=16 [--cpu_ynn_fusion=...]

Both sides train the same network (`../shared/bench/torch_reference.py` builds model_34, model_tiny and
model_tiny_s2) on one fake batch with the Lovasz step and SGD, as `salt_jax.bench --only=train` does. After
warm-up, `--steps` steps are traced; each op's time is put in a category (conv forward, conv backward,
BatchNorm, bilinear resize, scSE, loss, optimiser, augmentation and RNG, layout copies, other) by the
model scope and primitive XLA records in each HLO op's metadata, and on the PyTorch side by the aten op's
name. Prints one JSON line per framework: ms per step in each category, the step's wall time, and the part
of the wall time in which no op ran (dispatch, executor and thread-pool idle time).

XLA:CPU records one event per thunk on the thread that ran it; an op that splits its work over the thread
pool counts once, for its wall time, so the categories add up to the time ops ran, not to core-seconds.
An asynchronous thunk is recorded at its launch only: with XLA's own (Eigen) convolutions
(`--cpu_ynn_fusion=none` or `reduce`) the convolutions' time falls in `ms_outside_ops`; with XLA's default
kernels (YNNPACK convolutions, `--cpu_ynn_fusion=`) every op is synchronous and accounted for.
"""
import collections
import glob
import gzip
import importlib.util
import json
import pathlib
import re
import tempfile
import time
from typing import Dict, List, Tuple

from absl import flags

from salt_jax import cli

FLAGS = flags.FLAGS
REPO = pathlib.Path(__file__).resolve().parents[1]
CATEGORIES = ("conv forward", "conv backward", "BatchNorm", "bilinear resize", "scSE", "loss",
              "optimiser", "augmentation + RNG", "layout copies", "other")
# HLO line: `%name = shape opcode(...), ..., calls=%comp, ..., metadata={op_name="..." ...}`.
_INSTR = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.+?) ([a-z\-]+)\(")
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def define_flags() -> None:
  flags.DEFINE_string("model", "model_tiny_s2", "Model name (one the PyTorch reference builds).")
  flags.DEFINE_integer("input_size", 104, "Input size (the padded canvas).")
  flags.DEFINE_integer("batch", 16, "Batch size.")
  flags.DEFINE_integer("steps", 10, "Traced steps.")
  flags.DEFINE_integer("warmup", 3, "Untraced steps first.")
  flags.DEFINE_string("cpu_ynn_fusion", "", "As config.cpu_ynn_fusion (e.g. dot,eltwise,reduce).")
  flags.DEFINE_bool("torch", True, "Also profile the PyTorch reference.")
  flags.DEFINE_string("torch_reference", str(REPO.parent / "shared" / "bench" / "torch_reference.py"),
                      "The PyTorch reference script.")
  flags.DEFINE_integer("top", 0, "Also list the N slowest ops of each side.")


def parse_hlo(text: str) -> Dict[str, Tuple[str, str, str]]:
  """{instruction name: (opcode, op_name, opcodes of its fused computation joined by spaces)}."""
  comps: Dict[str, List[str]] = collections.defaultdict(list)
  instrs, current = {}, None
  for line in text.splitlines():
    if line and not line.startswith(" ") and "{" in line:
      current = line.split()[0].lstrip("%") if not line.startswith("ENTRY") else line.split()[1].lstrip("%")
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    name, _, opcode = m.groups()
    comps[current].append(opcode)
    calls = _CALLS.search(line)
    op_name = _OP_NAME.search(line)
    instrs[name] = (opcode, op_name.group(1) if op_name else "", calls.group(1) if calls else "")
  return {n: (op, on, " ".join(comps.get(c, ()))) for n, (op, on, c) in instrs.items()}


def jax_category(name: str, opcode: str, op_name: str, fused: str) -> str:
  """The category of one XLA op from its opcode, its fused computation's opcodes and its op_name."""
  backward = "transpose(" in op_name
  ops = f"{opcode} {fused}"
  if "convolution" in ops:  # XLA's rewrites of the weight gradients leave their convolutions unnamed
    return "conv backward" if backward or not op_name else "conv forward"
  if "sort" in ops or re.search(r"searchsorted|take_along_axis|elu|lovasz|log_softmax", op_name):
    return "loss"
  if re.search(r"jvp\([A-Z]", op_name):  # inside a Flax module (jvp(HypercolumnUNet)/decoder2/...)
    if re.search(r"/bn\d*/|/downsample_1/", op_name):
      return "BatchNorm"
    if "oh,bhwc,pw->bopc" in op_name or "resize" in op_name:
      return "bilinear resize"
    if "/scse/" in op_name:
      return "scSE"
    return "other"
  if re.search(r"threefry|_randint|_bernoulli|_uniform|vmap\(\)", op_name):
    return "augmentation + RNG"
  if opcode == "copy" or name.startswith(("transpose_copy", "copy")) or op_name.startswith("state."):
    return "layout copies"
  if "jvp(" in op_name:
    return "loss"
  if op_name:
    return "optimiser"
  return "other"


def op_spans(events: List[Dict]) -> List[Tuple[str, float, float]]:
  """(HLO op, start us, end us) of every op event of the trace. An asynchronous thunk (XLA's own Eigen
  convolutions, handed to the thread pool) is recorded at its launch only: its run time falls in the
  part of the step outside the ops."""
  return [(e["args"]["hlo_op"], e["ts"], e["ts"] + e["dur"]) for e in events
          if e.get("ph") == "X" and "hlo_op" in e.get("args", {})]


def busy_union(intervals: List[Tuple[float, float]]) -> float:
  """Total length covered by at least one of the (start, end) intervals."""
  total, end = 0.0, float("-inf")
  for s, e in sorted(intervals):
    if e > end:
      total += e - max(s, end)
      end = e
  return total


def profile_jax(a) -> Dict:
  import jax
  import jax.numpy as jnp
  from salt_jax import models
  from salt_jax.tools import bench
  from salt_jax.training import steps
  model = models.get_model(a.model, dtype=jnp.float32)
  fn, (state, data, key) = bench.train_setup(model, a.batch, canvas=a.input_size)
  compiled = fn.lower(state, data, key).compile(steps.train_compiler_options(a.cpu_ynn_fusion))
  ops = parse_hlo(compiled.as_text())
  holder = [state]

  def run(n):
    for _ in range(n):
      holder[0], m = compiled(holder[0], data, key)
    jax.block_until_ready(m)
  run(a.warmup)
  logdir = tempfile.mkdtemp(prefix="step_profile_")
  jax.profiler.start_trace(logdir, create_perfetto_trace=True)
  t0 = time.perf_counter()
  run(a.steps)
  wall = (time.perf_counter() - t0) / a.steps
  jax.profiler.stop_trace()
  trace = json.load(gzip.open(glob.glob(f"{logdir}/plugins/profile/*/perfetto_trace.json.gz")[0]))
  ms, per_op, spans = collections.Counter(), collections.Counter(), []
  for op, start, end in op_spans(trace["traceEvents"]):
    opcode, op_name, fused = ops.get(op, ("", "", ""))
    ms[jax_category(op, opcode, op_name, fused)] += (end - start) / 1e3 / a.steps
    per_op[f"{op} [{op_name[-60:]}]"] += (end - start) / 1e3 / a.steps
    spans.append((start, end))
  in_ops = busy_union(spans) / 1e3 / a.steps
  return summary("jax", ms, wall, in_ops, per_op, a)


def torch_category(name: str) -> str:
  if "convolution_backward" in name:
    return "conv backward"
  if re.search(r"conv|mkldnn_conv", name):
    return "conv forward"
  if "batch_norm" in name:
    return "BatchNorm"
  if "upsample_bilinear" in name:
    return "bilinear resize"
  if re.search(r"sort|elu|cumsum|cross_entropy|nll|log_softmax|index|dot", name):
    return "loss"
  if re.search(r"Optimizer|_foreach|sgd|adamw", name, re.I):
    return "optimiser"
  if re.search(r"copy_|contiguous|clone", name):
    return "layout copies"
  return "other"


def profile_torch(a) -> Dict:
  import torch
  spec = importlib.util.spec_from_file_location("torch_reference", a.torch_reference)
  ref = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ref)
  torch.manual_seed(0)
  x = torch.randn(a.batch, 3, a.input_size, a.input_size)
  mask = (torch.rand(a.batch, 1, a.input_size, a.input_size) > 0.6).float()
  mask[: a.batch // 4] = 0
  empty = (mask.flatten(1).sum(1) == 0).long()
  model = ref.MODELS[a.model]().train()
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

  def step():
    opt.zero_grad(set_to_none=True)
    ref.total_loss(model(x), mask, empty).backward()
    opt.step()
  for _ in range(a.warmup):
    step()
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    t0 = time.perf_counter()
    for _ in range(a.steps):
      step()
    wall = (time.perf_counter() - t0) / a.steps
  ms, per_op = collections.Counter(), collections.Counter()
  for e in prof.key_averages():
    if e.self_cpu_time_total > 0:
      ms[torch_category(e.key)] += e.self_cpu_time_total / 1e3 / a.steps
      per_op[e.key] += e.self_cpu_time_total / 1e3 / a.steps
  return summary("torch", ms, wall, sum(ms.values()), per_op, a)


def summary(framework: str, ms: Dict[str, float], wall: float, in_ops: float, per_op: Dict[str, float],
            a) -> Dict:
  row = {"framework": framework, "model": a.model, "size": a.input_size, "batch": a.batch,
         "step_ms": round(wall * 1e3, 1), "images_per_s": round(a.batch / wall, 1),
         "ms_by_category": {c: round(ms.get(c, 0.0), 1) for c in CATEGORIES},
         "ms_in_ops": round(in_ops, 1), "ms_outside_ops": round(wall * 1e3 - in_ops, 1)}
  if framework == "jax":
    row["cpu_ynn_fusion"] = a.cpu_ynn_fusion
  if a.top:
    row["top_ops"] = {k: round(v, 2) for k, v in collections.Counter(per_op).most_common(a.top)}
  print(json.dumps(row), flush=True)
  return row


def main(argv) -> List[Dict]:
  del argv
  rows = [profile_jax(FLAGS)]
  if FLAGS.torch:
    rows.append(profile_torch(FLAGS))
  return rows


if __name__ == "__main__":
  cli.run(main, define_flags, prog="step_profile")

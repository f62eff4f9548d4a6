"""scripts/step_profile.py: HLO parsing, the op categories and the busy-time union (no tracing here)."""
import importlib.util
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "step_profile.py"
spec = importlib.util.spec_from_file_location("step_profile", SCRIPT)
step_profile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(step_profile)


class Net(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Conv(4, (3, 3), name="conv")(x)
    x = nn.BatchNorm(use_running_average=False, name="bn")(x)
    return jnp.sum(jax.nn.relu(x) ** 2)


def test_compiled_ops_are_parsed_and_put_in_their_categories():
  """Every op of a compiled conv + BatchNorm gradient is found with its op_name; the convolutions fall in
  the forward and backward conv categories, the BatchNorm ops in BatchNorm."""
  model = Net()
  x = jnp.ones((2, 8, 8, 3))
  variables = model.init(jax.random.key(0), x)
  grad = jax.jit(jax.grad(lambda p: model.apply({"params": p, "batch_stats": variables["batch_stats"]}, x,
                                                mutable=["batch_stats"])[0]))
  text = grad.lower(variables["params"]).compile().as_text()
  ops = step_profile.parse_hlo(text)
  categories = {}
  for name, (opcode, op_name, fused) in ops.items():
    categories.setdefault(step_profile.jax_category(name, opcode, op_name, fused), []).append(name)
  assert set(categories) <= set(step_profile.CATEGORIES)
  assert categories.get("conv forward") and categories.get("conv backward")
  assert any("/bn/" in ops[n][1] for n in categories.get("BatchNorm", []))
  conv_ops = [n for n, (opcode, _, fused) in ops.items() if "convolution" in f"{opcode} {fused}"]
  assert sorted(conv_ops) == sorted(categories["conv forward"] + categories["conv backward"])


@pytest.mark.parametrize("intervals, total", [
    ([], 0.0), ([(0, 2)], 2.0), ([(0, 2), (1, 3)], 3.0), ([(0, 1), (2, 3)], 2.0), ([(0, 5), (1, 2), (3, 4)], 5.0),
])
def test_busy_union_counts_overlapping_time_once(intervals, total):
  assert step_profile.busy_union(intervals) == total

"""The seven variants (SPEC 3.4-3.7): shapes, registry, dropout, torch equivalence, cross-device BN."""
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_param_counts import decoder_params
from salt_jax import models
from salt_jax.models import encoders, layers, unet
from conftest import FAST_COMPILE, TWO_CPU_DEVICES

pytestmark = pytest.mark.usefixtures("highest_precision")  # torch comparisons; GPUs default to TF32
NAMES = ["model_34", "model_50A", "model_50A_slim", "model_101A", "model_101B", "model_152", "model_154"]
RNGS = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}


def _abstract(model, shape=(2, 128, 128, 3), dtype=jnp.float32):
  x = jax.ShapeDtypeStruct(shape, dtype)
  variables = jax.eval_shape(lambda x: model.init(RNGS, x, train=False), x)
  outs = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, rngs={"dropout": RNGS["dropout"]},
                                                 mutable=["batch_stats"]), variables, x)
  return variables, outs


def test_registry_has_the_seven_variants():
  assert list(models.MODELS)[:7] == NAMES  # extra non-original entries (CPU-sized) may follow
  fam = {n: models.MODELS[n][0] for n in NAMES}
  assert fam["model_34"] is fam["model_50A"] is unet.HypercolumnUNet
  assert fam["model_50A_slim"] is fam["model_152"] is fam["model_154"] is unet.SlimHypercolumnUNet
  assert fam["model_101A"] is fam["model_101B"] is unet.IBNDecoderUNet
  enc = {n: models.get_model(n).encoder for n in NAMES}
  assert enc == {"model_34": "resnet34", "model_50A": "seresnext50_32x4d",
                 "model_50A_slim": "seresnext50_32x4d", "model_101A": "resnext101_ibn_a",
                 "model_101B": "seresnext101_32x4d",
                 "model_152": "legacy_seresnet152", "model_154": "legacy_senet154"}
  for n in NAMES:
    m = models.get_model(n)
    assert m.decoder_dropout == 0.0 and m.align_corners is True
    assert m.head_dropout == (0.5 if n in ("model_101A", "model_101B") else 0.0)


def test_get_model_errors():
  with pytest.raises(ValueError, match="model_34, model_50A, model_50A_slim"):
    models.get_model("model_18")
  with pytest.raises(TypeError, match="unknown option.*'dropuot'"):
    models.get_model("model_34", dropuot=0.1)
  m = models.get_model("model_34", dtype=jnp.bfloat16, align_corners=False, decoder_dropout=0.1)
  assert m.dtype == jnp.bfloat16 and not m.align_corners and m.decoder_dropout == 0.1
  # An unknown encoder is named by the one lookup (encoders.get_encoder) when the network is traced.
  with pytest.raises(ValueError, match=r"unknown encoder 'resnet18'; choose from \['legacy_senet154'"):
    jax.eval_shape(lambda: models.init_variables(models.get_model("model_tiny", encoder="resnet18"),
                                                 jax.random.key(0), size=128))


@pytest.mark.parametrize("name", NAMES)
def test_variant_output_shapes(name):
  variables, (outs, state) = _abstract(models.get_model(name))
  cls, no_empty, final = outs
  assert (cls.shape, no_empty.shape, final.shape) == ((2, 2), (2, 128, 128, 1), (2, 128, 128, 1))
  assert all(o.dtype == jnp.float32 for o in outs)
  assert set(variables) == {"params", "batch_stats"} and "encoder" in variables["params"]
  assert jax.tree.structure(state["batch_stats"]) == jax.tree.structure(variables["batch_stats"])
  p = variables["params"]
  assert p["classifier"]["fc"]["kernel"].shape == (64, 2)
  count = lambda tree: sum(leaf.size for leaf in jax.tree.leaves(tree))
  assert count(p) - count(p["encoder"]) == decoder_params(name)  # SPEC layer lists counted by hand
  if name in ("model_101A", "model_101B"):  # dec2 (128) | dec2 + center_64 (192) -> 32 -> 1
    assert p["head_no_empty"]["conv1"]["kernel"].shape == (3, 3, 128, 32)
    assert p["head_final"]["conv1"]["kernel"].shape == (3, 3, 192, 32)
    assert p["se5"]["fc1"]["kernel"].shape == (2304, 144)
    assert p["decoder5"]["ibn"]["IN"]["scale"].shape == (288,)
  else:  # hypercolumn (320) | hypercolumn + center_64 (384) -> 64 -> 1
    assert p["head_no_empty"]["conv1"]["kernel"].shape == (3, 3, 320, 64)
    assert p["head_final"]["conv1"]["kernel"].shape == (3, 3, 384, 64)
    assert p["center"]["block2"]["conv"]["kernel"].shape == (3, 3, 512, 256)
  if name == "model_34":
    widths = [p[f"decoder{i}"]["block1"]["conv"]["kernel"].shape[2] for i in (5, 4, 3, 2, 1)]
    assert widths == [768, 320, 192, 128, 64]
  if name == "model_50A":
    widths = [p[f"decoder{i}"]["block1"]["conv"]["kernel"].shape[2] for i in (5, 4, 3, 2, 1)]
    assert widths == [2304, 1088, 576, 320, 64]
  if name in ("model_50A_slim", "model_152", "model_154"):
    assert [p[f"lateral{i}"]["block"]["conv"]["kernel"].shape[2:] for i in (2, 3, 4, 5)] == [
        (256, 64), (512, 128), (1024, 256), (2048, 512)]
    assert p["center"]["block1"]["conv"]["kernel"].shape == (3, 3, 2048, 512)  # un-reduced layer4
    assert p["decoder5"]["bottleneck1"]["conv1"]["kernel"].shape == (1, 1, 768, 192)


def test_head_stride_2_runs_the_heads_at_half_size_and_resizes_their_logits():
  """model_tiny_s2: no decoder1; each logit map is the bilinear resize of its head's (B,52,52,1) output."""
  model = models.get_model("model_tiny_s2")
  x = jax.random.normal(jax.random.key(0), (2, 104, 104, 3))
  variables = model.init(RNGS, x, train=False)
  assert "decoder1" not in variables["params"] and "decoder2" in variables["params"]
  assert variables["params"]["head_final"]["conv1"]["kernel"].shape == (3, 3, 4 * 8 + 8, 16)
  outs, inter = model.apply(variables, x, train=False, capture_intermediates=True)
  assert [o.shape for o in outs] == [(2, 2), (2, 104, 104, 1), (2, 104, 104, 1)]
  for name, logits in (("head_no_empty", outs[1]), ("head_final", outs[2])):
    (half,) = inter["intermediates"][name]["__call__"]
    assert half.shape == (2, 52, 52, 1)
    np.testing.assert_allclose(logits, layers.resize_bilinear(half, (104, 104), True), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="head_stride 2 needs 4 decoder_mids .* got 5"):
    models.get_model("model_tiny", head_stride=2).init(RNGS, x, train=False)


def test_model_small_s2_is_model_tiny_s2_at_one_and_a_half_widths():
  """model_small_s2: every convolution of model_tiny_s2 with 1.5x its channels (2.25x the weights)."""
  nets = {name: models.get_model(name) for name in ("model_tiny_s2", "model_small_s2")}
  variables = {name: jax.eval_shape(lambda m=m: models.init_variables(m, jax.random.key(0), size=104))
               for name, m in nets.items()}
  tiny, small = (jax.tree_util.tree_flatten_with_path(variables[n]["params"])[0]
                 for n in ("model_tiny_s2", "model_small_s2"))
  assert [path for path, _ in tiny] == [path for path, _ in small]
  for (path, t), (_, s) in zip(tiny, small):
    if path[-1].key == "kernel" and len(t.shape) == 4 and t.shape[2] > 3:  # convolutions past the RGB stem
      assert s.shape[:2] == t.shape[:2] and s.shape[2:] == tuple(3 * c // 2 for c in t.shape[2:]), path
  assert sum(x.size for _, x in small) == 1_997_108
  out = jax.eval_shape(lambda v: nets["model_small_s2"].apply(v, jnp.zeros((2, 104, 104, 3)), train=False),
                       variables["model_small_s2"])
  assert [o.shape for o in out] == [(2, 2), (2, 104, 104, 1), (2, 104, 104, 1)]


def test_quickly_compiled_initialisation_gives_the_default_compilations_values():
  """init_variables' own program (init_compiler_options: no LLVM optimisation on CPU) and the same
  initialisation inside a default-compiled jit give bitwise the same variables."""
  encoder = encoders.get_encoder("resnet_tiny")
  key = jax.random.key(3)
  fast = models.init_variables(encoder, key, size=64)
  default = jax.jit(lambda k: models.init_variables(encoder, k, size=64))(key)
  assert jax.tree.structure(fast) == jax.tree.structure(default)
  for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(default)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  variables, (outs, _) = _abstract(models.get_model("model_50A_slim", dtype=jnp.bfloat16))
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  assert all(o.dtype == jnp.float32 for o in outs)


@pytest.mark.slow
def test_model_34_forward_and_default_dropout_is_a_no_op():
  model = models.get_model("model_34")
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 128, 128, 3))
  variables = models.init_variables(model, jax.random.PRNGKey(0), size=128)
  train = jax.jit(lambda v, x, r: model.apply(v, x, train=True, rngs={"dropout": r},
                                              mutable=["batch_stats"]))
  (o1, s1), (o2, _) = train(variables, x, jax.random.PRNGKey(3)), train(variables, x, jax.random.PRNGKey(4))
  for a, b in zip(o1, o2):  # decoder_dropout = head_dropout = 0: two dropout rngs give identical outputs
    np.testing.assert_array_equal(a, b)
  assert [o.shape for o in o1] == [(2, 2), (2, 128, 128, 1), (2, 128, 128, 1)]
  assert all(np.isfinite(o).all() for o in o1)
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), s1["batch_stats"], variables["batch_stats"])
  assert max(jax.tree.leaves(moved)) > 0  # running statistics updated in train mode
  evals = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  assert all(np.isfinite(o).all() for o in evals)


@pytest.mark.slow
def test_101_head_dropout_active_in_train_only():
  # model_101A's decoder/heads with its default head_dropout 0.5 on the small ResNet-34 encoder (CPU-sized).
  assert models.get_model("model_101A").head_dropout == 0.5
  model = models.get_model("model_101A", encoder="resnet34")
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 64, 64, 3))
  variables = models.init_variables(model, jax.random.PRNGKey(0), size=64)
  train = jax.jit(lambda v, r: model.apply(v, x, train=True, rngs={"dropout": r}, mutable=["batch_stats"])[0])
  c1, n1, f1 = train(variables, jax.random.PRNGKey(3))
  c2, n2, f2 = train(variables, jax.random.PRNGKey(4))
  assert f1.shape == (2, 64, 64, 1)
  np.testing.assert_array_equal(c1, c2)  # the classifier has no dropout
  assert not np.allclose(f1, f2) and not np.allclose(n1, n2)
  evaluate = jax.jit(lambda v, r: model.apply(v, x, train=False, rngs={"dropout": r}))
  for a, b in zip(evaluate(variables, jax.random.PRNGKey(3)), evaluate(variables, jax.random.PRNGKey(4))):
    np.testing.assert_array_equal(a, b)


@pytest.mark.torch
@pytest.mark.slow
def test_model_34_matches_torch_reference():
  """Our model_34 (align_corners=False, eval) equals /work/shared/bench/torch_reference.py's Model34.

  The reference is structurally SPEC 3.4 but with modern align_corners=False bilinear upsampling and its
  dropouts active in train mode, so the comparison is in eval mode with align_corners=False.
  """
  torch = pytest.importorskip("torch")
  from torch_model34_map import REFERENCE, load_reference, torch_model34_to_flax
  if not REFERENCE.exists():
    pytest.skip(f"{REFERENCE} not found")
  torch.manual_seed(0)
  ref = load_reference().Model34()
  g = torch.Generator().manual_seed(0)
  with torch.no_grad():  # non-trivial BN affine and running statistics, so eval mode must use them
    for m in ref.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
        m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
        m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
  ref.eval()
  x = torch.randn(2, 3, 128, 128, generator=g)
  with torch.no_grad():
    expected = [t.numpy() for t in ref(x)]
  model = models.get_model("model_34", align_corners=False)
  target = jax.eval_shape(lambda: model.init(RNGS, jnp.zeros((2, 128, 128, 3)), train=False))
  variables = torch_model34_to_flax(ref.state_dict(), target)
  x_nhwc = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
  ours = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x_nhwc)
  cls, no_empty, final = (np.asarray(o) for o in ours)
  errors = {"class_logits": np.abs(cls - expected[0]).max(),
            "no_empty_logits": np.abs(no_empty[..., 0] - expected[1][:, 0]).max(),
            "final_logits": np.abs(final[..., 0] - expected[2][:, 0]).max()}
  scale = max(np.abs(e).max() for e in expected)
  print("max abs error vs torch Model34:", errors, "output scale:", scale)
  assert max(errors.values()) < 1e-4 * max(scale, 1.0), errors


_BN_SCRIPT = textwrap.dedent("""
  import json
  import jax, numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  from salt_jax import models
  assert jax.device_count() == 2, jax.devices()
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 64, 64, 3))
  model = models.get_model("model_34")
  variables = models.init_variables(model, jax.random.PRNGKey(1), size=64)
  stats = lambda m: (lambda v, x: m.apply(v, x, train=True, mutable=["batch_stats"])[1]["batch_stats"])
  dev0 = jax.devices()[0]
  one = jax.jit(stats(model))(jax.device_put(variables, dev0), jax.device_put(x, dev0))
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  xs = jax.device_put(x, NamedSharding(mesh, P("data")))
  assert len(xs.addressable_shards) == 2 and xs.addressable_shards[0].data.shape[0] == 2
  repl = NamedSharding(mesh, P())
  sharded = jax.jit(stats(model), out_shardings=repl)(jax.device_put(variables, repl), xs)
  copies = jax.tree.map(lambda a: np.stack([np.asarray(s.data) for s in a.addressable_shards]), sharded)
  local = jax.jit(stats(model))(variables, x[:2])
  err = lambda p, q: float(np.abs(np.asarray(p) - np.asarray(q)).max())
  diff = lambda a, b: max(jax.tree.leaves(jax.tree.map(err, a, b)))
  moved = diff(one, variables["batch_stats"])
  print(json.dumps(dict(
      moved=moved, sharded=diff(one, sharded),
      replica0=diff(one, jax.tree.map(lambda a: a[0], copies)),
      replicas=diff(jax.tree.map(lambda a: a[0], copies), jax.tree.map(lambda a: a[1], copies)),
      half_batch=diff(one, local))))
""")


@pytest.mark.slow
def test_cross_device_batch_norm_uses_global_batch_statistics():
  env = dict(os.environ, XLA_FLAGS=f"{TWO_CPU_DEVICES} {FAST_COMPILE}", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _BN_SCRIPT], env=env, capture_output=True, text=True,
                        timeout=1200)
  assert proc.returncode == 0, proc.stderr[-4000:]
  r = json.loads(proc.stdout.strip().splitlines()[-1])
  print("batch_stats max abs differences:", r)
  assert r["moved"] > 1e-3  # the statistics did change
  assert r["sharded"] < 2e-5 and r["replica0"] < 2e-5 and r["replicas"] == 0.0
  assert r["half_batch"] > 100 * max(r["sharded"], r["replica0"], 1e-7)  # per-device stats would differ

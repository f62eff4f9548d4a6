"""Encoders (SPEC 3.3): shapes, and faithfulness of the torch -> Flax weight import against PyTorch
reference backbones with timm / IBN-Net parameter names (tests/torch_encoders.py) and, where timm is
installed, against timm's own modules."""
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from salt_jax.models.convert import load_torch_state_dict, merge_encoder_weights, torch_to_flax
from salt_jax.models.encoders import ENCODERS, get_encoder
from conftest import FAST_COMPILE, TWO_CPU_DEVICES

# Input side per encoder for the torch comparison: the biggest nets run on a 64x64 crop to stay fast.
SIZES = {"resnet34": 128, "seresnext50_32x4d": 128, "seresnext101_32x4d": 64, "legacy_seresnet152": 64,
         "legacy_senet154": 64, "resnext101_ibn_a": 64}
# layer1..layer4 widths (SPEC 3.3).
CHANNELS = {**{name: (256, 512, 1024, 2048) for name in ENCODERS}, "resnet34": (64, 128, 256, 512),
            "resnet_tiny": (16, 32, 64, 128), "resnet_small": (24, 48, 96, 192)}
TOL = 1e-4  # max |flax - torch| / max |torch| per stage, at full float32 precision (GPUs default to TF32)
pytestmark = pytest.mark.usefixtures("highest_precision")


@pytest.fixture(scope="module")
def images(data_dir):
  """(2,128,128,3): the first training image normalised to [-1,1], replicate-padded 101 -> 128, and its
  horizontal flip."""
  path = sorted((data_dir / "train" / "images").glob("*.png"))[0]
  x = (np.asarray(Image.open(path).convert("L"), np.float32) - 127.5) / 127.5
  x = np.pad(x, ((13, 14), (13, 14)), mode="edge")
  x = np.stack([x, x[:, ::-1]])
  return np.repeat(x[..., None], 3, axis=-1)


def _crop(x, size):
  o = (x.shape[1] - size) // 2
  return np.ascontiguousarray(x[:, o:o + size, o:o + size])


def _reference(name, seed=0):
  torch = pytest.importorskip("torch")
  from torch_encoders import REFERENCES, randomize
  torch.manual_seed(seed)
  return randomize(REFERENCES[name](), seed).eval()


def _torch_features(ref, x):
  import torch
  with torch.no_grad():
    outs = ref.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2))
  return [o.permute(0, 2, 3, 1).numpy() for o in outs]


def _state_dict(ref):
  return {k: v.detach().numpy() for k, v in ref.state_dict().items()}


def _n_params(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _rel_err(a, b):
  return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.fixture(scope="module")
def resnet34_ref():
  ref = _reference("resnet34")
  return ref, torch_to_flax("resnet34", _state_dict(ref))


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_shapes(name):
  model = get_encoder(name)
  x = jax.ShapeDtypeStruct((2, 128, 128, 3), jnp.float32)
  outs, variables = jax.eval_shape(lambda x: model.init_with_output(jax.random.PRNGKey(0), x, train=False), x)
  assert [o.shape for o in outs] == [(2, 128 // s, 128 // s, c)
                                     for s, c in zip((2, 4, 8, 16), CHANNELS[name])]
  assert set(variables) == {"params", "batch_stats"}


def test_bfloat16_compute_keeps_float32_params():
  model = get_encoder("resnet34", dtype=jnp.bfloat16)
  x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  outs, variables = jax.eval_shape(lambda x: model.init_with_output(jax.random.PRNGKey(0), x, train=False), x)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  assert {o.dtype for o in outs} == {jnp.dtype(jnp.bfloat16)}


IMAGENET_ENCODERS = sorted(set(ENCODERS) - {"resnet_tiny", "resnet_small"})  # CPU-sized: no pretrained weights


@pytest.mark.torch
@pytest.mark.parametrize("name", IMAGENET_ENCODERS)
def test_matches_torch_eval(name, images):
  ref = _reference(name)
  x = _crop(images, SIZES[name])
  expected = _torch_features(ref, x)
  sd = _state_dict(ref)
  if name == "resnext101_ibn_a":  # torch 0.3 checkpoints carry unused InstanceNorm running stats
    sd["layer1.0.bn1.IN.running_mean"] = np.zeros(64, np.float32)
    sd["layer1.0.bn1.IN.running_var"] = np.ones(64, np.float32)
  variables = torch_to_flax(name, sd)
  head = ("fc.", "last_linear.")
  assert _n_params(variables["params"]) == sum(
      p.numel() for k, p in ref.named_parameters() if not k.startswith(head))
  got = get_encoder(name).apply(variables, jnp.asarray(x), train=False)
  errs = [_rel_err(g, e) for g, e in zip(got, expected)]
  print(f"{name}: params {_n_params(variables['params'])}, max rel err per stage {errs}")
  assert [g.shape for g in got] == [e.shape for e in expected]
  assert max(errs) < TOL, errs


TIMM_ENCODERS = [n for n in IMAGENET_ENCODERS if n != "resnext101_ibn_a"]  # IBN-Net is not part of timm


def _timm_features(net, x):
  """layer1..layer4 outputs (NHWC) of a timm ResNet or legacy SENet, its stem max-pool skipped (SPEC 3.1)."""
  import torch
  y = torch.from_numpy(x).permute(0, 3, 1, 2)
  with torch.no_grad():
    if hasattr(net, "layer0"):  # legacy SENet: the stem is layer0 (its pool is pool0, or inside in old timm)
      for m in net.layer0.children():
        y = y if isinstance(m, torch.nn.MaxPool2d) else m(y)
    else:
      y = net.act1(net.bn1(net.conv1(y)))
    outs = []
    for i in range(1, 5):
      y = getattr(net, f"layer{i}")(y)
      outs.append(y.permute(0, 2, 3, 1).numpy())
  return outs


@pytest.mark.torch
@pytest.mark.parametrize("name", TIMM_ENCODERS)
def test_matches_timm_eval(name, images):
  """The real timm module with the reference's random weights (its state dict loads strictly into timm)."""
  timm = pytest.importorskip("timm")
  net = timm.create_model(name, pretrained=False)
  net.load_state_dict(_reference(name).state_dict())
  net.eval()
  x = _crop(images, SIZES[name])
  expected = _timm_features(net, x)
  got = get_encoder(name).apply(torch_to_flax(name, _state_dict(net)), jnp.asarray(x), train=False)
  errs = [_rel_err(g, e) for g, e in zip(got, expected)]
  print(f"{name} vs timm {timm.__version__}: max rel err per stage {errs}")
  assert [g.shape for g in got] == [e.shape for e in expected]
  assert max(errs) < TOL, errs


@pytest.mark.torch
def test_resnet34_train_mode_batch_stats(resnet34_ref, images):
  """Train-mode BN (batch statistics, batch 2) and the running-stat update (momentum 0.1).

  torch folds the *unbiased* batch variance into running_var, Flax the biased one: the expected Flax
  value is rebuilt from torch's with the n-1/n factor (n = B*H*W seen by each BN).
  """
  import torch
  _, variables = resnet34_ref
  ref = _reference("resnet34")  # a fresh copy (same seed, same weights): train mode updates its stats
  counts = {}
  for mname, m in ref.named_modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.register_forward_pre_hook(lambda mod, inp, mname=mname: counts.__setitem__(
          mname, inp[0].numel() // inp[0].shape[1]))
  old = {k: v.clone().numpy() for k, v in ref.state_dict().items() if k.endswith("running_var")}
  x = _crop(images, 64)
  expected = _torch_features(ref.train(), x)
  got, updated = get_encoder("resnet34").apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
  errs = [_rel_err(g, e) for g, e in zip(got, expected)]
  print(f"resnet34 train mode: max rel err per stage {errs}")
  assert max(errs) < TOL, errs
  want = {}
  for k, v in ref.state_dict().items():
    if k.endswith("running_mean"):
      want[k] = v.numpy()
    elif k.endswith("running_var"):
      n = counts[k.rsplit(".", 1)[0]]
      want[k] = 0.9 * old[k] + (v.numpy() - 0.9 * old[k]) * (n - 1) / n
  converted = torch_to_flax("resnet34", {**_state_dict(ref), **want})["batch_stats"]
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(updated["batch_stats"]),
                          jax.tree.leaves(converted)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))


@pytest.mark.torch
def test_converter_is_strict(resnet34_ref):
  ref, _ = resnet34_ref
  sd = _state_dict(ref)
  missing = {k: v for k, v in sd.items() if k != "layer1.0.conv1.weight"}
  with pytest.raises(ValueError, match="layer1_0/conv1/kernel"):
    torch_to_flax("resnet34", missing)
  with pytest.raises(ValueError, match=r"layer9\.0\.conv1\.weight"):
    torch_to_flax("resnet34", {**sd, "layer9.0.conv1.weight": np.zeros((64, 64, 3, 3), np.float32)})
  with pytest.raises(ValueError, match="shape mismatches"):
    torch_to_flax("resnet34", {**sd, "bn1.running_mean": np.zeros(65, np.float32)})


@pytest.mark.torch
def test_load_torch_state_dict(resnet34_ref, tmp_path):
  import torch
  ref, _ = resnet34_ref
  path = tmp_path / "resnet34.pth.tar"
  torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in ref.state_dict().items()}}, path)
  sd = load_torch_state_dict(path)
  assert sd.keys() == ref.state_dict().keys()
  np.testing.assert_array_equal(sd["layer2.0.downsample.0.weight"],
                                ref.state_dict()["layer2.0.downsample.0.weight"].numpy())
  (tmp_path / "w.safetensors").write_bytes(b"")
  try:
    import safetensors.numpy  # noqa: F401
  except ImportError:
    with pytest.raises(ImportError, match="safetensors"):
      load_torch_state_dict(tmp_path / "w.safetensors")


class _WithEncoder(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    c5 = get_encoder("resnet34", name="encoder")(x, train)[-1]
    return nn.Dense(2, name="head")(c5.mean((1, 2)))


@pytest.mark.torch
def test_merge_encoder_weights(resnet34_ref):
  _, enc = resnet34_ref
  shapes = jax.eval_shape(lambda: _WithEncoder().init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), False))
  variables = jax.tree.map(lambda s: np.ones(s.shape, s.dtype), shapes)
  merged = merge_encoder_weights(variables, enc)
  np.testing.assert_array_equal(merged["params"]["encoder"]["layer3_1"]["conv2"]["kernel"],
                                enc["params"]["layer3_1"]["conv2"]["kernel"])
  np.testing.assert_array_equal(merged["batch_stats"]["encoder"]["bn1"]["var"], enc["batch_stats"]["bn1"]["var"])
  np.testing.assert_array_equal(merged["params"]["head"]["kernel"], variables["params"]["head"]["kernel"])
  bad = jax.tree.map(lambda a: a, enc)
  bad["params"]["bn1"]["scale"] = np.zeros(3, np.float32)
  with pytest.raises(ValueError, match="bn1/scale"):
    merge_encoder_weights(variables, bad)
  with pytest.raises(ValueError, match="no subtree"):
    merge_encoder_weights(variables, enc, path=("decoder",))


_SHARDED_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from salt_jax.models.encoders import get_encoder
    assert jax.local_device_count() == 2, jax.devices()
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
    single = get_encoder("resnet34")
    shapes = jax.eval_shape(lambda x: single.init(jax.random.PRNGKey(0), x, train=False), x[:1])
    rng = np.random.default_rng(0)
    def fill(path, s):  # random variables without compiling init
      leaf = path[-1].key
      if leaf == "kernel":
        return rng.uniform(-1, 1, s.shape).astype(np.float32) * np.sqrt(3 / np.prod(s.shape[:-1]))
      base = {"scale": 1.0, "var": 1.0}.get(leaf, 0.0)
      return (base + 0.1 * rng.uniform(-1, 1, s.shape)).astype(np.float32)
    variables = jax.tree_util.tree_map_with_path(fill, shapes)
    out1, upd1 = jax.jit(lambda v, x: single.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    rows, repl = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    step = jax.jit(lambda v, x: single.apply(v, x, train=True, mutable=["batch_stats"]),
                   out_shardings=(rows, repl))
    out2, upd2 = step(jax.device_put(variables, repl), jax.device_put(x, rows))
    upd2 = jax.tree.map(lambda a: np.stack([np.asarray(s.data) for s in a.addressable_shards]), upd2)
    for a, b in zip(jax.tree.leaves(upd1), jax.tree.leaves(upd2)):
      np.testing.assert_allclose(b[0], a, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(b[1], a, rtol=1e-5, atol=1e-6)
    for a, b in zip(out1, out2):
      np.testing.assert_allclose(np.asarray(b).reshape(a.shape), a, rtol=1e-4, atol=1e-4)
    print("ok")
""")


def test_cross_device_batch_norm():
  """resnet34 train mode under jit over a batch sharded across 2 host devices == one device, whole batch:
  each device's copy of the updated BatchNorm statistics is the global-batch one."""
  env = {**os.environ, "XLA_FLAGS": f"{TWO_CPU_DEVICES} {FAST_COMPILE}", "JAX_PLATFORMS": "cpu"}
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
  res = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT], env=env, capture_output=True, text=True,
                       timeout=300, cwd=root)
  assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]

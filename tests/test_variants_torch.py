"""Every variant against the outside PyTorch build of the original solution (SPEC 3.4-3.6).

/work/shared/bench/torch_variants.py builds the seven original models with the original's state-dict keys.
Random torch weights go through `convert.from_original` into `get_model(name)`; one (1,128,128,3) image then
gives the same three outputs in eval mode and in train mode (batch statistics), and train mode updates the
running statistics the same way. Errors are max |flax - torch| / max |torch| per output, float32.
"""
import importlib.util
import os
import pathlib
import re

import jax
import numpy as np
import pytest

from salt_jax import models
from salt_jax.models import convert

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCH = pathlib.Path(os.environ.get("SALT_TORCH_VARIANTS",
                                    REPO.parent / "shared" / "bench" / "torch_variants.py"))
NAMES = convert.ORIGINAL_VARIANTS
OUTPUTS = ("class_logits", "no_empty_logits", "final_logits")
# (mode, align_corners) compared per variant. align_corners only reaches a family's decoder code, in train and
# eval mode alike, so align_corners=False runs in eval on the smallest member of each bilinear family
# (model_34, model_50A_slim); 101A/101B have no bilinear resize (their eval case checks that the torch
# outputs do not depend on it). SALT_TORCH_VARIANTS_ALL=1 runs all four cases for every variant.
ALL = ("eval", True), ("train", True), ("eval", False), ("train", False)
CASES = {name: ALL if os.environ.get("SALT_TORCH_VARIANTS_ALL") else
         ALL[:3] if name in ("model_34", "model_50A_slim") else ALL[:2] for name in NAMES}
# Bounds on max |flax - torch| / max |torch| (float32): the errors measured on CPU x4-8. class_logits (GAP of
# the encoder output -> conv -> fc) checks every encoder to ~1e-5. The mask logits carry the error of 20-50
# more BNs, each of gain |mean|/std > 1 on bias-free convs: torch's own float32 masks are as far from its
# float64 ones (e.g. 4e-3 for model_152), while in float64 both sides agree to ~1e-5 (Flax builds its
# bilinear weights in float32).
CLASS_TOL = 2e-4
MASK_TOL = {"model_34": (1e-4, 1e-4), "model_50A": (1e-4, 1e-4), "model_50A_slim": (2e-3, 2e-3),
            "model_101A": (3e-4, 2e-4), "model_101B": (2e-4, 2e-4), "model_152": (3e-2, 3e-2),
            "model_154": (5e-2, 5e-2)}  # (eval, train)
STATS_TOL = 3e-4  # running mean/var after one train step, max |flax - torch| / max |torch| per variable
# XLA:CPU at optimisation level 0 compiles these graphs ~2x faster and runs them ~1.5x slower: a net win for
# one call per compile.
COMPILER_OPTIONS = {"cpu": {"xla_backend_optimization_level": 0}}


def _load_bench():
  if not BENCH.exists():
    pytest.skip(f"{BENCH} not found")
  spec = importlib.util.spec_from_file_location("salt_torch_variants", BENCH)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.fixture(scope="module")
def tv():
  """The torch_variants module, with TF32 off so a CUDA torch would compare in full float32 too."""
  flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
  torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
  yield _load_bench()
  torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def _randomize(net, seed: int):
  """Random norm affines; BN running statistics from a train-mode pass on another, shifted image.

  Statistics measured along the network itself keep every eval-mode activation O(1) through 150 layers
  (independent random running stats compound and blow activations up to ~1e4, which then only measures
  float32 conditioning); the calibration image (mean 0.3, std 1.3) keeps them clearly apart from the test
  image's batch statistics, so eval and train mode differ. The IBN InstanceNorm buffers get random values:
  they must not matter.
  """
  g = torch.Generator().manual_seed(seed)
  bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  with torch.no_grad():
    for m in net.modules():
      if getattr(m, "running_mean", None) is not None:
        m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
        m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
        m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    for m in bns:
      m.momentum = 1.0
    net.train()(0.3 + 1.3 * torch.randn(1, 3, 128, 128, generator=g))
    for m in bns:
      m.momentum = 0.1
  return net.eval()


@pytest.fixture(scope="module")
def variant(tv):
  """name -> (torch net, its state (unique keys, cloned), converted Flax variables, input (1,3,128,128)),
  random weights. Only the latest variant is kept: the cases run grouped by variant."""
  cache = {}

  def get(name):
    if name not in cache:
      cache.clear()
      torch.manual_seed(0)
      net = _randomize(tv.build(name), seed=1)
      state = {k: v.clone() for k, v in tv.unique_state_dict(net).items()}
      x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
      cache[name] = net, state, convert.from_original(name, net.state_dict()), x
    return cache[name]
  yield get
  cache.clear()


def _rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())


def _nchw(o):
  return np.asarray(o).transpose(0, 3, 1, 2) if np.ndim(o) == 4 else np.asarray(o)


def _torch_net(tv, name, align_corners, state, train, net=None):
  """`net` (default: a fresh torch `name`) reset to `state`; train mode keeps 101A/101B's Dropout2d off."""
  net = tv.build(name, align_corners=align_corners) if net is None else net
  missing, unexpected = net.load_state_dict(state, strict=False)
  assert not unexpected and all(re.match(r"conv[1-5]\.", k) for k in missing)  # aliases share the tensors
  net.train(train)
  for m in net.modules():
    if isinstance(m, torch.nn.Dropout2d):
      m.eval()
  return net


def _run_torch(net, x):
  with torch.no_grad():
    return [o.numpy() for o in net(x)]


@pytest.mark.slow
@pytest.mark.parametrize("name,mode,align_corners", [(n, *c) for n in NAMES for c in CASES[n]])
def test_variant_matches_torch(tv, variant, name, mode, align_corners):
  """All three outputs, and in train mode the updated BN running statistics.

  Train mode: torch folds the unbiased batch variance into running_var, Flax the biased one, so the expected
  Flax value is rebuilt from torch's with the (n-1)/n factor (n = B*H*W seen by that BN). 101A/101B's head
  Dropout2d(0.5) is off on both sides in train mode (torch module in eval, Flax head_dropout=0.0); every
  other dropout of the original never ran (SPEC 10.1) and is a no-op on both sides.
  """
  net, state, variables, x = variant(name)
  train = mode == "train"
  net = _torch_net(tv, name, align_corners, state, train, net if align_corners else None)
  counts = {}
  hooks = [m.register_forward_pre_hook(lambda mod, inp, mname=mname: counts.__setitem__(
      mname, inp[0].numel() // inp[0].shape[1]))
      for mname, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
  expected = _run_torch(net, x)
  for h in hooks:
    h.remove()
  model = models.get_model(name, align_corners=align_corners, **(dict(head_dropout=0.0) if train else {}))
  apply = jax.jit(lambda v, x, r: model.apply(v, x, train=train, rngs={"dropout": r},
                                              mutable=["batch_stats"] if train else False))
  args = variables, x.numpy().transpose(0, 2, 3, 1), jax.random.PRNGKey(0)
  with jax.default_matmul_precision("highest"):
    got = apply.lower(*args).compile(COMPILER_OPTIONS.get(jax.default_backend()))(*args)
  outs, updated = got if train else (got, None)
  assert [_nchw(o).shape for o in outs] == [e.shape for e in expected]
  errs = {k: _rel_err(_nchw(o), e) for k, o, e in zip(OUTPUTS, outs, expected)}
  print(f"{name} {mode} align_corners={align_corners}: max rel err "
        + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
  assert errs["class_logits"] < CLASS_TOL and max(errs.values()) < MASK_TOL[name][train], errs
  if models.MODELS[name][0] is models.IBNDecoderUNet and not train:  # no bilinear resize in this family
    flipped = _run_torch(_torch_net(tv, name, not align_corners, state, False), x)
    assert max(_rel_err(a, b) for a, b in zip(flipped, expected)) < 1e-6
  if train:
    want = {}
    for k, v in tv.unique_state_dict(net).items():
      module, _, leaf = k.rpartition(".")
      if leaf == "running_var" and module in counts:
        n, old = counts[module], state[k].numpy()
        v = 0.9 * old + (v.numpy() - 0.9 * old) * (n - 1) / n
      want[k] = v
    expected_stats = convert.from_original(name, want)["batch_stats"]
    stat_errs = jax.tree.map(_rel_err, updated["batch_stats"], expected_stats)
    path, worst = max(jax.tree_util.tree_leaves_with_path(stat_errs), key=lambda kv: kv[1])
    moved = jax.tree.map(_rel_err, updated["batch_stats"], variables["batch_stats"])
    ratio = max(e / m for e, m in zip(jax.tree.leaves(stat_errs), jax.tree.leaves(moved)))
    print(f"  running stats: worst {jax.tree_util.keystr(path)} {worst:.1e}, error / update {ratio:.1e}")
    assert worst < STATS_TOL, (jax.tree_util.keystr(path), worst)
    assert ratio < 0.1  # every statistic moved, and by torch's amount


@pytest.fixture(scope="module")
def sd34(tv):
  """model_34's original state dict (numpy; aliases, classifier and num_batches_tracked included)."""
  torch.manual_seed(0)
  return {k: v.numpy() for k, v in tv.build("model_34").state_dict().items()}


def _leaves(variables):
  return jax.tree_util.tree_leaves_with_path(variables)


def test_from_original_spellings(sd34):
  """`module.` prefixes, alias-only encoder keys and the canonical keys all give the same variables."""
  ref = convert.from_original("model_34", sd34)
  assert ref.keys() == {"params", "batch_stats"}
  aliased = {"module." + k: v for k, v in sd34.items() if not k.startswith("encoder.")}
  assert any(k.startswith("module.conv1.") for k in aliased)
  assert not any(k.startswith("module.encoder.layer") for k in aliased)
  for (p, a), (q, b) in zip(_leaves(ref), _leaves(convert.from_original("model_34", aliased))):
    assert p == q
    np.testing.assert_array_equal(a, b)
  p = ref["params"]
  np.testing.assert_array_equal(p["encoder"]["layer2_0"]["downsample_0"]["kernel"],
                                sd34["encoder.layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(p["classifier"]["fc"]["kernel"], sd34["center_fc.weight"].T)
  np.testing.assert_array_equal(p["decoder3"]["scse"]["fc2"]["bias"],
                                sd34["decoder3.SCSE.channel_excitation.2.bias"])
  np.testing.assert_array_equal(ref["batch_stats"]["center"]["block2"]["bn"]["var"],
                                sd34["center.4.running_var"])
  assert not np.shares_memory(ref["batch_stats"]["center"]["block2"]["bn"]["var"],
                              sd34["center.4.running_var"])  # copies, not views of the checkpoint


def test_from_original_is_strict(sd34):
  def fails(sd, match):
    with pytest.raises(ValueError, match=match):
      convert.from_original("model_34", sd)
  fails({k: v for k, v in sd34.items() if not k.endswith("decoder2.conv1.1.running_mean")},
        r"missing Flax variables \['batch_stats/decoder2/block1/bn/mean'\]")
  fails({**sd34, "decoder6.conv1.0.weight": np.zeros((64, 64, 3, 3), np.float32)},
        r"unexpected torch keys \['decoder6\.conv1\.0\.weight'\]")
  fails({**sd34, "center.4.bias": np.zeros(255, np.float32)}, r"shape mismatches \['center\.4\.bias \(255,\)")
  fails({**sd34, "conv3.1.conv2.weight": sd34["conv3.1.conv2.weight"] + 1},
        r"different values \['conv3\.1\.conv2\.weight != encoder\.layer2\.1\.conv2\.weight'\]")
  fails({**sd34, "module.center.0.bias": sd34["center.0.bias"] + 1},
        r"different values \['center\.0\.bias != center\.0\.bias'\]")
  with pytest.raises(ValueError, match="no original torch model"):
    convert.from_original("model_tiny", sd34)
  with pytest.raises(ValueError, match="missing Flax variables"):  # another variant's checkpoint
    convert.from_original("model_50A", sd34)


def test_load_original(sd34, tmp_path):
  """A DataParallel checkpoint dict, in the zip format and in the legacy (pre-1.6, as torch 0.3) format."""
  ref = _leaves(convert.from_original("model_34", sd34))
  checkpoint = {"epoch": 7, "state_dict": {"module." + k: torch.from_numpy(v) for k, v in sd34.items()}}
  for legacy in (False, True):
    path = tmp_path / f"model_34_fold0_{legacy}.pth.tar"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    got = _leaves(convert.load_original(path, "model_34"))
    assert [p for p, _ in got] == [p for p, _ in ref]
    for (_, a), (_, b) in zip(got, ref):
      np.testing.assert_array_equal(a, b)

"""Decoder/head blocks (SPEC 3.2): shapes and the property that defines each block."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from salt_jax.models import blocks

pytestmark = pytest.mark.usefixtures("highest_precision")  # float32 references; GPUs default to TF32
KEY = jax.random.PRNGKey(0)


def _x(shape, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _init_apply(module, *args, train=False):
  """(variables, output) of a block, init and apply each jitted whole."""
  variables = jax.jit(lambda *a: module.init({"params": KEY, "dropout": KEY}, *a, train=train))(*args)
  mutable = ["batch_stats"] if train else False
  out = jax.jit(lambda v, *a: module.apply(v, *a, train=train, mutable=mutable))(variables, *args)
  return variables, (out[0] if train else out)


def test_scse_is_cse_plus_sse_by_hand():
  x = _x((2, 5, 6, 64))
  v, y = _init_apply(blocks.SCSE(), x)
  p = v["params"]
  assert p["fc1"]["kernel"].shape == (64, 4) and p["fc1"]["bias"].shape == (4,)
  assert p["fc2"]["kernel"].shape == (4, 64) and p["fc2"]["bias"].shape == (64,)
  assert set(p["spatial"]) == {"kernel"} and p["spatial"]["kernel"].shape == (1, 1, 64, 1)
  g = x.mean((1, 2))
  s = jax.nn.sigmoid(jax.nn.relu(g @ p["fc1"]["kernel"] + p["fc1"]["bias"]) @ p["fc2"]["kernel"]
                     + p["fc2"]["bias"])
  sp = jax.nn.sigmoid(jnp.einsum("bhwc,c->bhw", x, p["spatial"]["kernel"][0, 0, :, 0]))[..., None]
  np.testing.assert_allclose(y, x * s[:, None, None, :] + x * sp, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c, hidden", [(2304, 144), (1280, 80), (384, 24), (40, 2)])
def test_selayer_no_bias_hidden_int_c_over_16(c, hidden):
  x = _x((1, 2, 2, c))
  v, y = _init_apply(blocks.SELayer(), x)
  p = v["params"]
  assert set(p["fc1"]) == {"kernel"} and set(p["fc2"]) == {"kernel"}
  assert p["fc1"]["kernel"].shape == (c, hidden) and p["fc2"]["kernel"].shape == (hidden, c)
  s = jax.nn.sigmoid(jax.nn.relu(x.mean((1, 2)) @ p["fc1"]["kernel"]) @ p["fc2"]["kernel"])
  np.testing.assert_allclose(y, x * s[:, None, None, :], rtol=1e-5, atol=1e-5)


def test_decoder_shapes_and_widths():
  x, skip = _x((2, 4, 4, 48)), _x((2, 8, 8, 80), 1)
  v, y = _init_apply(blocks.Decoder(96, 64), x, skip)
  assert y.shape == (2, 8, 8, 64)
  assert v["params"]["block1"]["conv"]["kernel"].shape == (3, 3, 128, 96)
  assert v["params"]["block2"]["conv"]["kernel"].shape == (3, 3, 96, 64)
  assert set(v["batch_stats"]) == {"block1", "block2"}
  v, y = _init_apply(blocks.Decoder(32, 64), _x((1, 8, 8, 64)))
  assert y.shape == (1, 16, 16, 64) and v["params"]["block1"]["conv"]["kernel"].shape == (3, 3, 64, 32)


def test_decoder_dropout_default_off_and_channelwise_when_on():
  x, skip = _x((2, 4, 4, 16)), _x((2, 8, 8, 16), 1)
  dec = blocks.Decoder(16, 16)
  on = blocks.Decoder(16, 16, dropout_rate=0.5)
  v = jax.jit(lambda: dec.init(KEY, x, skip, train=False))()

  @jax.jit
  def run(v, seeds):  # (off, on) x two dropout rngs, and both in eval mode; one compile
    train = lambda d, r: d.apply(v, x, skip, train=True, rngs={"dropout": r}, mutable=["batch_stats"])[0]
    keys = [jax.random.PRNGKey(s) for s in seeds]
    return ([train(dec, k) for k in keys], [train(on, k) for k in keys],
            [d.apply(v, x, skip, train=False) for d in (dec, on)])

  off_train, on_train, evals = run(v, (1, 2))
  np.testing.assert_array_equal(*off_train)  # rate 0.0: faithful no-op, no rng used
  assert not np.allclose(*on_train)
  np.testing.assert_array_equal(*evals)


def test_channel_dropout_zeroes_whole_channels():
  x = jnp.ones((4, 8, 8, 32))
  y = blocks.channel_dropout(0.5, True).apply({}, x, rngs={"dropout": KEY})
  per_channel = np.asarray(y).reshape(4, 64, 32)
  assert np.all(per_channel.min(1) == per_channel.max(1))  # constant over H,W per (sample, channel)
  assert set(np.unique(per_channel)) <= {0.0, 2.0} and 0 < (per_channel == 0).mean() < 1
  np.testing.assert_array_equal(blocks.channel_dropout(0.5, False).apply({}, x), x)


def _zero_last_conv(v):
  p = jax.tree.map(lambda a: a, v["params"])
  p["conv3"]["kernel"] = jnp.zeros_like(p["conv3"]["kernel"])
  return {"params": p, "batch_stats": v["batch_stats"]}


@pytest.mark.parametrize("cin, cout", [(64, 64), (128, 64), (32, 64)])
def test_decoder_bottleneck_residual_only_when_in_equals_out(cin, cout):
  x = _x((2, 6, 6, cin))
  block = blocks.DecoderBottleneck(cout)
  v, y = _init_apply(block, x)
  p = v["params"]
  mid = cin // 4
  assert p["conv1"]["kernel"].shape == (1, 1, cin, mid) and p["conv2"]["kernel"].shape == (3, 3, mid, mid)
  assert p["conv3"]["kernel"].shape == (1, 1, mid, cout)
  assert all(set(p[c]) == {"kernel"} for c in ("conv1", "conv2", "conv3"))  # no conv biases
  assert y.shape == (2, 6, 6, cout)
  # With the last conv zeroed the branch is exactly 0 (eval BN: mean 0, var 1, bias 0).
  y0 = block.apply(_zero_last_conv(v), x, train=False)
  expected = jax.nn.relu(x) if cin == cout else jnp.zeros((2, 6, 6, cout))
  np.testing.assert_allclose(y0, expected, atol=1e-6)


@pytest.mark.parametrize("cin, skip_c, mid, out", [(64, 128, 64, 32), (64, 64, 64, 64), (64, 0, 32, 64)])
def test_decoder_bottleneck_stage_shapes(cin, skip_c, mid, out):
  x = _x((2, 4, 4, cin))
  skip = _x((2, 8, 8, skip_c), 1) if skip_c else None
  v, y = _init_apply(blocks.DecoderBottleneckStage(mid, out), x, skip)
  assert y.shape == (2, 8, 8, out)
  p = v["params"]
  assert p["bottleneck1"]["conv1"]["kernel"].shape == (1, 1, cin + skip_c, (cin + skip_c) // 4)
  assert p["bottleneck2"]["conv3"]["kernel"].shape[-1] == out and "scse" in p


def test_ibna_block_doubles_hw_and_splits_ibn():
  x = _x((2, 4, 5, 200))
  v, y = _init_apply(blocks.IBNaDecoderBlock(32), x)
  assert y.shape == (2, 8, 10, 32)
  p = v["params"]
  assert p["conv1"]["kernel"].shape == (1, 1, 200, 50)
  assert p["ibn"]["IN"]["scale"].shape == (25,) and p["ibn"]["BN"]["scale"].shape == (25,)
  assert p["deconv"]["kernel"].shape == (4, 4, 50, 50) and p["deconv"]["bias"].shape == (50,)
  assert p["conv3"]["kernel"].shape == (1, 1, 50, 32) and y.min() >= 0
  _, y = _init_apply(blocks.IBNaDecoderBlock(16), _x((1, 1, 1, 64)))
  assert y.shape == (1, 2, 2, 16)


@pytest.mark.torch
def test_ibna_deconv_matches_torch_conv_transpose_k4_s2_p1():
  torch = pytest.importorskip("torch")
  import flax.linen as nn
  from salt_jax.models.layers import torch_default_init
  x = np.asarray(_x((2, 5, 7, 6)))
  deconv = nn.ConvTranspose(3, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                            kernel_init=torch_default_init)
  v = deconv.init(KEY, x)
  kernel, bias = (np.array(v["params"][k]) for k in ("kernel", "bias"))
  t = torch.nn.ConvTranspose2d(6, 3, 4, stride=2, padding=1)
  with torch.no_grad():  # Flax (no kernel transpose) correlates the dilated input: flip torch's kernel
    t.weight.copy_(torch.from_numpy(kernel[::-1, ::-1].transpose(2, 3, 0, 1).copy()))
    t.bias.copy_(torch.from_numpy(bias))
    ref = t(torch.from_numpy(x.copy()).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  y = deconv.apply(v, x)
  assert y.shape == ref.shape == (2, 10, 14, 3)
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_center_and_lateral():
  v, y = _init_apply(blocks.Center(), _x((2, 4, 4, 64)))
  assert y.shape == (2, 2, 2, 256)
  assert v["params"]["block1"]["conv"]["kernel"].shape == (3, 3, 64, 512)
  assert v["params"]["block2"]["conv"]["kernel"].shape == (3, 3, 512, 256)
  v, y = _init_apply(blocks.Lateral(128), _x((2, 8, 8, 512)), train=True)
  assert y.shape == (2, 8, 8, 128) and v["params"]["block"]["conv"]["kernel"].shape == (1, 1, 512, 128)
  assert y.min() >= 0


@pytest.mark.parametrize("align_corners", [True, False])
def test_hypercolumn_channel_order(align_corners):
  ds = [jnp.full((1, 128 // 2 ** k, 128 // 2 ** k, 64), float(k + 1)) for k in range(5)]
  h = blocks.hypercolumn(*ds, align_corners=align_corners)
  assert h.shape == (1, 128, 128, 320)
  for k in range(5):  # constant maps stay constant under bilinear resizing: channel block k is d_{k+1}
    np.testing.assert_allclose(h[..., 64 * k:64 * (k + 1)], k + 1, rtol=1e-6)
  d2 = _x((1, 64, 64, 64))
  h = blocks.hypercolumn(_x((1, 128, 128, 64), 1), d2, *ds[2:], align_corners=True)
  np.testing.assert_allclose(h[0, 0, 0, 64:128], d2[0, 0, 0], rtol=1e-6)  # align_corners keeps corners
  np.testing.assert_allclose(h[0, -1, -1, 64:128], d2[0, -1, -1], rtol=1e-5)


def test_seg_head_dropout_train_only():
  x = _x((2, 16, 16, 128))
  head = blocks.SegHead(32, dropout_rate=0.5)
  v = head.init(KEY, x, train=False)
  assert v["params"]["conv1"]["kernel"].shape == (3, 3, 128, 32)
  assert v["params"]["conv2"]["kernel"].shape == (1, 1, 32, 1)
  y = lambda seed: head.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(seed)})
  assert y(1).shape == (2, 16, 16, 1) and not np.allclose(y(1), y(2))
  np.testing.assert_array_equal(head.apply(v, x, train=False), head.apply(v, x, train=False))
  off = blocks.SegHead(32)
  np.testing.assert_array_equal(off.apply(v, x, train=True, rngs={"dropout": KEY}), off.apply(v, x))


def test_class_head_and_broadcast():
  x = _x((3, 8, 8, 512))
  v, (logits, c64) = _init_apply(blocks.ClassHead(), x)
  p = v["params"]
  assert logits.shape == (3, 2) and c64.shape == (3, 64)
  expected = x.mean((1, 2)) @ p["conv"]["kernel"][0, 0] + p["conv"]["bias"]
  np.testing.assert_allclose(c64, expected, rtol=1e-5, atol=1e-5)  # no activation
  assert (c64 < 0).any()
  np.testing.assert_allclose(logits, c64 @ p["fc"]["kernel"] + p["fc"]["bias"], rtol=1e-5, atol=1e-5)
  b = blocks.broadcast_center(c64, (4, 5))
  assert b.shape == (3, 4, 5, 64)
  np.testing.assert_array_equal(b[:, 3, 2], c64)

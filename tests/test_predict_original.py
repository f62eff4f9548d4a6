"""predict with --config.init_from: a checkpoint of the original PyTorch solution predicted as one snapshot
of a workdir, its flip-TTA logits equal to the PyTorch model's own (the outside build, torch_variants.py)."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from fake_kaggle import make_learnable_kaggle
from salt_jax import configlib
from salt_jax.inference import predict
from salt_jax.workdir import rundir

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

REPO = pathlib.Path(__file__).resolve().parents[1]


def _torch_tta(net, images: np.ndarray) -> np.ndarray:
  """The original's TTA in PyTorch: edge pad 13/14, (x - 127.5) / 127.5 on 3 channels, final logits of x and
  of its mirror (mirrored back) averaged, cropped -> (B,101,101)."""
  x = np.pad((images.astype(np.float32) - 127.5) / 127.5, ((0, 0), (13, 14), (13, 14)), mode="edge")
  x = torch.from_numpy(np.repeat(x[:, None], 3, axis=1))
  with torch.no_grad():
    plain = net(x)[2][:, 0]
    mirrored = torch.flip(net(torch.flip(x, dims=[3]))[2][:, 0], dims=[2])
  return (0.5 * (plain + mirrored)).numpy()[:, 13:114, 13:114]


@pytest.mark.slow
def test_predict_original_checkpoint_equals_pytorch_tta(tmp_path, highest_precision):
  from test_variants_torch import _load_bench
  tv = _load_bench()
  torch.manual_seed(0)
  net = tv.build("model_34").eval()
  pth = tmp_path / "Cycle_0_Lsoftmax_maxMap_G.pth"
  torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, pth)  # as DataParallel saved it
  data = make_learnable_kaggle(tmp_path / "data", num_train=16, num_test=6)
  config = configlib.load_config_file(REPO / "configs" / "model_34.py")
  config.update(dict(data_dir=str(data), init_from=str(pth), fold=1, num_folds=4, cache_dir="",
                     eval_batch_size=4))
  workdir = tmp_path / "original_34"
  meta = predict.predict_original(workdir, config, cycle=2, save_logits=True)
  assert (meta["fold"], meta["cycle"], meta["snapshot"]) == (1, 2, str(pth))
  run = rundir.RunDir(workdir)
  assert json.loads((workdir / "run.json").read_text())["model"] == "model_34"
  assert run.fold_config(1).init_from == str(pth)
  pred = predict.load_prediction(run.prediction_file("max_map", 1, 2))
  assert pred["test_logits"].shape == (6, 101, 101) and len(pred["valid_ids"]) == 4
  from salt_jax.data import kaggle
  test = kaggle.load_test(str(data))
  order = [list(test.ids).index(i) for i in pred["test_ids"]]
  want = _torch_tta(net, test.images[order])
  got = pred["test_logits"].astype(np.float32)
  scale = np.abs(want).max()
  # float16 storage: 2^-11 relative rounding of each stored logit
  np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-3 * scale)
  clear = np.abs(got - meta["threshold"]) > 1e-2 * scale  # away from the float16 rounding
  np.testing.assert_array_equal(pred["test_masks"][clear], (got > meta["threshold"])[clear])


def test_predict_command_line_with_a_missing_checkpoint_is_a_one_line_error(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "-m", "salt_jax.predict", f"--workdir={tmp_path / 'w'}",
                         "--config=configs/model_34.py", f"--config.init_from={tmp_path / 'nope.pth'}"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 1 and "Traceback" not in done.stderr
  assert f"salt_jax.predict: config.init_from: file {tmp_path / 'nope.pth'} does not exist" in done.stderr
  assert not (tmp_path / "w").exists()

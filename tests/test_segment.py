"""Whole-section segmentation: the window arithmetic, the stitching, the bad inputs and the command."""
import json
import pathlib

import cv2
import jax
import numpy as np
import pandas as pd
import pytest
from scipy import special

from salt_jax import cli, configlib, models, parallel
from salt_jax.geometry import TILE
from salt_jax.inference import predict
from salt_jax.inference import ensemble
from salt_jax.seismic import files, infer, sections, segment
from salt_jax.workdir import checkpoints, rundir

REPO = pathlib.Path(__file__).resolve().parents[1]
SHAPES = [(101, 101), (101, 233), (150, 233), (257, 130), (333, 202)]
STRIDES = [13, 37, 50, 64, 100, 101]


def _pointwise(windows: np.ndarray) -> np.ndarray:
  """A model whose output at a pixel depends only on that pixel: stitching must give back the field."""
  return (windows.astype(np.float32) / 255.0) ** 2


def _contextual(windows: np.ndarray) -> np.ndarray:
  """A model whose output depends on the whole window and on the position in it (catches misplacement)."""
  x = windows.astype(np.float32)
  ramp = np.linspace(-1, 1, TILE, dtype=np.float32)
  return special.expit((x - x.mean(axis=(1, 2), keepdims=True)) / 40 + ramp[None, :, None]).astype(np.float32)


class _FakeLoader:
  """SnapshotLoader stand-in: every snapshot is the same pure window function with its own threshold."""

  def __init__(self, fn, thresholds):
    self.fn, self.thresholds = fn, thresholds

  def load(self, snap):
    return self.fn, self.thresholds[snap.cycle], 7


def _snaps(*cycles_per_workdir):
  return [[ensemble.Voter(f"wd{m}", 0, c, pathlib.Path("x")) for c in cycles]
          for m, cycles in enumerate(cycles_per_workdir)]


def test_axis_windows_cover_the_section_with_the_documented_padding():
  for size in (101, 102, 150, 202, 257, 1000):
    for stride in [1] + STRIDES:
      starts, before, after = sections.axis_windows(size, stride)
      assert before == (TILE - stride) // 2 and after >= before
      assert starts[0] == 0 and np.all(np.diff(starts) == stride)
      assert starts[-1] + TILE == before + size + after          # the last window ends the padded axis
      assert starts[-1] + TILE - stride < before + size + before  # and no window more is needed
  starts, before, after = sections.axis_windows(5 * TILE, TILE)
  np.testing.assert_array_equal(starts, np.arange(5) * TILE)
  assert (before, after) == (0, 0)
  # A phase shifts every window back: at stride 101, phase 50, each window holds the last 50 rows of one
  # tile and the first 51 of the next, and the windows still tile the padded axis without overlap.
  starts, before, after = sections.axis_windows(5 * TILE, TILE, phase=50)
  np.testing.assert_array_equal(starts, np.arange(6) * TILE)
  assert (before, after) == (50, 51)
  for stride, phase in ((50, 49), (13, 7), (1, 0)):
    starts, before, after = sections.axis_windows(257, stride, phase=phase)
    assert before == (TILE - stride) // 2 + phase and starts[-1] + TILE == before + 257 + after
    assert (TILE - stride) // 2 <= after < (TILE - stride) // 2 + stride  # no window past the need
  starts, before, after = sections.axis_windows(152, TILE, phase=50)  # every window holds section pixels
  assert (len(starts), before, after) == (2, 50, 0)
  with pytest.raises(ValueError, match="phase must be between 0 and stride - 1 = 49, got 50"):
    sections.axis_windows(257, 50, phase=50)


def test_a_phase_keeps_the_stitching_exact_and_moves_the_windows_across_tile_borders():
  rng = np.random.default_rng(2)
  section = rng.integers(0, 256, (2 * TILE, 3 * TILE), dtype=np.uint8)
  for stride, phase in ((TILE, 50), (50, 20), (37, 36)):
    lay = sections.layout(section.shape, stride, phase=phase)
    padded = sections.pad(section, lay)
    np.testing.assert_array_equal(sections.blend(padded, lay, _pointwise, 64), _pointwise(section[None])[0])
  lay = sections.layout(section.shape, TILE, phase=50)
  assert lay.n_windows == 3 * 4 and lay.pads == ((50, 51), (50, 51))
  # No window is a tile, and the contextual model's result differs from the per-tile one.
  per_tile = sections.blend(sections.pad(section, sections.layout(section.shape, TILE)),
                            sections.layout(section.shape, TILE), _contextual, 8)
  shifted = sections.blend(sections.pad(section, lay), lay, _contextual, 8)
  assert not np.array_equal(per_tile, shifted)


def test_stride_tile_on_a_section_of_tiles_gives_each_tile_its_own_prediction():
  rng = np.random.default_rng(0)
  tiles = rng.integers(0, 256, (2, 3, TILE, TILE), dtype=np.uint8)
  section = tiles.transpose(0, 2, 1, 3).reshape(2 * TILE, 3 * TILE)
  lay = sections.layout(section.shape, TILE)
  assert lay.n_windows == 6 and lay.padded_shape == section.shape
  blended = sections.blend(sections.pad(section, lay), lay, _contextual, batch_size=4)
  per_tile = _contextual(tiles.reshape(6, TILE, TILE)).reshape(2, 3, TILE, TILE)
  np.testing.assert_array_equal(blended, per_tile.transpose(0, 2, 1, 3).reshape(section.shape))
  # Through the vote: two workdirs of two and one snapshots, each thresholding the same probabilities.
  thresholds = {0: 0.1, 1: -0.2, 2: 0.3}
  result = infer.segment_section(section, _snaps([0, 1], [2]), _FakeLoader(_contextual, thresholds),
                                   stride=TILE, save_probs=True)
  p = per_tile.transpose(0, 2, 1, 3).reshape(section.shape)
  above = {c: p > special.expit(np.float32(t)) for c, t in thresholds.items()}
  expected = ((above[0].astype(np.float32) + above[1]) / 2 + above[2]) / 2 >= 0.5
  np.testing.assert_array_equal(result.mask, expected)
  np.testing.assert_array_equal(result.probs, p)
  assert result.mask.any() and not result.mask.all()


@pytest.mark.parametrize("shape", SHAPES)
def test_overlapping_weights_sum_to_one_everywhere_borders_included(shape):
  section = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
  weight = sections.window_weight()
  assert weight.min() > 0 and weight.max() <= 1
  for stride in STRIDES + ([2] if shape == (TILE, TILE) else []):
    lay = sections.layout(shape, stride)
    total = lay.crop(sections.weight_sum(lay))
    assert total.shape == shape and total.min() > 0
    normalised = np.zeros(lay.padded_shape)
    sections.accumulate(normalised, sections.origins(lay), np.ones((lay.n_windows, 1, 1)), weight)
    np.testing.assert_allclose(lay.crop(normalised) / total, 1.0, rtol=0, atol=1e-12)
    padded = sections.pad(section, lay)
    for c in (0.0, 0.3, 0.7071, 1.0):
      const = sections.blend(padded, lay, lambda w, c=c: np.full(w.shape, c, np.float32), 64)
      assert const.dtype == np.float32 and const.shape == shape
      np.testing.assert_array_equal(const, np.float32(c))
    np.testing.assert_array_equal(sections.blend(padded, lay, _pointwise, 64), _pointwise(section[None])[0])


def test_blend_streams_batches_and_reports_progress():
  lay = sections.layout((257, 130), 50)
  seen, done = [], []
  fn = lambda w: (seen.append(len(w)), np.zeros(w.shape, np.float32))[1]
  sections.blend(np.zeros(lay.padded_shape, np.uint8), lay, fn, batch_size=5, progress=done.append)
  assert max(seen) == 5 and sum(seen) == lay.n_windows == sum(done) == 18


def test_blending_only_the_needed_pixels_gives_them_the_whole_result():
  section = np.random.default_rng(2).integers(0, 256, (303, 404), dtype=np.uint8)
  needed = np.zeros(section.shape, bool)
  needed[101:202, 303:404] = True   # one cell at the right border
  needed[0:101, 0:101] = True       # and the top-left corner cell
  for stride in (37, 50, 101):
    lay = sections.layout(section.shape, stride)
    padded = sections.pad(section, lay)
    ran = []
    full = sections.blend(padded, lay, _contextual, 16)
    part = sections.blend(padded, lay, _contextual, 16, progress=ran.append, needed=needed)
    np.testing.assert_array_equal(part[needed], full[needed])
    assert np.isnan(part[~needed]).all()
    assert sum(ran) == sections.covering(lay, needed).sum() < lay.n_windows
  result = infer.segment_section(section, _snaps([0]), _FakeLoader(_contextual, {0: 0.0}), 50,
                                   needed=needed)
  whole = infer.segment_section(section, _snaps([0]), _FakeLoader(_contextual, {0: 0.0}), 50)
  np.testing.assert_array_equal(result.mask[needed], whole.mask[needed])
  assert not result.mask[~needed].any()
  assert result.windows < whole.windows == sections.layout(section.shape, 50).n_windows


def test_reflect_padding_mirrors_without_repeating_the_edge():
  section = np.arange(101 * 120, dtype=np.int64).reshape(101, 120)
  lay = sections.layout(section.shape, 50)
  padded = sections.pad(section, lay)
  (top, _), (left, _) = lay.pads
  np.testing.assert_array_equal(lay.crop(padded), section)
  np.testing.assert_array_equal(padded[top - 1, left:left + 120], section[1])
  np.testing.assert_array_equal(padded[top:top + 101, left - 3], section[:, 3])


def test_to_uint8_clips_to_percentiles_and_keeps_uint8():
  x = np.linspace(-5, 5, 101 * 101).reshape(101, 101)
  x[0, 0] = 1e6  # an outlier does not squash the rest
  out = files.to_uint8(x, (1, 99))
  assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255 and 100 < out[50, 50] < 155
  u8 = np.arange(101 * 101).reshape(101, 101).astype(np.uint8)
  assert files.to_uint8(u8) is u8
  assert (files.to_uint8(np.full((101, 101), 3.0)) == 128).all()


def _random_variables(model, size: int, seed: int = 0):
  """Random He-scaled kernels, zero biases, unit BatchNorm statistics, of the model's variable shapes
  (filled on the host: initialising through the model compiles it, which costs a minute here)."""
  shapes = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0), size=size))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return rng.normal(0, np.prod(leaf.shape[:-1]) ** -0.5, leaf.shape).astype(leaf.dtype)
    return (np.ones if name in ("scale", "var") else np.zeros)(leaf.shape, leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


# A workdir with one random model_tiny snapshot.
@pytest.fixture(scope="module")
def tiny_model():
  config = configlib.load_config_file(REPO / "configs" / "tiny.py")
  config.eval_batch_size = 8
  return config, _random_variables(models.build(**configlib.section(config, "model")), config.input_size)


def _workdir(root, tiny_model, threshold: float = 0.0) -> pathlib.Path:
  config, variables = tiny_model
  run = rundir.RunDir(root)
  run.record_run(config)
  checkpoints.save_snapshot(run.snapshot_dir(0, 0, "max_map"), variables,
                            {"val_threshold": threshold, "val_map": 0.0, "fold": 0, "cycle": 0})
  return run.root


def _run(argv):
  return cli.run(segment.main, segment.define_flags, prog="salt_jax.segment", argv=argv)


def _real_tiles(data_dir, n):
  ids = pd.read_csv(data_dir / "train.csv", dtype=str)["id"][:n]
  return np.stack([cv2.imread(str(data_dir / "train" / "images" / f"{i}.png"), cv2.IMREAD_GRAYSCALE)
                   for i in ids])


def _bad_inputs(tmp_path):
  """{what: (path, part of the refusal)} of each kind of bad input."""
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "garbage.png").write_bytes(b"not a png at all")
  np.save(bad / "cube.npy", np.zeros((3, 120, 120), np.float32))
  nan = np.zeros((120, 120), np.float32)
  nan[5, 7] = np.nan
  np.save(bad / "nan.npy", nan)
  np.save(bad / "empty.npy", np.zeros((0, 120), np.float32))
  return {"unreadable": (bad / "garbage.png", "unreadable image"),
          "3-D": (bad / "cube.npy", "a 3-D array of shape (3, 120, 120); a section is a 2-D array"),
          "NaN": (bad / "nan.npy", "1 NaN or infinite value(s); a section must be finite"),
          "empty": (bad / "empty.npy", "an empty array of shape (0, 120); a section has pixels")}


def test_bad_inputs_are_refused_in_one_line_naming_the_file(tmp_path, tiny_model, capsys):
  workdir = _workdir(tmp_path / "wd", tiny_model)
  good = tmp_path / "good.png"
  cv2.imwrite(str(good), np.zeros((120, 120), np.uint8))
  empty_wd = tmp_path / "empty_wd"
  empty_wd.mkdir()
  cases = {what: (f"--input={path}", f"{path}: {message}")
           for what, (path, message) in _bad_inputs(tmp_path).items()}
  cases["no snapshots"] = (f"--input={good}", f"no max_map snapshots in {empty_wd}; train a fold first")
  for what, (flag, message) in cases.items():
    out = tmp_path / f"out_{what}"
    workdirs = empty_wd if what == "no snapshots" else workdir
    with pytest.raises(SystemExit) as info:
      _run([f"--workdirs={workdirs}", flag, f"--out={out}"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1, what
    assert err == f"salt_jax.segment: {message}", what
    assert not out.exists(), what


def test_a_bad_file_in_a_folder_stops_before_any_output(tmp_path, tiny_model, capsys):
  workdir = _workdir(tmp_path / "wd", tiny_model)
  folder = tmp_path / "sections"
  folder.mkdir()
  cv2.imwrite(str(folder / "a_good.png"), np.zeros((120, 130), np.uint8))
  np.save(folder / "b_nan.npy", np.full((120, 130), np.nan))
  with pytest.raises(SystemExit):
    _run([f"--workdirs={workdir}", f"--input={folder}", f"--out={tmp_path / 'out'}"])
  assert capsys.readouterr().err.strip() == f"salt_jax.segment: {folder / 'b_nan.npy'}: 15600 NaN or " \
                                            "infinite value(s); a section must be finite"
  assert not (tmp_path / "out").exists()


def test_cli_end_to_end_on_a_real_png_and_an_npy(tmp_path, tiny_model, data_dir, capsys):
  workdir = _workdir(tmp_path / "wd", tiny_model)
  tiles = _real_tiles(data_dir, 4)
  folder = tmp_path / "in"
  folder.mkdir()
  png = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)[:173, :150]
  cv2.imwrite(str(folder / "real.png"), cv2.cvtColor(png, cv2.COLOR_GRAY2BGR))  # RGB, read as grey
  depth = np.random.default_rng(0).normal(size=(103, 211)).astype(np.float32)
  np.save(folder / "amplitude.npy", depth)
  out = tmp_path / "out"
  records = _run([f"--workdirs={workdir}", f"--input={folder}", f"--out={out}", "--save_probs",
                  "--batch_size=8"])
  printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [r["name"] for r in printed] == ["amplitude", "real"] == [r["name"] for r in records]
  for name, shape in (("real", png.shape), ("amplitude", depth.shape)):
    mask = cv2.imread(str(out / f"{name}_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}
    assert cv2.imread(str(out / f"{name}_overlay.png")).shape == shape + (3,)
    probs = np.load(out / f"{name}_probs.npy")
    assert probs.dtype == np.float16 and probs.shape == shape and 0 <= probs.min() <= probs.max() <= 1
    clear = np.abs(probs.astype(np.float32) - 0.5) > 1e-3  # one snapshot: probs is its p, in float16
    np.testing.assert_array_equal((mask == 255)[clear], (probs > 0.5)[clear])
  assert sorted(p.name for p in out.iterdir()) == sorted(
      f"{n}_{k}" for n in ("real", "amplitude") for k in ("mask.png", "overlay.png", "probs.npy"))
  assert all(r["windows"] > 0 and r["windows_per_s"] > 0 for r in records)


def test_stride_tile_matches_the_per_tile_prediction_of_predict(tmp_path, tiny_model, data_dir):
  config, variables = tiny_model
  tiles = _real_tiles(data_dir, 6)
  mesh = parallel.make_mesh()
  logits = predict.make_predictor(configlib.sections(config), mesh, 8).outputs(parallel.replicate(variables, mesh), tiles).logits
  threshold = float(np.quantile(logits, 0.4))  # a threshold that splits the random model's logits
  workdir = _workdir(tmp_path / "wd", tiny_model, threshold)
  section = tiles.reshape(2, 3, TILE, TILE).transpose(0, 2, 1, 3).reshape(2 * TILE, 3 * TILE)
  cv2.imwrite(str(tmp_path / "tiles.png"), section)
  _run([f"--workdirs={workdir}", f"--input={tmp_path / 'tiles.png'}", f"--out={tmp_path / 'out'}",
        f"--stride={TILE}", "--batch_size=8"])
  mask = cv2.imread(str(tmp_path / "out" / "tiles_mask.png"), cv2.IMREAD_UNCHANGED) == 255
  expected = (logits > threshold).reshape(2, 3, TILE, TILE).transpose(0, 2, 1, 3).reshape(section.shape)
  clear = (np.abs(logits - threshold) > 1e-5).reshape(2, 3, TILE, TILE).transpose(0, 2, 1, 3)
  clear = clear.reshape(section.shape)
  assert clear.mean() > 0.999 and 0.3 < expected.mean() < 0.9
  np.testing.assert_array_equal(mask[clear], expected[clear])


def test_the_check_scores_only_validation_tiles_that_own_their_cell():
  from salt_jax.tools import section_check
  mosaics = pd.DataFrame({"id": ["v1", "t1", "v2", "v3", "t2"], "mosaic_id": [0, 0, 0, 0, 1],
                          "x": [0, 1, 1, 1, 0], "y": [0, 0, 1, 0, 0]})  # v3 lands on t1's cell
  cells = section_check.scored_cells(mosaics, ["v1", "v2", "v3", "absent"])
  assert cells["id"].tolist() == ["v1", "v2"] and cells["neighbours"].tolist() == [1, 1]
  mask = np.zeros((2 * TILE, 2 * TILE), bool)
  mask[TILE:, TILE:] = True  # the cell (x=1, y=1) of v2
  crops = section_check.crop_cells(mask, cells)
  assert not crops["v1"].any() and crops["v2"].all() and crops["v2"].shape == (TILE, TILE)


def test_a_bad_stride_or_a_workdir_given_twice_is_refused(tmp_path, tiny_model, capsys):
  workdir = _workdir(tmp_path / "wd", tiny_model)
  good = tmp_path / "good.png"
  cv2.imwrite(str(good), np.zeros((120, 120), np.uint8))
  for flag, message in (("--stride=0", "stride must be between 1 and 101, got 0"),
                        (f"--workdirs={workdir},{workdir}/", f"--workdirs lists {workdir}/ twice")):
    with pytest.raises(SystemExit) as info:
      _run([f"--workdirs={workdir}", f"--input={good}", f"--out={tmp_path / 'out'}", flag])
    assert info.value.code == 1 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("batch_size", [0, -3])
def test_a_batch_size_below_one_is_refused_before_anything_is_written(tmp_path, tiny_model, capsys,
                                                                       batch_size):
  workdir = _workdir(tmp_path / "wd", tiny_model)
  good = tmp_path / "good.png"
  cv2.imwrite(str(good), np.zeros((120, 120), np.uint8))
  with pytest.raises(SystemExit) as info:
    _run([f"--workdirs={workdir}", f"--input={good}", f"--out={tmp_path / 'out'}",
          f"--batch_size={batch_size}"])
  assert info.value.code == 1
  assert capsys.readouterr().err == ("salt_jax.segment: batch_size must be a positive number of windows "
                                     f"(unset: the config's eval_batch_size), got {batch_size}\n")
  assert not (tmp_path / "out").exists()


def _files(folder: pathlib.Path):
  """{name: (bytes, mtime_ns)} of the files in a folder."""
  return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_outputs_already_in_out_stop_a_second_run_unless_overwrite(tmp_path, tiny_model, capsys, monkeypatch):
  """A run killed after the first section's mask: the next run into that --out refuses, naming the mask,
  and changes nothing; with --overwrite it segments both sections and replaces the outputs."""
  workdir = _workdir(tmp_path / "wd", tiny_model)
  folder = tmp_path / "sections"
  folder.mkdir()
  rng = np.random.default_rng(3)
  for name in ("a", "b"):
    cv2.imwrite(str(folder / f"{name}.png"), rng.integers(0, 256, (120, 130), dtype=np.uint8))
  out = tmp_path / "out"
  out.mkdir()
  (out / "a_mask.png").write_bytes(b"left by a killed run")
  before = _files(out)
  argv = [f"--workdirs={workdir}", f"--input={folder}", f"--out={out}"]
  with pytest.raises(SystemExit) as info:
    _run(argv)
  assert info.value.code == 1
  assert capsys.readouterr().err == (f"salt_jax.segment: --out {out / 'a_mask.png'} already exists; pass "
                                     "--overwrite to replace it, or choose another --out\n")
  assert _files(out) == before
  monkeypatch.setattr(infer, "SnapshotLoader", lambda kind, batch_size: _FakeLoader(_contextual, {0: 0.0}))
  records = _run(argv + ["--overwrite"])
  assert [r["name"] for r in records] == ["a", "b"]
  assert sorted(_files(out)) == ["a_mask.png", "a_overlay.png", "b_mask.png", "b_overlay.png"]
  mask = cv2.imread(str(out / "a_mask.png"), cv2.IMREAD_UNCHANGED)
  assert mask.shape == (120, 130) and set(np.unique(mask)) == {0, 255}


def test_pixel_iou_pools_every_scored_pixel():
  from salt_jax.tools import section_check
  cells = pd.DataFrame({"id": ["a", "b"]})
  a, b = np.zeros((101, 101), np.uint8), np.zeros((101, 101), np.uint8)
  a[:10, :10] = 1                      # 100 true pixels, 50 of them predicted
  pred_a = a.copy()
  pred_a[:5] = 0
  pred_b = b.copy()
  pred_b[50:60, 50:55] = 1             # 50 false pixels on an empty tile
  iou = section_check.pixel_iou({"a": pred_a, "b": pred_b}, cells, {"a": a, "b": b})
  assert iou == pytest.approx(50 / (100 + 50))
  assert np.isnan(section_check.pixel_iou({"a": b, "b": b}, cells, {"a": b, "b": b}))


def test_the_check_at_stride_tile_reproduces_predict_on_the_fold_tiles(tmp_path, tiny_model, mini_data_dir):
  """section_check end to end on real tiles: a mosaic of 12 train tiles, a random snapshot, its predict
  masks; at stride 101 the validation tiles cropped from the section are exactly predict's."""
  from salt_jax.tools import section_check
  from salt_jax.data import DataSource
  config, variables = tiny_model
  config = config.copy_and_resolve_references()
  config.update(data_dir=str(mini_data_dir), num_folds=4)
  workdir = tmp_path / "wd"
  rundir.RunDir(workdir).record_run(config)
  checkpoints.save_snapshot(rundir.RunDir(workdir).snapshot_dir(0, 0, "max_map"), variables,
                            {"val_threshold": 0.0, "fold": 0, "cycle": 0})
  source = DataSource(str(mini_data_dir))
  predict.predict_workdir(str(workdir), source=source, batch_size=8)
  folds = pd.read_csv(rundir.RunDir(workdir).folds_csv, dtype={"id": str})
  ids = np.concatenate([folds["id"][folds["fold"] == 0][:6], folds["id"][folds["fold"] != 0][:6]])
  mosaics = pd.DataFrame({"id": ids, "mosaic_id": 0, "x": np.arange(12) % 4, "y": np.arange(12) // 4})
  mosaics.to_csv(tmp_path / "mosaics.csv", index=False)
  table = section_check.fold_check(str(workdir), 0, source, tmp_path / "mosaics.csv", strides=(101,),
                                   batch_size=8, phases=(0, 50))
  assert table["method"].tolist() == ["predict, one tile at a time", "segment, stride 101",
                                      "segment, stride 101, phase 50"]
  assert table["tiles"].tolist() == [6, 6, 6]
  assert table["tiles changed"].tolist()[:2] == [0, 0] and table["mAP"].iloc[0] == table["mAP"].iloc[1]
  assert table["pixel IoU"].iloc[0] == table["pixel IoU"].iloc[1]
  assert table.attrs["speed"]["stride 101"]["windows"] == 6 and table.attrs["mosaics"] == 1  # scored cells
  # phase 50: windows span rows [-50, 51), [51, 152), [152, 253) and 5 columns from -50; the 6 cells (row 0:
  # columns 0-3, row 1: columns 0-1 of the 3 x 4 mosaic) touch 5 + 5 + 3 of them
  assert table.attrs["speed"]["stride 101, phase 50"]["windows"] == 13


def test_a_png_that_fails_on_a_full_disk_is_never_renamed_into_place(tmp_path, data_dir, full_disk):
  """A small PNG fits in the C library's buffer, so only the file's close sees the full disk: the write must
  still raise, naming the output, and leave no file under the output's name nor a temporary one beside
  it."""
  import errno
  from salt_jax import errors
  full_disk()
  section = _real_tiles(data_dir, 2)[:, :75].reshape(150, 101)
  result = infer.segment_section(section, _snaps([0]), _FakeLoader(_contextual, {0: 0.0}), TILE,
                                   save_probs=True)
  out = tmp_path / "out"
  out.mkdir()
  paths = files.output_paths(out, "real", save_probs=True)
  with pytest.raises(errors.IOFailure) as info:
    files.write_outputs(paths, section, result.mask, result.probs)
  assert str(info.value) == f"cannot write {paths['mask']} ([Errno {errno.ENOSPC}] No space left on device)"
  assert list(out.iterdir()) == []


def _padded_prediction(section: np.ndarray, fn) -> np.ndarray:
  """fn on the windows of a section reflect-padded at its bottom and right up to whole 101x101 windows
  (stride 101), cropped back to the section's (H,W)."""
  h, w = section.shape
  padded = np.pad(section, ((0, -h % TILE), (0, -w % TILE)), mode="reflect")
  rows, cols = padded.shape[0] // TILE, padded.shape[1] // TILE
  windows = padded.reshape(rows, TILE, cols, TILE).transpose(0, 2, 1, 3).reshape(-1, TILE, TILE)
  out = fn(windows).reshape(rows, cols, TILE, TILE).transpose(0, 2, 1, 3).reshape(padded.shape)
  return out[:h, :w]


def test_a_section_smaller_than_a_tile_is_reflect_padded_to_one(tmp_path, tiny_model, data_dir, monkeypatch,
                                                                 caplog):
  """A 75 x 18 crop of a real tile and a 1-pixel-high row of tiles are segmented (not refused) with a
  one-line note each: their windows are the reflect-padded section, and the outputs keep their size."""
  workdir = _workdir(tmp_path / "wd", tiny_model)
  monkeypatch.setattr(infer, "SnapshotLoader", lambda kind, batch_size: _FakeLoader(_contextual, {0: 0.0}))
  tiles = _real_tiles(data_dir, 2)
  inputs = {"crop": tiles[0, 10:85, 40:58], "row": np.concatenate(tiles, 1)[50:51, :150]}
  folder = tmp_path / "in"
  folder.mkdir()
  cv2.imwrite(str(folder / "crop.png"), inputs["crop"])
  np.save(folder / "row.npy", inputs["row"])
  out = tmp_path / "out"
  with caplog.at_level("INFO"):
    records = _run([f"--workdirs={workdir}", f"--input={folder}", f"--out={out}", "--save_probs"])
  notes = [r.getMessage() for r in caplog.records if "smaller than a 101 x 101 tile" in r.getMessage()]
  assert notes == [f"{folder / 'crop.png'}: the section is 75 x 18 px (height x width), smaller than a "
                   "101 x 101 tile; reflect-padded to a tile, its outputs keep its size",
                   f"{folder / 'row.npy'}: the section is 1 x 150 px (height x width), smaller than a "
                   "101 x 101 tile; reflect-padded to a tile, its outputs keep its size"]
  assert [r["windows"] for r in records] == [1, 2]
  for name, section in inputs.items():
    expected = _padded_prediction(section, _contextual)
    probs = np.load(out / f"{name}_probs.npy")
    assert probs.shape == section.shape
    np.testing.assert_array_equal(probs, expected.astype(np.float16))
    mask = cv2.imread(str(out / f"{name}_mask.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(mask == 255, expected > 0.5)
    assert cv2.imread(str(out / f"{name}_overlay.png")).shape == section.shape + (3,)

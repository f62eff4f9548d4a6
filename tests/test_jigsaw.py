"""Jigsaw solver and post-processing rules (SPEC 8): synthetic reassembly, one test per rule, real data."""
import importlib.util
import json
import pathlib
import time

import cv2
import numpy as np
import pandas as pd
import pytest

from salt_jax import cli
from salt_jax.data import DataError, DataSource
from salt_jax.data import rle as rle_lib
from salt_jax.data import kaggle, submission
from salt_jax.data.submission import Submission
from salt_jax.jigsaw import __main__ as jigsaw_main
from salt_jax.jigsaw import edges, effect, render, rules, solver, tables, tasks

S = 101
REPO = pathlib.Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------- solver
def _field(rng, h, w, n=60, kmax=0.5):
  """Smooth image: gradient plus n random plane waves with |k| <= kmax rad/px."""
  yy, xx = np.mgrid[0:h, 0:w].astype(float)
  f = 0.002 * xx + 0.001 * yy
  for _ in range(n):
    kx, ky = rng.uniform(-kmax, kmax, 2)
    f += rng.uniform(0.2, 1) * np.sin(kx * xx + ky * yy + rng.uniform(0, 2 * np.pi))
  return f


def _spec_rows(desc, forward_side, backward_side):
  """SPEC 8.1/8.2's kept rows written out in numpy: for every tile b, a = b's best match on the other side,
  s = a's best match back; kept when s != a, d1(a) < 10, 1 - d1/d2 > 0.2 for a and for b. -> [(a, s)]."""
  def best2(q, base):
    d = np.sqrt(((q[:, None] - base[None]) ** 2).sum(-1))
    order = np.argsort(d, axis=1, kind="stable")[:, :2]
    d1, d2 = np.take_along_axis(d, order, 1).T
    return order[:, 0], d1, 1 - d1 / d2
  fwd, fwd_d1, fwd_conf = best2(desc[forward_side], desc[backward_side])
  bwd, _, bwd_conf = best2(desc[backward_side], desc[forward_side])
  return sorted((int(a), int(fwd[a])) for b, a in enumerate(bwd)
                if fwd[a] != a and fwd_d1[a] < 10 and fwd_conf[a] > 0.2 and bwd_conf[b] > 0.2)


def _synthetic_pool(rng, rows, cols, n_distractors=20):
  """A rows x cols mosaic of one smooth field (tiles 0.. in row-major order) plus noise distractors, drawn
  again until SPEC 8.1's rule keeps exactly the mosaic's true adjacencies, each once.

  The redraw removes puzzles that are ambiguous for an edge matcher, not solver failures. The pool holds a
  single mosaic, so its 22 outer edges have no partner, yet unrelated edges of a smooth field correlate
  (the best of the 36 bottom-row/top-row pairs has a median r of 0.58), and with only ~26 candidate edges
  the second neighbour is far, so an outer edge can pass r > 0.5 and the ratio test. The rule then joins
  the mosaic's bottom row to its top row (seeds 7 and 10: d1 8.2/8.4, confidence 0.30/0.23), and the
  solver places a wrapped strip, as the rule says (test below); or an outer edge picks an interior tile
  that already has its partner, and the duplicated row stops that strip walk (the original's behaviour,
  repaired by `mutual=True`), which loses tiles on seeds 140 and 190. Nothing in the tiles says where
  the mosaic ends; among 22,000 real tiles such edges meet many close candidates and fail the ratio test.
  16 of seeds 0..29 redraw (2 to 9 draws), most for a harmless duplicate.
  Returns (pool (N,101,101) float, number of draws)."""
  for draws in range(1, 11):
    img = _field(rng, rows * S, cols * S)
    tiles = [img[r * S:(r + 1) * S, c * S:(c + 1) * S] for r in range(rows) for c in range(cols)]
    pool = np.stack(tiles + [rng.uniform(0, 1, (S, S)) for _ in range(n_distractors)])
    desc = edges.descriptors(pool)
    vertical = [(k, k + cols) for k in range(rows * cols - cols)]                   # s below a
    horizontal = [(k, k - 1) for k in range(rows * cols) if k % cols]                # s left of a
    if (_spec_rows(desc, "bottom", "top") == vertical and _spec_rows(desc, "left", "right") == horizontal):
      return pool, draws
  raise AssertionError("no unambiguous mosaic in 10 draws")


@pytest.mark.parametrize("seed", range(30))
def test_synthetic_reassembly_exact(seed):
  rng = np.random.default_rng(seed)
  rows, cols = 5, 6
  pool, _ = _synthetic_pool(rng, rows, cols)
  perm = rng.permutation(len(pool))
  sol = solver.solve_images(pool[perm], [f"t{i}" for i in perm], n_mosaics=None)
  table = sol.table
  assert table["mosaic_id"].nunique() == 1
  placed = {int(i[1:]): (x, y) for i, x, y in zip(table["id"], table["x"], table["y"])}
  assert sorted(placed) == list(range(rows * cols))  # every image tile, no distractor
  offsets = {(x - k % cols, y - k // cols) for k, (x, y) in placed.items()}
  assert offsets == {(0, 0)}  # relative positions exact (and the top-left tile at 0,0)


def test_ambiguous_outer_edges_are_joined_as_spec_8_1_says():
  """Seed 7's first draw: the rule keeps one extra vertical row, bottom-row tile 28 above top-row tile 3;
  the solver keeps the same rows and places column 3's strip below the mosaic (5 rows down)."""
  rng = np.random.default_rng(7)
  img = _field(rng, 5 * S, 6 * S)
  pool = np.stack([img[r * S:(r + 1) * S, c * S:(c + 1) * S] for r in range(5) for c in range(6)]
                  + [rng.uniform(0, 1, (S, S)) for _ in range(20)])
  desc = edges.descriptors(pool)
  spec = _spec_rows(desc, "bottom", "top")
  assert sorted(set(spec) - {(k, k + 6) for k in range(24)}) == [(28, 3)]
  m = solver.match_all(desc)
  assert sorted(zip(*map(np.ndarray.tolist, solver.kept_rows(m["below"], m["above"])))) == spec


def test_knn_brute_matches_kdtree():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(700, 101)), rng.normal(size=(500, 101))
  a, b = solver.knn2_pair(x, y, chunk=128)
  for got, (q, base) in ((a, (x, y)), (b, (y, x))):
    want = solver.knn2(q, base, knn="kdtree")
    np.testing.assert_array_equal(got.idx, want.idx)
    np.testing.assert_allclose(got.d1, want.d1, rtol=1e-12)
    np.testing.assert_allclose(got.d2, want.d2, rtol=1e-12)


def test_normalised_distance_is_pearson():
  rng = np.random.default_rng(2)
  e = edges.normalise(rng.normal(size=(40, 101)) + np.linspace(0, 3, 101))
  r = np.corrcoef(e[0], e[1])[0, 1]
  np.testing.assert_allclose(((e[0] - e[1]) ** 2).sum(), 200 * (1 - r), rtol=1e-9)


def test_strip_walk_orientation_and_duplicate_rows():
  # vertical rows: 0 above 1 above 2; a duplicated row out of 3 stops a forward walk (FAITHFUL)
  a, s = np.array([0, 1, 3, 3]), np.array([1, 2, 4, 4])
  strips = solver.walk_strips(a, s, 5)
  assert strips == [[2, 1, 0]]  # bottom -> top
  assert solver.walk_strips(np.array([0, 1, 3]), np.array([1, 2, 4]), 5) == [[2, 1, 0], [4, 3]]


# ---------------------------------------------------------------------------------------------- rules
def _mosaic(cells, mosaic_id=0):
  """{(x, y): id} -> mosaic table."""
  return pd.DataFrame([(t, mosaic_id, x, y) for (x, y), t in cells.items()], columns=tables.MOSAIC_COLUMNS)


def _m(*slices):
  m = np.zeros((S, S), np.uint8)
  for sl in slices:
    m[sl] = 1
  return m


STRIPES = _m(np.s_[:, 20:40], np.s_[:, 70:75])  # full-vertical
BLOB = _m(np.s_[10:30, 10:30])
EMPTY = _m()


def _area(n):
  m = np.zeros(S * S, np.uint8)
  m[:n] = 1
  return m.reshape(S, S)


def _sub(masks):
  """{id: (101,101) mask} -> Submission."""
  return Submission(list(masks), np.stack(list(masks.values())) if masks else np.zeros((0, S, S)))


def _jigsaw(*argv):
  """`python -m salt_jax.jigsaw ARGV`, run in this process; what its task returned."""
  return cli.run(jigsaw_main.main, jigsaw_main.define_flags, prog="salt_jax.jigsaw",
                 commands=jigsaw_main.COMMANDS, argv=list(argv))


def _run(cells, known, unknown, steps, max_mosaic_id=rules.MAX_MOSAIC_ID, mosaic_id=0):
  res = rules.apply_rules(_mosaic(cells, mosaic_id), known, _sub(unknown), steps, max_mosaic_id)
  return res.stages[steps[-1]], res.changed[steps[-1]]


def test_mask_classes():
  assert rules.is_full_vertical(STRIPES) and not rules.is_semi_vertical(STRIPES)
  semi = STRIPES.copy()
  semi[:50] = 0
  assert rules.is_semi_vertical(semi) and not rules.is_full_vertical(semi)
  assert not rules.is_full_vertical(_m(np.s_[:, :])) and not rules.is_full_vertical(EMPTY)
  assert rules.AREA_LARGE == 833 and rules.AREA_TINY == 3  # 50*50*255 and 10*255 over 3 channels


def test_vertical_rules_1_and_2():
  cells = {(0, 0): "a", (0, 1): "k", (0, 2): "b", (0, 3): "c", (1, 0): "p", (1, 1): "j", (1, 2): "q"}
  known = {"k": STRIPES, "j": BLOB}  # j is not full-vertical: its column must not change
  unknown = {t: EMPTY for t in "abcpq"}
  out, changed = _run(cells, known, unknown, ("vertical",))
  assert changed == {"a": "vertical_1", "b": "vertical_2", "c": "vertical_2"}
  for t in "abc":
    np.testing.assert_array_equal(out[t], STRIPES)
  assert not out["p"].any() and not out["q"].any()


@pytest.mark.parametrize("above_mask,rule", [(EMPTY, "vertical_3_1"), (BLOB, "vertical_3_4")])
def test_vertical_rule_3_with_train_tile_above(above_mask, rule):
  cells = {(0, 0): "v0", (0, 1): "e", (0, 2): "v", (0, 3): "w", (0, 4): "k"}
  known = {"k": STRIPES, "e": above_mask}
  out, changed = _run(cells, known, {t: BLOB for t in ("v0", "v", "w")}, ("vertical",))
  assert changed == {"v": rule, "w": "vertical_1"}  # v0 lies above the train tile: untouched
  np.testing.assert_array_equal(out["v0"], BLOB)


@pytest.mark.parametrize("u_area,v_area,fires", [
    (834, 50, True),  # 3_2(a): a test tile above with > 833 px
    (833, 3, True),  # 3_2(b): salt above is <= 833 px and v itself has <= 3 px
    (833, 4, False),  # neither
])
def test_vertical_rule_3_2(u_area, v_area, fires):
  cells = {(0, 0): "u", (0, 1): "v", (0, 2): "w", (0, 3): "k"}
  out, changed = _run(cells, {"k": STRIPES}, {"u": _area(u_area), "v": _area(v_area), "w": EMPTY},
                      ("vertical",))
  assert changed.get("v") == ("vertical_3_2" if fires else None)
  assert "u" not in changed and changed["w"] == "vertical_1"
  np.testing.assert_array_equal(out["v"], STRIPES if fires else _area(v_area))


def test_vertical_rule_3_3_and_semi():
  cells = {(0, y): f"t{y}" for y in range(4)}
  cells[(0, 4)] = "k"
  semi = STRIPES.copy()
  semi[:50] = BLOB[:50]
  cells.update({(1, 0): "s_above", (1, 1): "s", (1, 2): "s_below"})
  known = {"k": STRIPES, "s": semi}
  unknown = {t: EMPTY for t in ("t0", "t1", "t2", "t3", "s_above", "s_below")}
  out, changed = _run(cells, known, unknown, ("vertical",))
  # no salt predicted anywhere in k's column: tiles with y >= floor(4 / 2) take k's mask
  assert changed == {"t2": "vertical_3_3", "t3": "vertical_1", "s_below": "vertical_semi"}
  np.testing.assert_array_equal(out["s_below"], np.repeat(semi[-1:], S, 0))
  assert not out["s_above"].any() and not out["t1"].any()


def test_empty_rule_1():
  full_bottom, partial_bottom = _m(np.s_[60:, :]), _m(np.s_[60:, :100])
  cells = {(0, 0): "b", (0, 1): "t1", (0, 2): "t2", (2, 0): "c", (2, 1): "u1"}
  known = {"b": full_bottom, "c": partial_bottom}
  unknown = {"t1": BLOB, "t2": BLOB, "u1": BLOB}
  out, changed = _run(cells, known, unknown, ("empty",))
  assert changed == {"t1": "empty_1", "t2": "empty_1"}
  assert not out["t1"].any() and not out["t2"].any()
  np.testing.assert_array_equal(out["u1"], BLOB)
  # only the 159 largest mosaics take part
  _, changed = _run(cells, known, unknown, ("empty",), mosaic_id=159)
  assert not changed


def test_empty_rule_2():
  cells = {(0, 0): "s", (0, 1): "e0", (0, 2): "t0",  # predicted salt above an empty train tile
           (2, 0): "n", (2, 1): "e2", (2, 2): "t2",  # nothing above: must not fire
           (4, 1): "e4", (4, 2): "t4", (5, 0): "j"}  # j's salt leaks left: a virtual tile at (4, 0)
  known = {"e0": EMPTY, "e2": EMPTY, "e4": EMPTY, "j": _m(np.s_[:, :10])}
  unknown = {"s": BLOB, "t0": BLOB, "n": EMPTY, "t2": BLOB, "t4": BLOB}
  out, changed = _run(cells, known, unknown, ("empty",))
  assert changed == {"t0": "empty_2", "t4": "empty_2"}
  np.testing.assert_array_equal(out["t2"], BLOB)
  np.testing.assert_array_equal(out["s"], BLOB)


def test_smooth_rule_train_driven():
  src = _m(np.s_[60:, 30:50])  # bottom row partially salt
  cells = {(0, 0): "a", (0, 1): "t", (1, 0): "a2", (1, 1): "t2", (3, 0): "a3", (3, 1): "t3"}
  known = {"a": src, "a2": _m(np.s_[60:, :]), "a3": src}  # a2's bottom row is all salt: not a boundary
  unknown = {"t": EMPTY, "t2": EMPTY, "t3": BLOB}  # t3 is predicted non-empty: never a target
  out, changed = _run(cells, known, unknown, ("smooth",))
  assert changed == {"t": "smooth_train"}
  np.testing.assert_array_equal(out["t"], np.repeat(src[-1:], S, 0))  # one key: vertical extension
  assert not out["t2"].any()
  np.testing.assert_array_equal(out["t3"], BLOB)


def test_smooth_rule_test_driven():
  p, q = _m(np.s_[20:70, 50:]), _m(np.s_[30:80, :40])
  cells = {(0, 0): "p", (1, 0): "t", (2, 0): "q"}
  out, changed = _run(cells, {}, {"p": p, "t": EMPTY, "q": q}, ("smooth",))
  assert changed == {"t": "smooth_test"}
  want = np.zeros((S, S), np.uint8)
  for c in range(S):  # left+right: salt below the line from (0, 20) to (100, 30)
    want[int(0.1 * c + 20):, c] = 1
  np.testing.assert_array_equal(out["t"], want)
  # a single boundary (no right neighbour) is not enough for a test-driven fill
  out, changed = _run({(0, 0): "p", (1, 0): "t"}, {}, {"p": p, "t": EMPTY}, ("smooth",))
  assert not changed and not out["t"].any()


def test_synthesis_exclusive_ends():
  v = np.zeros(S, np.uint8)
  v[30:50] = 1
  m = rules.synthesize_train_driven({"up": v, "down": v})
  np.testing.assert_array_equal(m, _m(np.s_[:, 30:49]))  # [first, last): column 49 dropped (FAITHFUL)
  assert rules.synthesize_test_driven({"up": v}) is None
  no_gap = np.ones(S, np.uint8)
  assert rules.synthesize_train_driven({"down": no_gap, "left": v, "right": v}) is None


# ------------------------------------------------------------------------------------ effect and CLI
def _fake_data_dir(root: pathlib.Path, masks, images=None, test_ids=()):
  """A tiny Kaggle-style train folder (train.csv, train/images, train/masks; sample_submission.csv of
  `test_ids`)."""
  (root / "train" / "images").mkdir(parents=True)
  (root / "train" / "masks").mkdir(parents=True)
  for i, (tid, m) in enumerate(masks.items()):
    img = images[tid] if images else np.full((S, S), 10 * i, np.uint8)
    cv2.imwrite(str(root / "train" / "images" / f"{tid}.png"), img)
    cv2.imwrite(str(root / "train" / "masks" / f"{tid}.png"), (m * 255).astype(np.uint8))
  pd.DataFrame({"id": list(masks), "rle_mask": [rle_lib.rle_encode(m) for m in masks.values()]}).to_csv(
      root / "train.csv", index=False)
  if test_ids:
    pd.DataFrame({"id": list(test_ids), "rle_mask": ""}).to_csv(root / "sample_submission.csv", index=False)


def _effect_case():
  """k full-vertical and known; v (validation) lies below k, truth = k's mask, predicted empty."""
  cells = {(0, 0): "k", (0, 1): "v", (1, 0): "o", (1, 1): "w"}
  truth = {"k": STRIPES, "v": STRIPES, "o": EMPTY, "w": EMPTY}
  return cells, truth


def test_rule_effect_function():
  cells, truth = _effect_case()
  table = effect.rule_effect(_mosaic(cells), {"k": truth["k"], "o": truth["o"]},
                             _sub({"v": EMPTY, "w": EMPTY}), truth)
  cum = table[table["mode"] == "cumulative"].set_index("step")
  assert table.iloc[0]["map"] == pytest.approx(0.5)  # w right (empty), v wrong
  assert cum.loc["vertical", "map"] == pytest.approx(1.0) and cum.loc["vertical", "n_changed"] == 1
  assert cum.loc["empty", "n_changed"] == 0
  with pytest.raises(ValueError):
    effect.rule_effect(_mosaic(cells), truth, _sub({"v": EMPTY}), truth)  # evaluated ids may not be known


def test_rule_effect_script(tmp_path):
  cells, truth = _effect_case()
  _fake_data_dir(tmp_path / "data", truth)
  submission.write_csv_atomic(_mosaic(cells), tmp_path / "mosaics.csv")
  pd.DataFrame({"id": ["k", "v", "o", "w"], "fold": [0, 1, 0, 1]}).to_csv(tmp_path / "folds.csv", index=False)
  submission.write_submission(tmp_path / "pred.csv", _sub({"v": EMPTY, "w": EMPTY}))
  script = REPO / "scripts" / "jigsaw_rule_effect.py"
  spec = importlib.util.spec_from_file_location("jigsaw_rule_effect", script)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  table = cli.run(mod.main, mod.define_flags, prog="scripts/jigsaw_rule_effect.py", argv=[
      f"--data_dir={tmp_path / 'data'}", f"--mosaics={tmp_path / 'mosaics.csv'}",
      f"--folds={tmp_path / 'folds.csv'}", "--fold=1", f"--predictions={tmp_path / 'pred.csv'}",
      f"--out={tmp_path / 'effect.csv'}"])
  assert list(table["map"].round(3)[:4]) == [0.5, 1.0, 1.0, 1.0]
  assert (tmp_path / "effect.csv").exists()


def test_postprocess_and_render_cli(tmp_path, capsys):
  cells, truth = _effect_case()
  known = {"k": truth["k"], "o": truth["o"]}
  _fake_data_dir(tmp_path / "data", known, test_ids=["w", "v"])
  submission.write_csv_atomic(_mosaic(cells), tmp_path / "mosaics.csv")
  submission.write_submission(tmp_path / "sub.csv", _sub({"v": EMPTY, "w": BLOB}))
  _jigsaw("postprocess", f"--data_dir={tmp_path / 'data'}", f"--submission={tmp_path / 'sub.csv'}",
          f"--mosaics={tmp_path / 'mosaics.csv'}", f"--out={tmp_path / 'pp.csv'}", "--keep_intermediate")
  assert capsys.readouterr().out.splitlines() == [  # the printed report is part of the CLI's contract
      "vertical: 1 tiles changed {'vertical_2': 1}", "empty: 0 tiles changed {}",
      "smooth: 0 tiles changed {}",
      f"-> {tmp_path / 'pp.csv'}"]
  out = submission.read_submission(tmp_path / "pp.csv")
  assert list(out) == ["v", "w"]
  np.testing.assert_array_equal(out["v"], STRIPES)
  assert (tmp_path / "pp.vertical.csv").exists() and (tmp_path / "pp.vertical-empty.csv").exists()
  assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporaries
  with pytest.raises(SystemExit) as exit_info:
    _jigsaw("postprocess", f"--data_dir={tmp_path / 'data'}", f"--submission={tmp_path / 'sub.csv'}",
            f"--mosaics={tmp_path / 'mosaics.csv'}", f"--out={tmp_path / 'x.csv'}", "--steps=vertical,emtpy")
  assert exit_info.value.code == 2 and "unknown rule step(s) 'emtpy'" in capsys.readouterr().err
  images = {t: np.full((S, S), 100, np.uint8) for t in truth}
  rgb = render.render_mosaic(_mosaic(cells), images, known, out)
  assert rgb.shape == (2 * S, 2 * S, 3)
  assert tuple(rgb[S + 50, 25]) != tuple(rgb[S + 50, 50])  # v: predicted salt tinted, background not
  assert rgb[50, 25, 1] > rgb[50, 25, 0]  # k: train mask tinted green


def _postprocess_case(root: pathlib.Path):
  """Data folder with sample ids v, w (k, o known), mosaics.csv; returns the postprocess arguments."""
  cells, truth = _effect_case()
  _fake_data_dir(root / "data", {"k": truth["k"], "o": truth["o"]}, test_ids=["v", "w"])
  submission.write_csv_atomic(_mosaic(cells), root / "mosaics.csv")
  return root / "data", root / "sub.csv", root / "mosaics.csv", root / "pp.csv"


def test_postprocess_task_returns_its_results(tmp_path):
  data, sub, mosaics, out = _postprocess_case(tmp_path)
  submission.write_submission(sub, _sub({"w": BLOB, "v": EMPTY}))
  res = tasks.postprocess(DataSource(data), sub, mosaics, out, keep_intermediate=True)
  assert res == json.loads(json.dumps(res))  # plain values: the pipeline records them in its step markers
  assert res["steps"] == {"vertical": {"changed": 1, "by_rule": {"vertical_2": 1}},
                          "empty": {"changed": 0, "by_rule": {}}, "smooth": {"changed": 0, "by_rule": {}}}
  assert res["tiles"] == 2 and res["out"] == str(out)
  assert res["intermediate"] == [str(tmp_path / "pp.vertical.csv"), str(tmp_path / "pp.vertical-empty.csv")]
  pp = submission.read_submission(out)
  assert list(pp) == ["w", "v"]  # the submission's row order
  np.testing.assert_array_equal(pp["v"], STRIPES)
  res = tasks.postprocess(DataSource(data), sub, mosaics, tmp_path / "only_empty.csv", steps=("empty",))
  assert list(res["steps"]) == ["empty"] and res["intermediate"] == []
  with pytest.raises(ValueError, match="unknown rule step.*'vert'"):
    tasks.postprocess(DataSource(data), sub, mosaics, tmp_path / "x.csv", steps=("vert",))
  assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("ids,message", [
    (["v"], r"sub\.csv: ids differ from sample_submission\.csv: 1 missing: 'w'$"),
    (["v", "w", "zz", "zy"], r"sub\.csv: ids differ from sample_submission\.csv: 2 unknown: 'zz', 'zy'$"),
    (["v", "w", "v"], r"sub\.csv: ids differ from sample_submission\.csv: 1 duplicated: 'v'$"),
])
def test_postprocess_rejects_submissions_without_exactly_the_sample_ids(tmp_path, capsys, ids, message):
  data, sub, mosaics, out = _postprocess_case(tmp_path)
  pd.DataFrame({"id": ids, "rle_mask": "1 5"}).to_csv(sub, index=False)
  out.write_text("previous\n")
  before = sorted(p.name for p in tmp_path.iterdir())
  with pytest.raises(DataError, match=message):
    tasks.postprocess(DataSource(data), sub, mosaics, out, keep_intermediate=True)
  with pytest.raises(SystemExit) as exit_info:
    _jigsaw("postprocess", f"--data_dir={data}", f"--submission={sub}", f"--mosaics={mosaics}",
            f"--out={out}", "--keep_intermediate")
  assert exit_info.value.code == 1
  err = capsys.readouterr().err
  assert "postprocess: error:" in err and str(sub) in err and "np." not in err
  assert out.read_text() == "previous\n"  # nothing written, no intermediate file, no temporary file
  assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_postprocess_needs_a_readable_sample_submission(tmp_path):
  data, sub, mosaics, out = _postprocess_case(tmp_path)
  submission.write_submission(sub, _sub({"v": EMPTY, "w": EMPTY}))
  (data / "sample_submission.csv").write_bytes(b"id,rle_mask\n\xe9t\xe9,\n")
  with pytest.raises(DataError, match=r"cannot parse .*sample_submission\.csv.*utf-8"):
    tasks.postprocess(DataSource(data), sub, mosaics, out)
  assert not out.exists()


def test_bad_mosaic_table_names_the_file(tmp_path):
  path = tmp_path / "mosaics.csv"
  path.write_text("id,mosaic_id,x,y\na,0,1,\n")
  with pytest.raises(DataError, match=r"mosaics\.csv: column\(s\) y must hold integers"):
    tables.read_mosaics(path)
  path.write_text("")
  with pytest.raises(DataError, match=r"cannot parse .*mosaics\.csv"):
    tables.read_mosaics(path)
  path.write_text("id,mosaic_id,x,y\n")
  assert len(tables.read_mosaics(path)) == 0


def test_solve_postprocess_render_tasks_on_real_tiles(mini_data_dir, tmp_path):
  mosaics = tmp_path / "mosaics.csv"
  source = DataSource(mini_data_dir)
  res = tasks.solve(source, mosaics)
  assert res == json.loads(json.dumps(res)) and res["out"] == str(mosaics)
  assert res["stats"]["n_tiles"] == 120 and set(res["seconds"]) == {"load", "solve"}
  table = tables.read_mosaics(mosaics)
  assert res["stats"]["placed"] == len(table) == 120  # 514 mosaics: the singletons too
  assert res["stats"]["mosaics"] == table["mosaic_id"].nunique()
  sample_ids = kaggle.read_sample_ids(mini_data_dir)
  masks = np.zeros((len(sample_ids), S, S), np.uint8)
  masks[::2, 50:] = 1
  submission.write_submission(tmp_path / "sub.csv", Submission(sample_ids, masks), sample_ids)
  res = tasks.postprocess(source, tmp_path / "sub.csv", mosaics, tmp_path / "pp.csv",
                          max_mosaic_id=None)
  assert list(res["steps"]) == list(rules.STEPS) and res["tiles"] == len(sample_ids)
  for step in res["steps"].values():
    assert step["changed"] == sum(step["by_rule"].values())
  assert list(submission.read_submission(tmp_path / "pp.csv", sample_ids=sample_ids)) == sample_ids
  paths = tasks.render(source, mosaics, tmp_path / "png", submission=tmp_path / "pp.csv", top=2)
  assert len(paths) == 2 and all(p.stat().st_size > 0 for p in paths)


def test_a_mosaic_png_that_fails_on_a_full_disk_is_never_renamed_into_place(mini_data_dir, tmp_path,
                                                                            full_disk):
  import errno
  from salt_jax import errors
  mosaics = tmp_path / "mosaics.csv"
  source = DataSource(mini_data_dir)
  tasks.solve(source, mosaics)
  out = tmp_path / "png"
  full_disk()
  with pytest.raises(errors.IOFailure) as info:
    tasks.render(source, mosaics, out, top=1)
  want = out / f"mosaic_{render.largest_mosaics(tables.read_mosaics(mosaics), 1)[0]:04d}.png"
  assert str(info.value) == f"cannot write {want} ([Errno {errno.ENOSPC}] No space left on device)"
  assert list(out.iterdir()) == []


# ----------------------------------------------------------------------------------------- real data
def _edge_agreement(table, masks):
  """Mean fraction of equal mask pixels across the shared edge of adjacent train tiles, and the pair count."""
  cell = {}
  for t, m, x, y in zip(table["id"], table["mosaic_id"], table["x"], table["y"]):
    cell.setdefault((m, x, y), t)
  agree = []
  for (m, x, y), t in cell.items():
    for dx, dy in ((1, 0), (0, 1)):
      u = cell.get((m, x + dx, y + dy))
      if t in masks and u in masks:
        a, b = (masks[t][:, -1], masks[u][:, 0]) if dx else (masks[t][-1], masks[u][0])
        agree.append(float((a == b).mean()))
  return float(np.mean(agree)), len(agree)


@pytest.mark.slow
def test_real_solve(data_dir):
  from salt_jax.data import kaggle  # pylint: disable=import-outside-toplevel
  tiles = edges.load_tile_set(DataSource(data_dir))
  assert len(tiles.ids) == 22000
  t0 = time.process_time()
  sol = solver.solve(tiles)
  cpu = time.process_time() - t0
  table = sol.table
  train = kaggle.load_train(data_dir, verify_rle=False)
  masks = dict(zip(train.ids.tolist(), train.masks))
  agree, pairs = _edge_agreement(table, masks)
  sizes = table.groupby("mosaic_id").size()
  print(f"\nmosaics={table['mosaic_id'].nunique()} placed={len(table)} largest={sizes.max()} "
        f"train pairs={pairs} mask edge agreement={agree:.4f} solve cpu={cpu:.1f}s stats={sol.stats}")
  assert sol.stats["mosaics"] == solver.N_MOSAICS and table["id"].is_unique
  assert len(table) > 5000 and sizes.max() > 50
  # Adjacent train masks agree on ~84% of the boundary pixels: TGS labels often stop at tile borders
  # (full-vertical stripes next to empty tiles), which is what the rules exploit; random pairs agree far less.
  assert agree > 0.8
  rng = np.random.default_rng(0)
  ids = train.ids
  rand = [float((masks[a][:, -1] == masks[b][:, 0]).mean()) for a, b in rng.choice(ids, (2000, 2))]
  assert agree > np.mean(rand) + 0.1

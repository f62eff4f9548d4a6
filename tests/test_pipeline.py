"""The two-stage pipeline on the mini data: it finishes, and a re-run skips every finished step."""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import cv2
import ml_collections
import numpy as np
import pandas as pd
import pytest

from salt_jax import cli, configlib, metrics, pipeline
from salt_jax.data import kaggle, rle, submission
from salt_jax.inference import ensemble, predict
from salt_jax.jigsaw import effect, rules, tasks
from salt_jax.training import train
from salt_jax.workdir import rundir

REPO = pathlib.Path(__file__).resolve().parents[1]

TINY = dict(batch_size=8, train_subset=48, eval_batch_size=8, num_folds=4, warmup_epochs=1, cycle_num=1,
            cycle_len=2, eval_start=1, eval_every=1, cache_dir="")


def tiny_pipeline_config(data_dir):
  c = ml_collections.ConfigDict()
  c.data_dir = str(data_dir)
  c.train_overrides = ml_collections.ConfigDict(TINY)
  c.stage1 = ml_collections.ConfigDict(dict(
      models=[dict(name="tiny", config="configs/tiny.py", overrides=dict(seed=0))], folds=[0, 1]))
  c.stage2 = ml_collections.ConfigDict(dict(
      models=[dict(name="tiny", config="configs/tiny.py", overrides=dict(seed=1))], part_folds=[0, 1],
      pseudo_prob=0.5, pseudo_seed=0, predict_other_half=True))
  return c


@pytest.fixture(scope="module")
def finished(mini_data_dir, tmp_path_factory):
  outdir = tmp_path_factory.mktemp("pipeline")
  table = pipeline.run_pipeline(tiny_pipeline_config(mini_data_dir), str(outdir))
  return outdir, table


def test_pipeline_writes_final_submission_and_summary(finished, mini_data_dir):
  outdir, table = finished
  # stage 1 trained its two folds together, in one training call
  marker = json.loads((outdir / "done" / "stage1__train__tiny__folds_0,1.json").read_text())
  assert marker["result"] == {f"fold_{k}": {"epochs": 3, "best_val_map": pytest.approx(max(
      json.loads(l).get("val_map", -1) for l in (outdir / "stage1" / "tiny" / f"fold_{k}" / "history.jsonl")
      .read_text().splitlines()))} for k in (0, 1)}
  sub = pd.read_csv(outdir / "submission.csv", dtype=str, keep_default_na=False)
  sample = pd.read_csv(mini_data_dir / "sample_submission.csv", dtype=str, keep_default_na=False)
  assert list(sub["id"]) == list(sample["id"])
  assert rle.rle_decode_many(list(sub["rle_mask"]), (101, 101)).shape == (len(sample), 101, 101)
  assert set(table["stage"]) == {"stage1", "stage2"}
  assert (outdir / "stages.csv").exists() and (outdir / "pseudo_split.csv").exists()
  times = pd.read_csv(outdir / "steps.csv")
  assert times["wall s"].iloc[-1] == pytest.approx(times["wall s"].iloc[:-1].sum())
  assert {"jigsaw/solve", "stage1/held_out", "stage2/postprocess"} <= set(times["step"])
  # stage 2 part k trained on test half k and predicted only the other half
  half = pd.read_csv(outdir / "pseudo_split.csv", dtype={"id": str}).set_index("id")["half"]
  for part in (0, 1):
    pred = predict.load_prediction(outdir / "stage2" / f"tiny_pseudo_part{part}" / "predictions" / "max_map"
                                   / f"fold_{part}_cycle_0.npz")
    assert set(half.loc[pred["test_ids"]]) == {1 - part}
    config = json.loads((outdir / "stage2" / f"tiny_pseudo_part{part}" / f"fold_{part}" / "config.json")
                        .read_text())
    assert config["pseudo_split"] == part and config["pseudo_csv"].endswith("ensemble-vertical-empty-smooth.csv")


def _csv_masks(path):
  """{id: (101,101) uint8} of a submission CSV, decoded here."""
  frame = pd.read_csv(path, dtype=str, keep_default_na=False)
  return dict(zip(frame["id"], rle.rle_decode_many(list(frame["rle_mask"]), (101, 101))))


def _npz(path):
  """(test ids, test masks, valid ids, valid masks) of a prediction file, unpacked here."""
  with np.load(path) as z:
    unpack = lambda k: np.unpackbits(z[k], axis=1, count=101 * 101).reshape(-1, 101, 101)
    return ([str(i) for i in z["test_ids"]], unpack("test_masks"), [str(i) for i in z["valid_ids"]],
            unpack("valid_masks"))


def test_pipeline_submission_masks_follow_from_the_recorded_predictions(finished, mini_data_dir):
  """Stage 2's ensemble CSV is the vote of its models' prediction files (each pseudo part predicted the
  other test half, one snapshot each); every post-processing step changes exactly the tiles it reports;
  the submission is the last step's output; each OOF mAP is the mAP of that model's validation masks."""
  outdir, table = finished
  votes = {}
  for part in (0, 1):
    ids, masks, _, _ = _npz(outdir / "stage2" / f"tiny_pseudo_part{part}" / "predictions" / "max_map"
                            / f"fold_{part}_cycle_0.npz")
    for i, m in zip(ids, masks):
      votes.setdefault(i, []).append(m)
  ensembled = _csv_masks(outdir / "stage2" / "ensemble.csv")
  assert sorted(votes) == sorted(ensembled) and all(len(v) == 1 for v in votes.values())
  for i, v in votes.items():
    np.testing.assert_array_equal(ensembled[i], (np.mean(v, axis=0) >= 0.5).astype(np.uint8))

  out = outdir / "stage2" / "ensemble-vertical-empty-smooth.csv"
  report = json.loads((outdir / "done" / "stage2__postprocess.json").read_text())["result"]["steps"]
  chain = [outdir / "stage2" / "ensemble.csv"] + [tasks.intermediate_path(out, rules.STEPS[:j + 1])
                                                  for j in range(len(rules.STEPS) - 1)] + [out]
  for step, before, after in zip(rules.STEPS, chain, chain[1:]):
    a, b = _csv_masks(before), _csv_masks(after)
    assert sum(not np.array_equal(a[i], b[i]) for i in a) == report[step]["changed"], step
  final = _csv_masks(outdir / "submission.csv")
  assert all(np.array_equal(final[i], m) for i, m in _csv_masks(out).items())

  train_csv = pd.read_csv(mini_data_dir / "train.csv", dtype=str, keep_default_na=False)
  truth = dict(zip(train_csv["id"], rle.rle_decode_many(list(train_csv["rle_mask"]), (101, 101))))
  rows = table[table["step"] == "cycle vote"].set_index(["stage", "model"])["OOF mAP"]
  stage1 = outdir / "stage1" / "tiny" / "predictions" / "max_map"
  files = {("stage1", "tiny"): [stage1 / "fold_0_cycle_0.npz", stage1 / "fold_1_cycle_0.npz"]}
  for part in (0, 1):
    name = f"tiny_pseudo_part{part}"
    files["stage2", name] = [outdir / "stage2" / name / "predictions" / "max_map" / f"fold_{part}_cycle_0.npz"]
  for key, paths in files.items():  # out of fold: every fold's validation tiles
    valid_ids = np.concatenate([_npz(path)[2] for path in paths])
    valid_masks = np.concatenate([_npz(path)[3] for path in paths])
    want = metrics.kaggle_map(valid_masks, np.stack([truth[i] for i in valid_ids]))
    assert rows[key] == pytest.approx(want)


def test_stage_table_jigsaw_rows_equal_the_rule_effect_script(finished, mini_data_dir, tmp_path):
  """Each stage's '+ jigsaw' rows are scripts/jigsaw_rule_effect.py's cumulative rows (effect.fold_rule_effect:
  the fold's tiles unknown, its model's test masks as further unknown tiles), pooled over the folds by tile
  count; the pseudo-labelled stage's row is stage 2's final row against stage 1's on the same folds."""
  outdir, table = finished
  source = kaggle.DataSource(str(mini_data_dir))
  finals = {}
  for stage, names in (("stage1", {0: "tiny", 1: "tiny"}), ("stage2", {0: "tiny_pseudo_part0",
                                                                        1: "tiny_pseudo_part1"})):
    maps, counts = [], []
    for fold, name in names.items():
      test_ids, test_masks, valid_ids, valid_masks = _npz(outdir / stage / name / "predictions" / "max_map"
                                                          / f"fold_{fold}_cycle_0.npz")
      valid_csv, test_csv = tmp_path / f"{stage}_{fold}_valid.csv", tmp_path / f"{stage}_{fold}_test.csv"
      submission.write_submission(valid_csv, submission.Submission(valid_ids, valid_masks))
      submission.write_submission(test_csv, submission.Submission(test_ids, test_masks))
      effect_table, _ = effect.fold_rule_effect(source, outdir / "mosaics.csv", outdir / stage / name / "folds.csv",
                                                fold, valid_csv, test_predictions=test_csv)
      cumulative = effect_table[effect_table["mode"].isin(["input", "cumulative"])]
      maps.append(cumulative["map"].to_numpy())
      counts.append(cumulative["n_tiles"].iloc[0])
    pooled = sum(m * n for m, n in zip(maps, counts)) / sum(counts)
    rows = table[(table["stage"] == stage) & table["step"].str.startswith("+ jigsaw")]
    assert list(rows["step"]) == [f"+ jigsaw {s}" for s in rules.STEPS]
    np.testing.assert_allclose(rows["OOF mAP"].to_numpy(), pooled[1:], rtol=0, atol=1e-12)
    np.testing.assert_allclose(rows["change"].to_numpy(), np.diff(pooled), rtol=0, atol=1e-12)
    finals[stage] = pooled[-1]
    written = pd.read_csv(outdir / stage / "held_out" / "rules.csv", dtype={"fold": str})
    assert set(written["fold"]) == {"0", "1", "all"}
    everything = written[(written["fold"] == "all") & written["mode"].isin(["input", "cumulative"])]
    np.testing.assert_allclose(everything["map"].to_numpy(), pooled, rtol=0, atol=1e-12)
  total = table[table["step"] == "pseudo-labelled stage (total)"].iloc[0]
  assert total["OOF mAP"] == pytest.approx(finals["stage2"]) and total["tiles"] == 48
  assert total["change"] == pytest.approx(finals["stage2"] - finals["stage1"])
  assert table[table["step"] == "fold ensemble"]["OOF mAP"].isna().all()


def test_pipeline_command_line_resumes_and_rejects_bad_data(finished, mini_data_dir, tmp_path):
  outdir, _ = finished
  before = (outdir / "submission.csv").read_bytes()
  config = tmp_path / "tiny_pipeline.py"
  config.write_text(f"import sys\nsys.path.insert(0, {str(REPO / 'tests')!r})\n"
                    "from test_pipeline import tiny_pipeline_config\n\n\n"
                    f"def get_config():\n  return tiny_pipeline_config({str(mini_data_dir)!r})\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "salt_jax.pipeline", f"--config={config}"]
  run = lambda *extra: subprocess.run(cmd + list(extra), cwd=REPO, env=env, capture_output=True, text=True,
                                      timeout=600)
  done = run(f"--outdir={outdir}")
  assert done.returncode == 0, done.stderr[-3000:]
  assert "[skip] stage2/ensemble" in done.stderr and "[run ]" not in done.stderr
  assert "stage1" in done.stdout and "OOF mAP" in done.stdout
  assert (outdir / "submission.csv").read_bytes() == before
  done = run(f"--outdir={tmp_path / 'new'}", f"--config.data_dir={tmp_path / 'nowhere'}")
  assert done.returncode == 1 and "Traceback" not in done.stderr
  assert f"salt_jax.pipeline: missing folder: {tmp_path / 'nowhere'}" in done.stderr
  assert not list((tmp_path / "new").rglob("*.json")) and not (tmp_path / "new" / "submission.csv").exists()


def test_pipeline_rerun_skips_finished_steps(finished, mini_data_dir, monkeypatch):
  outdir, table = finished

  def forbidden(*args, **kwargs):
    raise AssertionError("a finished step ran again")

  for module, name in ((train, "train_and_evaluate"), (predict, "predict_workdir"), (ensemble, "ensemble")):
    monkeypatch.setattr(module, name, forbidden)
  again = pipeline.run_pipeline(tiny_pipeline_config(mini_data_dir), str(outdir))
  pd.testing.assert_frame_equal(again, table)


def test_pipeline_reruns_only_the_step_whose_marker_is_gone(finished, mini_data_dir, monkeypatch):
  outdir, _ = finished
  (outdir / "done" / "stage2__ensemble.json").unlink()
  calls = []
  real_ensemble = ensemble.ensemble

  def counting(*args, **kwargs):
    calls.append(args[0])
    return real_ensemble(*args, **kwargs)

  loads = []
  real_load = kaggle.load_split

  def recording(*args, **kwargs):
    loads.append((args[1], kwargs.get("cache_dir")))
    return real_load(*args, **kwargs)

  monkeypatch.setattr(train, "train_and_evaluate", lambda *a, **k: pytest.fail("training ran again"))
  monkeypatch.setattr(ensemble, "ensemble", counting)
  monkeypatch.setattr(kaggle, "load_split", recording)
  pipeline.run_pipeline(tiny_pipeline_config(mini_data_dir), str(outdir))
  assert len(calls) == 1 and all("stage2" in w for w in calls[0])
  assert (outdir / "done" / "stage2__ensemble.json").exists()
  # The ensemble step read the train masks and test images through the pipeline's one data source.
  assert {split for split, _ in loads} == {"train", "test"}
  assert {cache for _, cache in loads} == {str(outdir / "cache")}


def _tree_state(root):
  return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("change,step,shown", [
    (lambda c: c.train_overrides.update(cycle_len=3), "stage1/train/tiny/folds_0,1", "cycle_len: 2 -> 3"),
    (lambda c: c.stage2.update(pseudo_prob=0.9), "stage2/train/tiny_pseudo_part0/folds_0",
     "pseudo_prob: 0.5 -> 0.9")])
def test_pipeline_rerun_with_changed_settings_is_refused_and_changes_nothing(finished, mini_data_dir, change,
                                                                             step, shown):
  """A marker records its step's inputs: a re-run whose settings differ (upstream, as the training
  schedule, or only in stage 2, as the pseudo-label probability) stops at the first changed step, names it
  and the keys, and leaves every file as it was; it never returns the old submission as the new one."""
  outdir, _ = finished
  before = _tree_state(outdir)
  config = tiny_pipeline_config(mini_data_dir)
  change(config)
  message = f"pipeline step {step} in .* ran with other inputs .*{shown}"
  with pytest.raises(rundir.WorkdirError, match=message):
    pipeline.run_pipeline(config, str(outdir))
  assert _tree_state(outdir) == before


def test_budget_stage2_fine_tunes_each_fold_on_its_own_held_out_pseudo_labels(mini_data_dir, tmp_path):
  """stage2.labels='fold', init='stage1', halves=False (configs/pipeline_cpu.py's choices): part k fine-tunes
  fold k's stage-1 snapshot on every test tile, labelled by fold k's stage-1 model after the jigsaw rules
  with fold k's labels hidden (held_out/fold_k.csv, equal to the rules applied here), at most pseudo_tiles
  of them, the most confident by held_out/fold_k_confidence.csv."""
  config = tiny_pipeline_config(mini_data_dir)
  config.stage1.models[0]["name"] = config.stage2.models[0]["name"] = "tiny"
  config.stage2.update(labels="fold", init="stage1", halves=False, pseudo_tiles=10, predict_other_half=False)
  config.jigsaw_steps = ["vertical", "empty"]
  config.stage2.overrides = ml_collections.ConfigDict(dict(warmup_epochs=0, cycle_len=1, eval_start=1))
  outdir = tmp_path / "budget"
  table = pipeline.run_pipeline(config, str(outdir))
  source = kaggle.DataSource(str(mini_data_dir))
  for fold in (0, 1):
    test_ids, test_masks, valid_ids, valid_masks = _npz(outdir / "stage1" / "tiny" / "predictions" / "max_map"
                                                        / f"fold_{fold}_cycle_0.npz")
    _, _, want = tasks.held_out(source, outdir / "mosaics.csv", submission.Submission(valid_ids, valid_masks),
                                submission.Submission(test_ids, test_masks), steps=("vertical", "empty"))
    got = _csv_masks(outdir / "stage1" / "held_out" / f"fold_{fold}.csv")
    assert sorted(got) == sorted(test_ids)
    assert all(np.array_equal(got[i], want[i]) for i in test_ids)
    conf = pd.read_csv(outdir / "stage1" / "held_out" / f"fold_{fold}_confidence.csv", dtype={"id": str})
    assert list(conf["id"]) == list(test_ids) and conf["confidence"].between(0, 1).all()
    recorded = json.loads((outdir / "stage2" / f"tiny_pseudo_part{fold}" / f"fold_{fold}" / "config.json")
                          .read_text())
    assert recorded["init_from"] == str(outdir / "stage1" / "tiny" / f"fold_{fold}" / "snapshots"
                                        / "cycle_0_max_map")
    assert recorded["pseudo_csv"] == str(outdir / "stage1" / "held_out" / f"fold_{fold}.csv")
    assert recorded["pseudo_split"] == -1 and recorded["pseudo_tiles"] == 10
    assert recorded["warmup_epochs"] == 0 and recorded["cycle_len"] == 1
    pred = predict.load_prediction(outdir / "stage2" / f"tiny_pseudo_part{fold}" / "predictions" / "max_map"
                                   / f"fold_{fold}_cycle_0.npz")
    assert len(pred["test_ids"]) == 24  # every test tile
  assert table["step"].iloc[-1] == "pseudo-labelled stage (total)"
  # smooth is off: measured on top of the applied chain, not applied to the submission
  for stage in ("stage1", "stage2"):
    rows = table[table["stage"] == stage]
    assert [s for s in rows["step"] if "jigsaw" in s] == ["+ jigsaw vertical", "+ jigsaw empty",
                                                          "(jigsaw smooth: not applied)"]
  assert (outdir / "stage2" / "ensemble-vertical-empty.csv").exists()
  assert not (outdir / "stage2" / "ensemble-vertical-empty-smooth.csv").exists()


def test_pretrain_stage_trains_first_on_the_test_pseudo_labels_alone_then_fine_tunes(mini_data_dir, tmp_path):
  """stage2.init='pretrain': the student's first phase trains from random weights on every test tile, labelled
  by fold 0's own stage-1 model after the jigsaw rules with fold 0's labels hidden, and on nothing else (the
  same phase on data whose training tiles are scrambled learns exactly the same); the second phase starts
  from its last snapshot and trains on the fold's training tiles without pseudo labels. The stage table gives
  the first phase's own row."""
  config = tiny_pipeline_config(mini_data_dir)
  config.stage1.folds = [0]
  config.jigsaw_steps = ["vertical", "empty"]
  config.stage2.update(labels="fold", init="pretrain", halves=False, part_folds=[0], predict_other_half=False,
                       pretrain_overrides=dict(cycle_len=1, eval_start=1))
  outdir = tmp_path / "pretrain"
  table = pipeline.run_pipeline(config, str(outdir))
  pre_dir, fine_dir = outdir / "stage2" / "tiny_pseudo_part0_pretrain", outdir / "stage2" / "tiny_pseudo_part0"
  pre = json.loads((pre_dir / "fold_0" / "config.json").read_text())
  assert pre["pseudo_csv"] == str(outdir / "stage1" / "held_out" / "fold_0.csv")
  assert (pre["pseudo_prob"], pre["pseudo_split"], pre["init_from"], pre["cycle_len"]) == (1.0, -1, "", 1)
  fine = json.loads((fine_dir / "fold_0" / "config.json").read_text())
  assert (fine["pseudo_csv"], fine["cycle_len"]) == ("", 2)
  assert fine["init_from"] == str(pre_dir / "fold_0" / "snapshots" / "cycle_0_max_map")
  history = [json.loads(l) for l in (pre_dir / "fold_0" / "history.jsonl").read_text().splitlines()]
  (row,) = table[table["step"] == "pretrained on test pseudo labels only"].to_dict(orient="records")
  assert (row["stage"], row["model"]) == ("stage2", "tiny_pseudo_part0")
  assert row["OOF mAP"] == pytest.approx(max(r["val_map"] for r in history if "val_map" in r))
  assert table["step"].iloc[-1] == "pseudo-labelled stage (total)"

  # The first phase again, on a copy of the data whose training tiles (all but fold 0's validation) are
  # scrambled: the same losses and validation, so it saw none of them.
  scrambled = tmp_path / "scrambled"
  shutil.copytree(mini_data_dir, scrambled)
  folds = pd.read_csv(outdir / "stage1" / "tiny" / "folds.csv", dtype={"id": str})
  labels = pd.read_csv(scrambled / "train.csv", dtype=str, keep_default_na=False).set_index("id")
  for i in folds.loc[folds["fold"] != 0, "id"]:
    for sub in ("images", "masks"):
      path = scrambled / "train" / sub / f"{i}.png"
      cv2.imwrite(str(path), np.roll(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), 37, axis=1)[::-1])
    labels.loc[i, "rle_mask"] = rle.rle_encode(cv2.imread(str(path), cv2.IMREAD_UNCHANGED) > 0)
  labels.reset_index().to_csv(scrambled / "train.csv", index=False)
  again = ml_collections.ConfigDict(pre)
  again.update(data_dir=str(scrambled), cache_dir="")
  train.train_and_evaluate(again, str(tmp_path / "again"))
  redone = [json.loads(l) for l in (tmp_path / "again" / "fold_0" / "history.jsonl").read_text().splitlines()]
  keys = ("epoch", "loss", "seg_loss", "val_loss", "val_map")
  assert [{k: r.get(k) for k in keys} for r in redone] == [{k: r.get(k) for k in keys} for r in history]


@pytest.mark.parametrize("change,message", [
    (lambda c: c.stage2.update(labels="mine"), "stage2.labels must be one of ensemble, fold, got 'mine'"),
    (lambda c: c.stage2.update(init="stage1", models=[dict(name="other", config="configs/tiny.py")]),
     "stage2 model 'other' has no stage-1 model of that name"),
    (lambda c: c.stage2.update(labels="fold", part_folds=[0, 3]), r"stage2.part_folds \[3\] were not trained"),
    (lambda c: c.stage2.update(part_folds=[0, 1, 2]), "at most 2 part_folds"),
    (lambda c: c.update(jigsaw_steps=["vertical", "glue"]), "unknown rule step"),
    (lambda c: c.stage2.update(init="pretrain"), "stage2.init='pretrain' .* needs labels='fold' and halves=False"),
    (lambda c: c.stage2.update(init="pretrain", labels="fold", halves=False,
                               pretrain_overrides=dict(cycle_len=0)),
     r"stage2.pretrain_overrides \(model 'tiny'\): config.cycle_len"),
    (lambda c: c.stage2.update(init="pretrain", labels="fold", halves=False, pretrain_overrides=dict(cycle=3)),
     r"stage2.pretrain_overrides \(model 'tiny'\): unknown"),
])
def test_bad_stage2_settings_are_refused_before_any_output(mini_data_dir, tmp_path, change, message):
  config = tiny_pipeline_config(mini_data_dir)
  change(config)
  with pytest.raises(ValueError, match=message):
    pipeline.run_pipeline(config, str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def _pipeline_command(argv, monkeypatch, fn):
  """fn(config) on the config of `python -m salt_jax.pipeline <argv>`: its flags parsed as the program parses
  them (ml_collections reads `--config.*` overrides from sys.argv), with the pipeline's defaults (nothing
  runs or is written)."""
  monkeypatch.setattr(sys, "argv", ["salt_jax.pipeline", *argv])
  main = lambda _: fn(pipeline.with_pipeline_defaults(pipeline.FLAGS.config))
  return cli.run(main, pipeline.define_flags, prog="salt_jax.pipeline", argv=argv)


def _model_configs(argv, monkeypatch):
  """(stage-1 training configs, stage-2 ones) of `python -m salt_jax.pipeline <argv>`, built as its main
  builds them."""
  def configs(config):
    stage1, stage2 = pipeline.model_configs(config, pipeline.FLAGS.outdir, pipeline.flag_overrides())
    return [r["config"] for r in stage1], [c for _, c in stage2]
  return _pipeline_command(argv, monkeypatch, configs)


def _readme_example():
  """The pipeline page's train_overrides flags (`--config.train_overrides.cycle_len=2 ...`)."""
  found = re.search(r"`(--config\.train_overrides\.\S+(?: --config\.train_overrides\.\S+)*)`",
                    (REPO / "docs" / "pipeline.md").read_text())
  return found.group(1).split()


@pytest.mark.parametrize("name,extra", [("pipeline_cpu", []),
                                        ("pipeline_gpu", ["--config.train_overrides.eval_every=1"])])
def test_the_documented_train_overrides_flags_win_over_every_models_own_overrides(name, extra, tmp_path,
                                                                              monkeypatch):
  """docs/pipeline.md's `--config.train_overrides.cycle_len=2` (README before; refused before: "unknown config key
  'train_overrides.cycle_len'") sets the cycle_len of every model of both stages, over each model's config
  file and own overrides in the pipeline file (cpu_long's 40-epoch cycle, pipeline_gpu's stage2.overrides)."""
  flags_ = _readme_example()
  assert "--config.train_overrides.cycle_len=2" in flags_
  stage1, stage2 = _model_configs([f"--config={REPO / 'configs' / f'{name}.py'}", f"--outdir={tmp_path / 'out'}",
                                   *flags_, *extra], monkeypatch)
  file_config = configlib.load_config_file(REPO / "configs" / f"{name}.py")
  assert len(stage1) == len(file_config.stage1.models) and len(stage2) == len(file_config.stage2.models)
  assert [c.cycle_len for c in stage1 + stage2] == [2] * len(stage1 + stage2)
  assert [c.seed for c in stage1] == [e["overrides"]["seed"] for e in file_config.stage1.models]  # kept
  assert not (tmp_path / "out").exists()


def test_train_overrides_in_the_file_yield_to_the_models_own():
  """In the config file, a model's own overrides win over train_overrides (the flag is the last word)."""
  config = pipeline.with_pipeline_defaults(configlib.load_config_file(REPO / "configs" / "pipeline_cpu.py"))
  config.stage1.models = [dict(name=n, config="configs/cpu_small.py",
                               overrides=dict(seed=s, cycle_len=16, eval_start=10)) for n, s in (("a", 0), ("b", 1))]
  config.train_overrides.update(cycle_len=12, batch_size=8)
  stage1, _ = pipeline.model_configs(config, "unused")
  assert [(r["config"].cycle_len, r["config"].batch_size) for r in stage1] == [(16, 8), (16, 8)]
  stage1, _ = pipeline.model_configs(config, "unused", given=["cycle_len"])
  assert [(r["config"].cycle_len, r["config"].batch_size) for r in stage1] == [(12, 8), (12, 8)]


def test_pipeline_cpu_trains_what_configs_cpu_long_trains_on_folds_0_to_2():
  """configs/pipeline_cpu.py's stage 1 is one cpu_long model (seed 0) per fold on folds 0-2, stage 2 off; its
  training config is configs/cpu_long.py's, but for the data cache the pipeline keeps in its outdir."""
  config = pipeline.with_pipeline_defaults(configlib.load_config_file(REPO / "configs" / "pipeline_cpu.py"))
  (run,), stage2 = pipeline.model_configs(config, "outdir")
  assert (run["name"], run["folds"], stage2) == ("long", [0, 1, 2], [])
  long = configlib.load_config_file(REPO / "configs" / "cpu_long.py")
  got = run["config"].to_dict()
  differ = {k for k in set(got) | set(long) if got.get(k) != long.get(k)}
  assert differ == {"cache_dir"} and got["cache_dir"] == str(pathlib.Path("outdir") / "cache")
  assert tuple(config.jigsaw_steps) == ("vertical", "empty")


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("pipeline_*.py")), ids=lambda p: p.stem)
def test_a_flag_sets_the_folds_of_every_pipeline_config(path, tmp_path, monkeypatch):
  """`--config.stage1.folds='(1,)'` trains fold 1 alone (the fold lists are tuples, which flags can set:
  ml_collections refuses to set a list field by flag), and the stage-2 choices still fit. Nothing is written."""
  def folds(config):
    stage1, stage2_base = pipeline.model_configs(config, pipeline.FLAGS.outdir, pipeline.flag_overrides())
    pipeline.check_stage2(config, stage1, stage2_base)
    return [r["folds"] for r in stage1], config.stage2.part_folds
  argv = [f"--config={path}", f"--outdir={tmp_path / 'out'}", "--config.stage1.folds=(1,)",
          "--config.stage2.part_folds=(1,)"]
  stage1_folds, part_folds = _pipeline_command(argv, monkeypatch, folds)
  assert stage1_folds == [[1]] * len(configlib.load_config_file(path).stage1.models) and part_folds == (1,)
  assert not (tmp_path / "out").exists()


def test_stage2_part_folds_outside_stage1_are_refused_only_when_stage2_runs():
  config = pipeline.with_pipeline_defaults(configlib.load_config_file(REPO / "configs" / "pipeline_cpu.py"))
  config.stage1.folds = (1,)
  stage1, stage2_base = pipeline.model_configs(config, "unused")
  pipeline.check_stage2(config, stage1, stage2_base)  # stage 2 off: nothing to serve
  config.stage2.models = [dict(name="long", config="configs/cpu_long.py", overrides=dict(seed=2))]
  stage1, stage2_base = pipeline.model_configs(config, "unused")
  with pytest.raises(configlib.ConfigError, match=r"stage2.part_folds \[0, 2\] were not trained in stage 1"):
    pipeline.check_stage2(config, stage1, stage2_base)


@pytest.mark.parametrize("flag,message", [
    ("--config.train_overrides.cycle_lenn=2", "FATAL Flags parsing error: --config.train_overrides.cycle_lenn=2: "
     "unknown config key 'train_overrides.cycle_lenn'; closest known keys: train_overrides.cycle_len"),
    ("--config.train_overrides.cycle_len=0", "salt_jax.pipeline: pipeline model 'long' (configs/cpu_long.py): "
     "config.cycle_len must be"),
    ("--config.train_overrides.folds=0,1", "salt_jax.pipeline: pipeline train_overrides.folds: the pipeline sets "
     "it from stage1.folds and stage2.part_folds"),
])
def test_bad_train_overrides_flags_are_refused_in_one_line(flag, message, tmp_path, capsys, monkeypatch):
  with pytest.raises(SystemExit) as exit_:
    _model_configs([f"--config={REPO / 'configs' / 'pipeline_cpu.py'}", f"--outdir={tmp_path / 'out'}", flag],
                   monkeypatch)
  code = exit_.value.code  # a flag absl cannot parse exits with its message (printed by the interpreter)
  err = [code] if isinstance(code, str) else capsys.readouterr().err.strip().splitlines()
  assert code not in (0, None) and len(err) == 1 and err[0].startswith(message), err
  assert not (tmp_path / "out").exists()

"""`python -m salt_jax.accelerator_check`: on a CPU-only host it refuses in one line and writes nothing; its
dry run runs every step with tiny stand-ins and writes one report with every figure beside its command."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import pytest

from salt_jax import cli, repo
from salt_jax.tools import accelerator_check
from salt_jax.workdir import rundir

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(argv):
  return cli.run(accelerator_check.main, accelerator_check.define_flags, prog="salt_jax.accelerator_check",
                 argv=argv)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the refusal is for hosts without a GPU or TPU")
def test_on_a_cpu_the_real_check_refuses_in_one_line_and_writes_nothing(tmp_path, capsys):
  out = tmp_path / "acc"
  with pytest.raises(SystemExit) as info:
    _run([f"--out={out}"])
  assert info.value.code == 1
  assert capsys.readouterr().err.splitlines() == [
      f"salt_jax.accelerator_check: JAX sees no GPU or TPU here ({jax.device_count()} cpu device(s)); run it "
      "on an accelerator host (jax[cuda13] or jax[tpu]), or pass --dry_run to rehearse with tiny stand-in "
      "models"]
  assert not out.exists()


def test_an_out_folder_in_use_is_refused_before_anything_runs(tmp_path, capsys):
  (tmp_path / "old_report.md").write_text("x")
  with pytest.raises(SystemExit) as info:
    _run([f"--out={tmp_path}", "--dry_run"])
  assert info.value.code == 1
  assert capsys.readouterr().err.strip() == (f"salt_jax.accelerator_check: --out {tmp_path} is not a new or "
                                             "empty folder (the gpu_quick run would resume there)")
  assert [p.name for p in tmp_path.iterdir()] == ["old_report.md"]


def test_the_plan_holds_every_pending_gpu_row_and_the_bench_finds_the_configs():
  steps = accelerator_check.plan(accelerator_check.REAL, "../shared/tgs", pathlib.Path("out"))
  names = [(s.section, s.name) for s in steps]
  assert names[:5] == [("tests", "pytest -m accelerator"), ("train step", "model_34 float32"),
                       ("train step", "model_34 bfloat16"), ("train step", "model_50A bfloat16"),
                       ("train step", "model_50A float32")]
  assert names[5:] == [("epoch loop", "model_34 bfloat16, whole epoch per call (configs/gpu_quick.py)"),
                       ("fold-parallel", "model_34 bfloat16, 10 folds, vmap"),
                       ("gpu_quick", "configs/gpu_quick.py, first 3 epoch(s)"),
                       ("fold-parallel", "model_34 bfloat16, 10 folds, loop"),
                       ("fold-parallel", "model_50A bfloat16, 10 folds, vmap"),
                       ("epoch loop", "model_34 bfloat16, 1 step(s) per call (configs/cpu_small.py)")]
  assert all(c.startswith("--folds=10") for s in steps if s.section == "fold-parallel"
             for c in s.command if c.startswith("--folds"))
  assert (repo.ROOT / "configs" / "gpu_quick.py").is_file()  # the bench's epoch runs read configs/ there


def test_the_quick_runs_rows_are_its_first_epochs_even_when_it_ran_past_them(tmp_path):
  """The gpu_quick run is stopped at the first poll after its epochs; an idle machine may have recorded more
  by then, and the report keeps only the epochs it names."""
  history = rundir.RunDir(tmp_path).history_jsonl(0)
  history.parent.mkdir(parents=True)
  history.write_text("".join(json.dumps(dict(epoch=e, loss=1.0 - e / 10)) + "\n" for e in range(3)))
  assert accelerator_check.quick_rows(tmp_path, 1) == [dict(epoch=0, loss=1.0)]
  assert [r["epoch"] for r in accelerator_check.quick_rows(tmp_path, 3)] == [0, 1, 2]
  assert accelerator_check.quick_rows(tmp_path / "none", 3) == []


@pytest.mark.slow
def test_the_dry_run_runs_every_step_and_reports_each_figure_with_its_command(tmp_path, mini_data_dir):
  out = tmp_path / "acc"
  done = subprocess.run([sys.executable, "-m", "salt_jax.accelerator_check", f"--out={out}", "--dry_run",
                         f"--data_dir={mini_data_dir}", "--budget_s=2400"], cwd=REPO, capture_output=True,
                        text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=2700)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.strip().splitlines()[-1] == str(out / "report.md")
  result = json.loads((out / "report.json").read_text())
  steps = result["steps"]
  assert result["dry_run"] is True
  assert [s["status"] for s in steps if not s["status"].startswith("ok")] == [], [
      (s["name"], s["status"], s["tail"]) for s in steps if not s["status"].startswith("ok")]
  assert [s["name"] for s in steps if "(the same command as " in s["status"]] == [
      "model_50A bfloat16", "model_50A float32", "model_50A bfloat16, 2 folds, vmap"]  # run once each
  by = {}
  for s in steps:
    by.setdefault(s["section"], []).append(s)
  assert [r["kind"] for r in by["devices"][0]["rows"]] == [d.device_kind for d in jax.devices()]
  assert "tests collected" in by["tests"][0]["tail"]  # a dry run collects them, the accelerator runs them

  def figure(step, name):
    (row,) = [r for r in step["rows"] if r["figure"] == name]
    return row

  for s in by["train step"]:
    row = figure(s, "train_images_per_s")
    assert row["value"] > 0 and row["gflop_per_image"] > 0 and row["model"] == "model_tiny", s["name"]
    assert row["dtype"] == s["name"].split()[1]
  (epoch,) = by["epoch loop"]
  assert figure(epoch, "epoch_images_per_s")["value"] > 0 and figure(epoch, "loop_efficiency")["value"] > 0
  fold_maps = [figure(s, "train_images_per_s")["fold_map"] for s in by["fold-parallel"]]
  assert fold_maps == ["vmap", "loop", "vmap"]
  (quick,) = by["gpu_quick"]
  assert [r["epoch"] for r in quick["rows"]] == [0] and quick["rows"][0]["images_per_s"] > 0
  report = (out / "report.md").read_text()
  assert report.count("| ") > 20 and "**Dry run**" in report
  for s in steps[1:]:
    assert accelerator_check.shown(s["command"]) in report, s["name"]
  assert sorted(p.name for p in out.iterdir()) == ["cache", "gpu_quick", "jax_cache", "logs", "report.json",
                                                   "report.md"]

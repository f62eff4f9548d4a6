"""The benchmark CLI: smoke runs on tiny settings (no timing assertions), FLOP counts, history parsing."""
import functools
import json
import pathlib
import subprocess
import types

import jax
import jax.numpy as jnp
import pytest

from salt_jax import cli, configlib, fileio, models
from salt_jax.tools import bench
from salt_jax.training import steps
from salt_jax.workdir import rundir
import optim


def _bench(argv):
  """`python -m salt_jax.bench` with these arguments, run in this process; its rows."""
  return cli.run(bench.main, bench.define_flags, prog="salt_jax.bench", argv=argv)


def test_bench_prints_one_json_line_per_figure(capsys):
  rows = _bench(["--model=model_tiny", "--batch=2", "--steps=1", "--warmup=0", "--lovasz_batch=2"])
  lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
  assert [r["figure"] for r in lines] == ["train_images_per_s", "infer_tta_images_per_s", "lovasz_fwd_bwd_ms",
                                          "metric_sweep_s"]
  assert lines == rows
  assert all(r["value"] > 0 for r in rows)
  train = rows[0]
  assert train["compile_s"] > 0 and train["tflops_per_s"] > 0 and train["folds"] == 1
  # The lowered program counts every op; the compiled executable's count can only have lost some
  # (library calls such as cuDNN convolutions count 0 on GPU).
  assert train["gflop_per_image"] >= train["compiled_gflop_per_image"] > 0
  assert rows[1]["gflop_per_image"] > 0
  assert "ratio_vs_torch" not in train


def test_bench_refuses_bad_options():
  for argv in (["--size=256"], ["--folds=0"], ["--only=epoch"], ["--only=train,epochs"],
               ["--only=epoch", "--data_dir=x", "--epoch_cycle=1"]):
    with pytest.raises(SystemExit):
      _bench(argv)


def _lowered_gflop_per_image(name, batch=2):
  """The lowered (pre-optimisation) FLOP count of a Lovasz train step per image, from shapes only."""
  model = models.get_model(name)
  tx = optim.constant_sgd(0.01)
  state = jax.eval_shape(lambda: steps.create_train_state(model, tx, jax.random.key(0), image_size=128))
  data = {k: jax.ShapeDtypeStruct((batch, 101, 101), jnp.uint8) for k in ("image", "mask")}
  weights = configlib.loss_weights(configlib.section(configlib.base_config(), "loss"))  # the faithful ones (SPEC 4)
  fn = jax.jit(functools.partial(steps.train_step, seg_loss="lovasz", loss_weights=weights, canvas=128))
  return bench.flops_of(fn.lower(state, data, jax.random.key(1))) / batch / 1e9


def test_lowered_flops_of_model_34_training():
  """80.05 GFLOP per 128x128 image (forward, backward, SGD, Lovasz): 79.44 before (79.4 on an H100), plus
  ~0.6 for the Lovasz ranks' run ends (a cumulative minimum, which the pre-optimisation count prices as a
  reduce window over the whole row)."""
  assert _lowered_gflop_per_image("model_34") == pytest.approx(80.05, abs=0.2)


@pytest.mark.slow
def test_two_fold_step(capsys):
  """The training program's fold step (fold_map vmap here; loop and vmap are compared in
  tests/test_fold_parallel.py)."""
  fold_map = "vmap"
  rows = _bench(["--model=model_tiny", "--batch=2", "--steps=1", "--warmup=0", "--only=train",
                     "--folds=2", f"--fold_map={fold_map}"])
  assert [json.loads(l) for l in capsys.readouterr().out.splitlines()] == rows
  (row,) = rows
  assert row["figure"] == "train_images_per_s" and row["folds"] == 2 and row["value"] > 0
  assert row["fold_map"] == fold_map
  # Two folds do twice the work of one: the same FLOPs per image.
  assert row["gflop_per_image"] == pytest.approx(_lowered_gflop_per_image("model_tiny"), rel=1e-3)


def _record(epoch, seg_loss, ips, seconds, epoch_seconds, **extra):
  return dict(epoch=epoch, cycle=None if seg_loss == "bce_dice" else 0, seg_loss=seg_loss, loss=1.0,
              images_per_s=ips, seconds=seconds, epoch_seconds=epoch_seconds, **extra)


STARTUP = {"data": 1.0, "init": 2.0, "restore": 0.0, "compile": 3.0, "first_step": 7.5}


def _history(startup=STARTUP):
  """2 BCE+Dice + 3 Lovasz epochs of 64 images; the first epoch of each loss is slow (compilation)."""
  return [_record(0, "bce_dice", 8.0, 8.0, 20.0, startup=startup),
          _record(1, "bce_dice", 32.0, 2.0, 4.0),
          _record(2, "lovasz", 4.0, 16.0, 30.0),
          _record(3, "lovasz", 16.0, 4.0, 5.0),
          _record(4, "lovasz", 32.0, 2.0, 3.0)]


def test_history_figures_leave_out_the_first_epoch_of_each_loss():
  f = bench.history_figures({0: _history()})
  assert f["bce_dice"] == {"epochs": 1, "images_per_s": 32.0, "whole_epoch_images_per_s": 16.0}
  # 128 images in 4 + 2 training seconds and 5 + 3 wall seconds.
  assert f["lovasz"]["epochs"] == 2
  assert f["lovasz"]["images_per_s"] == pytest.approx(128 / 6)
  assert f["lovasz"]["whole_epoch_images_per_s"] == pytest.approx(128 / 8)
  assert f["startup"] == STARTUP


def test_history_figures_sum_the_folds_of_a_fold_parallel_run():
  slow = dict(STARTUP, first_step=9.0)
  f = bench.history_figures({0: _history(), 1: _history(startup=slow)})
  # The folds train in the same seconds, each record counting its own fold's images: they add up.
  assert f["lovasz"]["images_per_s"] == pytest.approx(256 / 6)
  assert f["lovasz"]["whole_epoch_images_per_s"] == pytest.approx(256 / 8)
  assert f["startup"]["first_step"] == 9.0


def _fake_train(histories):
  """A stand-in for subprocess.run of salt_jax.train: writes the given fold histories into --workdir."""
  calls = []

  def run(cmd, **kwargs):
    calls.append(cmd)
    workdir = next(c.split("=", 1)[1] for c in cmd if c.startswith("--workdir="))
    for k, records in histories.items():
      fileio.write_jsonl(rundir.RunDir(workdir).history_jsonl(k), records)
    return subprocess.CompletedProcess(cmd, 0, "", "")
  return run, calls


def test_epoch_figures_from_the_training_program(monkeypatch, capsys, tmp_path):
  run, calls = _fake_train({0: _history(), 1: _history()})
  monkeypatch.setattr(bench.subprocess, "run", run)
  rows = _bench(["--model=model_tiny", "--batch=8", "--only=epoch", f"--data_dir={tmp_path}", "--folds=2",
                     "--train_subset=64", f"--epoch_workdir={tmp_path / 'w'}"])
  (cmd,) = calls
  assert cmd[1:3] == ["-m", "salt_jax.train"]
  for flag in ("--config.model=model_tiny", "--config.batch_size=8", "--config.folds=0,1",
               "--config.fold_map=auto",
               "--config.train_subset=64", "--config.warmup_epochs=2", "--config.cycle_len=3",
               "--config.eval_start=3", "--config.eval_every=3", f"--config.data_dir={tmp_path}",
               "--config.compilation_cache_dir="):  # a cold start: every compilation is counted
    assert flag in cmd
  out = capsys.readouterr()
  assert [json.loads(l) for l in out.out.splitlines()] == rows
  assert [r["figure"] for r in rows] == ["epoch_images_per_s", "startup_s"]  # no compiled step: no ratio
  assert rows[0]["value"] == pytest.approx(256 / 6, abs=1e-4) and rows[0]["folds"] == 2
  assert rows[0]["whole_epoch_images_per_s"] == 32.0 and rows[0]["bce_dice_images_per_s"] == 64.0
  assert rows[1]["value"] == 7.5 and rows[1]["startup"] == STARTUP and rows[1]["process_s"] >= 0
  assert out.err == ""


def test_fold_parallel_speedup_compares_together_with_each_fold_alone(monkeypatch, capsys, tmp_path):
  run, calls = _fake_train({0: _history(), 1: _history()})
  monkeypatch.setattr(bench.subprocess, "run", run)
  clock = iter([0.0, 10.0, 10.0, 16.0, 16.0, 23.0])  # together 10 s, then fold 0 alone 6 s, fold 1 alone 7 s
  monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
  rows = _bench(["--model=model_tiny", "--batch=8", "--only=epoch", f"--data_dir={tmp_path}", "--folds=2",
                     "--sequential"])
  assert [c[c.index("-m") + 1:][0] for c in calls] == ["salt_jax.train"] * 3
  assert "--config.folds=0,1" in calls[0] and "--config.fold=0" in calls[1] and "--config.fold=1" in calls[2]
  (row,) = [r for r in rows if r["figure"] == "fold_parallel_speedup"]
  assert row["value"] == pytest.approx(1.3) and row["together_process_s"] == 10.0
  assert row["sequential_process_s"] == [6.0, 7.0]
  with pytest.raises(SystemExit):
    _bench(["--only=epoch", f"--data_dir={tmp_path}", "--folds=1", "--sequential"])


def test_loop_efficiency_is_epoch_over_compiled_step(capsys):
  figures = bench.history_figures({0: _history()})
  figures["process_s"] = 12.0
  args = types.SimpleNamespace(folds=1, train_subset=0, epoch_warmup=2, epoch_cycle=3,
                                  compilation_cache_dir="")
  rows = bench.epoch_report(figures, 128 / 3, {"model": "model_tiny"}, args)
  assert [r["figure"] for r in rows] == ["epoch_images_per_s", "loop_efficiency", "startup_s"]
  assert rows[1]["value"] == 0.5 and rows[1]["whole_epoch_efficiency"] == 0.375


def test_a_refused_training_run_is_refused_in_one_line(monkeypatch, tmp_path, capsys):
  fail = lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "salt_jax.train: unknown config key 'x'")
  monkeypatch.setattr(bench.subprocess, "run", fail)
  with pytest.raises(SystemExit) as exit_:
    _bench(["--only=epoch", f"--data_dir={tmp_path}", "--folds=2"])
  assert exit_.value.code == 1
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      "salt_jax.bench: the training run for the epoch figures was refused: salt_jax.train: unknown config key 'x'")


def test_a_training_run_that_crashed_is_a_bug_with_its_tail(monkeypatch, tmp_path, capsys):
  crash = lambda cmd, **kw: subprocess.CompletedProcess(cmd, 70, "", "Traceback ...\nKeyError: 'x'")
  monkeypatch.setattr(bench.subprocess, "run", crash)
  with pytest.raises(SystemExit) as exit_:
    _bench(["--only=epoch", f"--data_dir={tmp_path}", "--folds=2"])
  err = capsys.readouterr().err
  assert exit_.value.code == cli.BUG_STATUS and "failed (exit 70):\nTraceback ...\nKeyError: 'x'" in err


@pytest.mark.slow
def test_history_of_a_real_training_run(tiny_run):
  """The fields the epoch figures read are the ones salt_jax.train writes (tiny_run: 1 BCE+Dice epoch and
  one 2-epoch Lovasz cycle of model_tiny on real tiles, trained once for several test files). A real
  `--data_dir` bench run starts a cold training process (~100 s on 2 busy cores), so it is not run here."""
  config, workdir, _ = tiny_run
  f = bench.history_figures(bench.read_histories(workdir, [0]))
  assert f["lovasz"]["epochs"] == 1 and f["lovasz"]["images_per_s"] > 0
  assert 0 < f["lovasz"]["whole_epoch_images_per_s"] <= f["lovasz"]["images_per_s"]
  assert f["bce_dice"] == {"epochs": 0, "images_per_s": None, "whole_epoch_images_per_s": None}
  assert set(f["startup"]) >= {"data", "init", "restore", "compile", "first_step"}


REFERENCE = '''MODELS = {"model_34": object, "model_tiny_s2": object}
'''


def test_vs_torch_runs_the_reference_on_the_same_network_and_size(monkeypatch, capsys, tmp_path):
  """--vs-torch hands --model, the batch and --input_size to the reference and divides by its figure."""
  reference = tmp_path / "torch_reference.py"
  reference.write_text(REFERENCE)
  assert bench.torch_models(reference) == ("model_34", "model_tiny_s2")
  commands = []

  def run(cmd, **kwargs):
    commands.append(cmd)
    return subprocess.CompletedProcess(cmd, 0, stdout="torch_train images_per_s=40.00 ms_per_step=400.0\n")
  monkeypatch.setattr(bench.subprocess, "run", run)
  monkeypatch.setattr(bench, "bench_train", lambda *a, **k: (50.0, 1.0, None, None, 0.32))
  (row,) = _bench(["--model=model_tiny_s2", "--input_size=104", "--batch=16", "--only=train", "--vs-torch",
                   f"--torch_reference={reference}", "--cpu_ynn_fusion=reduce"])
  (cmd,) = commands
  args = dict(zip(cmd[2::2], cmd[3::2]))
  assert cmd[1] == str(reference)
  assert args == {"--what": "train", "--batch": "16", "--size": "104", "--steps": "5", "--warmup": "1",
                  "--device": "cpu", "--model": "model_tiny_s2"}
  assert row["torch"] == 40.0 and row["ratio_vs_torch"] == 1.25 and row["cpu_ynn_fusion"] == "reduce"


def test_vs_torch_refuses_a_model_the_reference_does_not_build(monkeypatch, capsys, tmp_path):
  reference = tmp_path / "torch_reference.py"
  reference.write_text(REFERENCE)
  monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: pytest.fail("the reference must not run"))
  with pytest.raises(SystemExit) as exit_:
    _bench(["--model=model_tiny", "--only=train", "--vs-torch", f"--torch_reference={reference}"])
  assert exit_.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["salt_jax.bench: --vs-torch: the PyTorch reference does not build model_tiny (it builds "
                 "model_34, model_tiny_s2); leave out --vs-torch or use --only=lovasz,sweep"]


REPO = pathlib.Path(__file__).resolve().parents[1]


def _defaults(argv=()):
  """The bench's flags after parsing `argv` (its defaults otherwise), as main sees them."""
  return cli.run(lambda _: types.SimpleNamespace(**bench.FLAGS.flag_values_dict()), bench.define_flags,
                 prog="salt_jax.bench", argv=list(argv))


def test_default_paths_are_files_of_this_checkout():
  """From a fresh clone the defaults name the repository's configs/cpu_small.py and the reference beside
  the repository (../shared/bench/torch_reference.py), whatever the working directory."""
  a = _defaults()
  assert pathlib.Path(a.epoch_config) == REPO / "configs" / "cpu_small.py"
  configlib.validate(configlib.load_config_file(a.epoch_config))  # a training config that can run
  assert pathlib.Path(a.torch_reference) == REPO.parent / "shared" / "bench" / "torch_reference.py"
  if not pathlib.Path(a.torch_reference).is_file():
    pytest.skip(f"{a.torch_reference} not found (the shared folder beside the repository)")
  assert "model_34" in bench.torch_models(pathlib.Path(a.torch_reference))
  a = _defaults(["--vs-torch", "--only=train,lovasz"])  # refused before with "... not found"
  assert bench.figures_to_run(a) == {"train", "lovasz"}


def test_the_default_epoch_run_starts_from_any_working_directory(tmp_path, monkeypatch):
  """The real training program, started as the bench starts it (its default --epoch_config, its working
  directory) from another directory, gets as far as reading the data: a missing --data_dir is its first
  complaint (before, the config file was not found)."""
  monkeypatch.chdir(tmp_path)
  absent = tmp_path / "no_data"
  a = _defaults([f"--data_dir={absent.name}", "--only=epoch", f"--epoch_workdir={tmp_path / 'w'}"])
  with pytest.raises(RuntimeError, match="the training run for the epoch figures failed") as failed:
    bench.run_training(a)
  assert str(failed.value).splitlines()[-1] == f"salt_jax.train: missing folder: {absent}"
  assert not (tmp_path / "w").exists()


@pytest.mark.torch
def test_vs_torch_runs_the_default_reference(capsys):
  """--vs-torch with its default --torch_reference: the reference really runs (a small Lovasz figure)."""
  pytest.importorskip("torch")
  (row,) = _bench(["--only=lovasz", "--vs-torch", "--lovasz_batch=2", "--lovasz_size=16", "--steps=1",
                   "--warmup=0"])
  assert row["torch"] > 0 and row["ratio_vs_torch"] > 0

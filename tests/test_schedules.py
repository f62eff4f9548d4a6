"""Epoch schedule and optimiser (SPEC 5)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from salt_jax import schedules

FAITHFUL = dict(lr=0.01, eta_min=0.001, warmup_epochs=10, cycle_len=50)
# SPEC 5 values for t = e + 1 within a cycle, given to 4 significant digits.
SPEC_LR = {1: 0.009991, 2: 0.009965, 10: 0.009141, 20: 0.006891, 25: 0.0055, 30: 0.004109, 35: 0.002855,
           40: 0.001859, 45: 0.001220, 49: 0.001009, 50: 0.001}


def test_lr_matches_spec_values():
  for cycle in range(7):
    for t, expected in SPEC_LR.items():
      epoch = 10 + cycle * 50 + t - 1
      assert schedules.lr_at_epoch(epoch, **FAITHFUL) == pytest.approx(expected, abs=5e-7), (cycle, t)
  assert schedules.lr_at_epoch(10 + 49, **FAITHFUL) == pytest.approx(0.001, abs=1e-12)


def test_lr_warmup_then_restart():
  lrs = [schedules.lr_at_epoch(e, **FAITHFUL) for e in range(schedules.total_epochs(10, 7, 50))]
  assert len(lrs) == 360 and isinstance(lrs[0], float)
  assert lrs[:10] == [0.01] * 10
  assert lrs[10] < 0.01 and lrs[59] == pytest.approx(0.001)
  assert lrs[60] == pytest.approx(lrs[10]) and lrs[60] > lrs[59]
  assert np.all(np.diff(lrs[10:60]) < 0)
  np.testing.assert_allclose(lrs[10:60], lrs[310:360])


def test_cycle_bookkeeping():
  kw = dict(warmup_epochs=10, cycle_len=50)
  assert [schedules.cycle_of_epoch(e, **kw) for e in (0, 9, 10, 59, 60, 359)] == [None, None, 0, 0, 1, 6]
  assert [schedules.epoch_in_cycle(e, **kw) for e in (9, 10, 59, 60, 359)] == [None, 0, 49, 0, 49]
  assert schedules.total_epochs(10, 7, 50) == 360
  assert schedules.cycle_of_epoch(0, 0, 3) == 0


def test_eval_epochs_faithful():
  kw = dict(warmup_epochs=10, cycle_len=50)
  evals = [e for e in range(360) if schedules.is_eval_epoch(e, **kw)]
  assert len(evals) == 49
  for cycle in range(7):
    within = [schedules.epoch_in_cycle(e, **kw) + 1 for e in evals
              if schedules.cycle_of_epoch(e, **kw) == cycle]
    assert within == [20, 25, 30, 35, 40, 45, 50]
  assert not any(schedules.is_eval_epoch(e, **kw) for e in range(10))


def test_eval_epochs_short_cycles():
  kw = dict(warmup_epochs=2, cycle_len=6, eval_start=2, eval_every=2)
  assert [e for e in range(14) if schedules.is_eval_epoch(e, **kw)] == [3, 5, 7, 9, 11, 13]
  kw = dict(warmup_epochs=1, cycle_len=2, eval_start=1, eval_every=1)
  assert [e for e in range(5) if schedules.is_eval_epoch(e, **kw)] == [1, 2, 3, 4]


def _params():
  rng = np.random.default_rng(0)
  return {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}


def test_optimizer_matches_pytorch_sgd_by_hand():
  lr, m, wd = 0.01, 0.9, 2e-4
  tx = schedules.make_optimizer(lr=lr, momentum=m, weight_decay=wd)
  params = _params()
  state = tx.init(params)
  rng = np.random.default_rng(1)
  grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
           for _ in range(3)]
  w = jax.tree.map(lambda p: np.asarray(p, np.float64), params)
  buf = None
  for g in grads:
    d = jax.tree.map(lambda gi, wi: np.asarray(gi, np.float64) + wd * wi, g, w)
    buf = d if buf is None else jax.tree.map(lambda bi, di: m * bi + di, buf, d)  # first step: buf = g + wd*w
    w = jax.tree.map(lambda wi, bi: wi - lr * bi, w, buf)
    updates, state = tx.update(g, state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    jax.tree.map(lambda p, e: np.testing.assert_allclose(np.asarray(p), e, rtol=1e-6, atol=1e-7), params, w)


@pytest.mark.torch
def test_optimizer_matches_torch_sgd():
  torch = pytest.importorskip("torch")
  params = _params()
  tw = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in params.items()}
  opt = torch.optim.SGD(list(tw.values()), lr=0.01, momentum=0.9, weight_decay=2e-4)
  tx = schedules.make_optimizer(lr=0.01)
  state = tx.init(params)
  rng = np.random.default_rng(2)
  for step in range(4):
    lr = 0.01 if step < 2 else 0.004
    for group in opt.param_groups:
      group["lr"] = lr
    state = schedules.set_learning_rate(state, lr)
    g = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
    for k in tw:
      tw[k].grad = torch.from_numpy(g[k])
    opt.step()
    updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
  for k in params:
    np.testing.assert_allclose(np.asarray(params[k]), tw[k].detach().numpy(), rtol=1e-6, atol=1e-7)


def test_set_learning_rate_changes_step_without_retracing():
  traces = []
  tx = schedules.make_optimizer(lr=0.01)

  @jax.jit
  def step(params, state, grads):
    traces.append(1)
    updates, state = tx.update(grads, state, params)
    return jax.tree.map(lambda p, u: p + u, params, updates), state

  params = _params()
  grads = jax.tree.map(jnp.ones_like, params)
  state0 = tx.init(params)
  assert float(state0.hyperparams["learning_rate"]) == pytest.approx(0.01)
  moved = {}
  for lr in (0.01, 0.005, 0.001, 0.0):
    state = schedules.set_learning_rate(state0, lr)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(lr)
    new, _ = step(params, state, grads)
    moved[lr] = float(params["b"][0] - new["b"][0])
  assert len(traces) == 1
  for lr, delta in moved.items():  # first step: delta = lr * (g + wd*w), up to float32 cancellation
    assert delta == pytest.approx(lr * (1.0 + 2e-4 * float(params["b"][0])), rel=1e-4, abs=1e-7)
  assert float(state0.hyperparams["learning_rate"]) == pytest.approx(0.01)  # the input state is untouched

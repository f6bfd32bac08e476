"""The console router's sorting, without Ray: the project's marked lines reach the console, progress states become
bars, everything else goes to the log file only (and to Ray's own printer as well with --verbose)."""

from __future__ import annotations

import json

import pytest

from macdiff_ray import console


@pytest.fixture
def routed(tmp_path, monkeypatch):
    state = dict(console._state)
    printed: list[dict] = []
    shown: list[str] = []
    monkeypatch.setattr(console, "write", shown.append)

    def setup(verbose: bool):
        console._state.update(configured=True, verbose=verbose, log_path=str(tmp_path / "ray.log"), file=None,
                              bars={}, ray_printer=printed.append)
        return printed, shown

    yield setup
    console.close()
    console._state.clear()
    console._state.update(state)


def _batch(*lines):
    return {"pid": 123, "actor_name": "SplitCoordinator", "lines": list(lines), "is_err": False}


@pytest.mark.parametrize("verbose", [False, True])
def test_router_sorts_worker_lines(routed, tmp_path, verbose):
    printed, shown = routed(verbose)
    plan = "Execution plan of Dataset train_0: InputDataBuffer[Input] -> TaskPoolMapOperator[ReadParquet]"
    state = {"id": "b1", "desc": "epoch 1/2", "total": 3, "unit": "step", "n": 2, "postfix": {"loss": 0.5},
             "done": False}
    console._route(_batch(console.MARK + "epoch 1/2 | loss 0.5", plan, console.PROGRESS + json.dumps(state)))
    assert shown == ["epoch 1/2 | loss 0.5"]
    assert list(console._state["bars"]) == ["b1"] and console._state["bars"]["b1"].n == 2
    console._route(_batch(console.PROGRESS + json.dumps(dict(state, n=3, done=True))))
    assert console._state["bars"] == {}
    console._route(_batch(console.PROGRESS + json.dumps(dict(state, n=3))))  # a late state of a closed bar
    assert console._state["bars"] == {}
    console.close()
    log = (tmp_path / "ray.log").read_text()
    assert "(SplitCoordinator pid=123) " + plan in log and "epoch 1/2 | loss" not in log
    if verbose:
        assert [b["lines"] for b in printed] == [[plan]]  # Ray's own printer gets exactly the internal lines
    else:
        assert printed == []


def test_step_bar_in_a_plain_process_is_a_local_bar():
    bar = console.StepBar(4, "epoch 1/1")
    assert not bar._remote and bar._bar is not None
    for _ in range(4):
        bar.update(1, loss=0.25)
    assert bar._bar.n == 4 and bar.postfix == {"loss": "0.25"}
    bar.close()
    assert not bar.enabled
    console.StepBar(4, "rank 1", enabled=False).update(1)  # other ranks: a no-op

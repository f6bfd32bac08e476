"""Preemption notices (Ray Train V2's ``ray.train.get_preemption_info()``): the order of operations in
``train.pretrain.train_func``.

A spot node that is about to be reclaimed is announced to every worker of the run. ``train_func`` asks once per
epoch, on every rank (the call is a barrier: every rank must make it the same number of times), after the epoch's
metrics and before deciding on a checkpoint; with a notice it writes a checkpoint at the end of that epoch whatever
``checkpoint_every`` says, so the restart that follows the reclaim loses nothing. No real notice can be produced
without a cloud provider, and a Ray Train run cannot be told to fake one, so these tests run ``train_func`` in
this process with Ray Train's worker calls replaced by recording fakes (the same calls, the same arguments), on a
small synthetic dataset held in memory.
"""

from __future__ import annotations

import torch

from macdiff_ray.config import to_dict
from macdiff_ray.train import checkpoint as ckpt_lib
from macdiff_ray.train.config import PretrainConfig

EPOCHS = 3


class _Context:
    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def get_world_rank(self) -> int:
        return self.rank

    def get_world_size(self) -> int:
        return self.world


def _run(monkeypatch, data_dir, out, *, notice_at: set, rank: int = 0, world: int = 1) -> list[tuple]:
    """``train_func`` for EPOCHS epochs with ``checkpoint_every`` 100; a preemption notice on the epochs in
    ``notice_at``. Returns the events in order: ("notice?", epoch, answer) and ("report", epoch, checkpoint epoch
    or None)."""
    import ray.train
    import ray.train.torch as rtt

    from macdiff_ray.data.pipeline import make_memory_dataset
    from macdiff_ray.train import pretrain as pt

    cfg = PretrainConfig(data_dir=str(data_dir), benchmark="synthetic", preset="tiny", epochs=EPOCHS,
                         batch_size=4 * world, max_steps_per_epoch=1, num_frames=8, warmup_epochs=0.0,
                         checkpoint_every=100, num_workers=world, use_gpu="no", output=str(out))
    shard = make_memory_dataset(str(data_dir), "synthetic", "train", train=True, num_frames=8)
    events: list[tuple] = []
    asked = {"n": 0}

    def get_preemption_info():
        asked["n"] += 1  # one call per epoch: the n-th call is at the end of epoch n
        answer = {"node": "spot-1"} if asked["n"] in notice_at else None
        events.append(("notice?", asked["n"], answer is not None))
        return answer

    def report(metrics, checkpoint=None, checkpoint_dir_name=None):
        saved = None
        if checkpoint is not None:  # the temporary folder still exists while report runs
            state = ckpt_lib.load_checkpoint(checkpoint.path)
            saved = int(state["epoch"])
            assert checkpoint_dir_name == f"epoch_{saved:05d}" and "optimizer" in state
        events.append(("report", int(metrics["epoch"]), saved))

    monkeypatch.setattr(ray.train, "get_context", lambda: _Context(rank, world))
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: None)
    monkeypatch.setattr(ray.train, "get_dataset_shard", lambda name: shard)
    monkeypatch.setattr(ray.train, "report", report)
    monkeypatch.setattr(ray.train, "get_preemption_info", get_preemption_info)
    monkeypatch.setattr(rtt, "get_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(rtt, "prepare_model", lambda model: model)
    pt.train_func(to_dict(cfg))
    return events


def test_notice_writes_a_checkpoint_at_the_end_of_that_epoch(monkeypatch, synthetic_prepared, tmp_path):
    events = _run(monkeypatch, synthetic_prepared, tmp_path / "run", notice_at={2})
    assert events == [
        ("notice?", 1, False), ("report", 1, None),
        ("notice?", 2, True), ("report", 2, 2),  # asked after epoch 2's training, checkpoint of epoch 2 written
        ("notice?", 3, False), ("report", 3, 3),  # the last epoch always has one
    ]


def test_without_notice_only_the_interval_and_the_last_epoch_checkpoint(monkeypatch, synthetic_prepared, tmp_path):
    events = _run(monkeypatch, synthetic_prepared, tmp_path / "run", notice_at=set())
    assert [e for e in events if e[0] == "report"] == [("report", 1, None), ("report", 2, None), ("report", 3, 3)]
    assert [e[1] for e in events if e[0] == "notice?"] == [1, 2, 3]  # asked every epoch (a barrier on all ranks)


def test_other_ranks_ask_every_epoch_and_report_without_checkpoint(monkeypatch, synthetic_prepared, tmp_path):
    """Rank 1 makes the same barrier calls as rank 0 (else the run would hang) and never writes a checkpoint."""
    events = _run(monkeypatch, synthetic_prepared, tmp_path / "run", notice_at={1}, rank=1, world=2)
    assert [e[1] for e in events if e[0] == "notice?"] == [1, 2, 3]
    assert [e for e in events if e[0] == "report"] == [("report", n, None) for n in (1, 2, 3)]

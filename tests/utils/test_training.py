"""The training loops' shared pieces: early stopping on hand-worked sequences, the resume rule's error, seeding
against the generators it seeds, the run's records and checkpoint errors."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from cmrprior.errors import ConfigError, DataError
from cmrprior.utils.seeding import derive_seed, seed_everything
from cmrprior.utils.training import EarlyStopping, TrainingRun, check_config_change, order_generator


def _run(stopper: EarlyStopping, values, **kw):
    """(improved per epoch, the epoch (1-based) it stopped at or None, final state)."""
    state, improved = {}, []
    for epoch, v in enumerate(values, 1):
        improved.append(stopper.update(state, v, **kw))
        if state.get(stopper.keys[2]):
            return improved, epoch, state
    return improved, None, state


def test_lower_is_better_with_patience_and_min_delta():
    improved, stopped, state = _run(EarlyStopping(2, min_delta=0.1), [1.0, 0.95, 0.8, 0.85, 0.79, 0.5])
    # 0.95 is not 0.1 below 1.0; 0.8 is; 0.85 and 0.79 (not below 0.7) are two bad epochs -> stop at epoch 5
    assert improved == [True, False, True, False, False] and stopped == 5
    assert state == {"best_val_loss": 0.8, "bad_epochs": 2, "stopped_early": True}


def test_higher_is_better_and_a_minimum_number_of_epochs():
    stopper = EarlyStopping(1, mode="max", keys=("best", "bad", "done"))
    state = {"best": -1.0, "bad": 0, "done": False}
    assert [stopper.update(state, v, may_stop=e >= 3) for e, v in enumerate([0.2, 0.1, 0.1], 1)] == [True, False, False]
    assert state == {"best": 0.2, "bad": 2, "done": True}  # bad after epoch 2 already, stopped only from epoch 3


def test_nan_never_improves_none_always_does_and_patience_zero_never_stops():
    improved, stopped, state = _run(EarlyStopping(0), [math.nan, 3.0, 4.0, 5.0, 6.0])
    assert improved == [False, True, False, False, False] and stopped is None and state["bad_epochs"] == 3
    improved, _, state = _run(EarlyStopping(1), [None, None])
    assert improved == [True, True] and state["best_val_loss"] is None


def test_resume_rule_names_the_file_and_the_settings():
    check_config_change({"lr": 1, "epochs": 2}, {"lr": 1, "epochs": 5}, {"epochs"}, "r/last.pt")
    with pytest.raises(ConfigError, match=r"r/last.pt: .*different teacher configuration \(lr, width\)"):
        check_config_change({"lr": 1, "width": 2}, {"lr": 2}, (), "r/last.pt", "teacher")


def test_seed_everything_seeds_python_numpy_and_torch_and_order_generator_is_the_derived_seed():
    seed_everything(11)
    got = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    assert got == (random.random(), np.random.rand(), torch.rand(1).item())
    want = torch.Generator().manual_seed(derive_seed(11, "perm", 2))
    assert torch.equal(torch.randperm(20, generator=order_generator(11, "perm", 2)), torch.randperm(20, generator=want))
    assert torch.equal(torch.randperm(20, generator=order_generator(11)),
                       torch.randperm(20, generator=torch.Generator().manual_seed(11)))


def test_a_run_in_memory_keeps_plain_records_and_stops_after_its_patience(tmp_path):
    run = TrainingRun(None, config={"lr": 1}, stopping=EarlyStopping(2))
    state = run.resume({"best_val_loss": None})
    assert state == {"epoch": 0, "history": [], "best_val_loss": None}
    for epoch, value in enumerate([3.0, 2.0, 2.5, 2.5], 1):
        run.improved(value)
        run.record({"epoch": epoch, "val_loss": np.float64(value), "n": np.int64(epoch)})
        run.save({"model": {}})  # nothing to write without a folder
        state["epoch"] = epoch
    assert run.should_stop() and state["best_val_loss"] == 2.0 and list(tmp_path.iterdir()) == []
    assert state["history"][-1] == {"epoch": 4, "val_loss": 2.5, "n": 4}
    assert type(state["history"][-1]["val_loss"]) is float and type(state["history"][-1]["n"]) is int


def test_an_unreadable_checkpoint_is_a_data_error_that_names_it(tmp_path):
    (tmp_path / "last.pt").write_text("not a checkpoint")
    with pytest.raises(DataError, match=r"last.pt.*cannot read checkpoint to resume"):
        TrainingRun(tmp_path, config={}).resume({})

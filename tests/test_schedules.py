"""Rate schedules (issue 30): each shape equals torch.optim.lr_scheduler's, a scheduled run logs
and uses those rates, resumes to the same numbers, and an ensemble member keeps its single run's."""
import csv
import math

import pytest
import torch

from conftest import TINY_FFN
from salrun.jobs import run_job
from salrun.launch import compose
from salrun.settings import ConfigError, choose, job_settings

STEPS = 40


def torch_factors(name: str, values: dict) -> list[float]:
    """The learning rate torch's scheduler gives each of STEPS optimizer steps, for a rate of 1."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    lr = torch.optim.lr_scheduler
    if name == "cosine":
        scheduler = lr.CosineAnnealingLR(optimizer, T_max=STEPS, eta_min=values["min_factor"])
    elif name == "step":
        scheduler = lr.StepLR(optimizer, step_size=values["every"], gamma=values["gamma"])
    elif name == "warmup_cosine":
        warmup = values["warmup"]
        scheduler = lr.SequentialLR(optimizer, [
            lr.LinearLR(optimizer, start_factor=values["start_factor"], total_iters=warmup),
            lr.CosineAnnealingLR(optimizer, T_max=STEPS - warmup, eta_min=values["min_factor"])], milestones=[warmup])
    else:
        scheduler = lr.ConstantLR(optimizer, factor=1.0)
    factors = []
    for _ in range(STEPS):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return factors


@pytest.mark.parametrize("name, values", [("constant", {}), ("cosine", {"min_factor": 0.1}),
                                          ("step", {"every": 7, "gamma": 0.5}),
                                          ("warmup_cosine", {"warmup": 9, "start_factor": 0.05, "min_factor": 0.0})])
def test_each_schedule_is_torchs(name, values):
    choice = choose("schedule", {"name": name, **values})
    ours = [choice.entry.load()(choice.settings, t, STEPS) for t in range(STEPS)]
    assert ours == pytest.approx(torch_factors(name, values), rel=1e-6, abs=1e-9)
    assert name == "constant" or len(set(ours)) > 2  # the rate did move


def rows(folder, metric: str) -> dict[int, float]:
    with open(folder / "metrics.csv") as handle:
        return {int(r["step"]): float(r["value"]) for r in csv.DictReader(handle) if r["metric"] == metric}


SCHEDULED = [*TINY_FFN, "train.steps=12", "train.log_every=2", "train.checkpoint_every=5", "optim.lr=0.01",
             "schedule=warmup_cosine", "schedule.warmup=4", "sal_schedule=cosine"]


def test_a_scheduled_run_logs_and_uses_the_rates_and_resumes_exactly(tmp_path):
    cfg = compose("train", SCHEDULED)
    whole = run_job("train", cfg, tmp_path / "whole")
    assert whole["status"] == "ok"
    logged = rows(tmp_path / "whole", "lr")
    settings = job_settings("train", cfg)
    for step, value in logged.items():  # the rate of step k is the schedule's after k - 1 steps
        expected = 0.01 * settings.schedule.entry.load()(settings.schedule.settings, step - 1, 12)
        assert math.isclose(value, expected, rel_tol=1e-9)
    assert logged[1] < logged[6] and logged[12] < logged[6]  # warm-up, then decay
    sal = rows(tmp_path / "whole", "sal_rate_factor")
    assert sal[1] == 1.0 and sal[12] < sal[6] < 1.0
    plain = run_job("train", compose("train", SCHEDULED[:-2]), tmp_path / "plain")
    assert plain["final"] != whole["final"]  # the schedules changed the training

    def stop_at_7(done, latest):
        if done == 7:
            raise KeyboardInterrupt

    stopped = run_job("train", cfg, tmp_path / "run", stop_at_7)
    assert stopped["status"] == "interrupted" and stopped["steps"] == 7
    resumed = run_job("train", cfg, tmp_path / "run", resume=True)
    assert resumed["status"] == "ok" and resumed["final"] == whole["final"]
    assert (tmp_path / "run" / "metrics.csv").read_text() == (tmp_path / "whole" / "metrics.csv").read_text()


def test_lyapunov_refuses_a_schedule():
    with pytest.raises(ConfigError, match="salrun train takes it"):
        job_settings("lyapunov", compose("lyapunov", ["schedule=cosine"]))


def test_a_schedule_setting_out_of_range_is_one_line():
    with pytest.raises(ConfigError, match="warmup must be >= 1"):
        job_settings("train", compose("train", ["schedule=warmup_cosine", "schedule.warmup=0"]))

"""Runs trained as one batched model (salrun.ensemble) keep each run's numbers: in float64 a
member's metrics equal those of its single run (the same loop, salrun.training.Run, with the
single engine) to 1e-9 relative over 50 steps, for the MLP and the RNN and every batched method
and gate; a member that diverges is frozen while the others go on."""
import csv
import dataclasses
import math

import pytest
import torch

from salrun import jobs
from salrun.ensemble import BatchedSAL
from salrun.engines import MembersDiffer, SingleEngine, StackedEngine, check_batchable, make_optimizer
from salrun.launch import compose
from salrun.results import RunWriter
from salrun.settings import job_settings
from salrun.training import Member, Run
from test_slurm import cluster, sweeps  # noqa: F401 - the SLURM fixtures, for the test marked slurm

STEPS, LOG_EVERY = 50, 10
MLP_BASE = ["model.depth=4", "model.width=6", "train.batch_size=8", "task=clusters"]
RNN_BASE = ["experiment=long_lag", "model.hidden=6", "task.lag=7", "task.test_size=40", "train.batch_size=8"]
MEMBERS = [["method=none", "seed=0"],
           ["method=sal", "seed=1", "method.lr=0.05"],
           ["method=sal", "seed=2", "method.gate=two_sided", "method.target=1.2", "method.beta=0.3", "optim.lr=0.003"],
           ["method=spectral", "method.rho=1.4", "seed=3"],
           ["method=orthogonal", "seed=4"],
           ["method=critical", "seed=5", "optim.lr=0.002"],
           ["method=sal", "seed=6", "method.gate=proportional", "method.band=0.5", "method.lr=0.05"],
           ["method=sal", "seed=7", "method.gate=dead_band", "method.band=0.05", "method.lr=0.05"]]


def _settings(base: list[str], member: list[str], steps: int = STEPS, device: str = "cpu"):
    return job_settings("train", compose("train", [*base, *member, f"train.steps={steps}",
                                                   f"train.log_every={LOG_EVERY}", "threads=1", f"device={device}"]))


def _rows(folder) -> dict:
    with open(folder / "metrics.csv") as handle:
        return {(r["step"], r["metric"], r["layer"]): float(r["value"]) for r in csv.DictReader(handle)}


def _double(task):
    """The task with its data in float64 (labels stay integers)."""
    def cast(pair):
        return tuple(t.double() if t.is_floating_point() else t for t in pair)
    train_batch, test_set = task.train_batch, task.test_set
    task.train_batch = lambda batch_size, generator: cast(train_batch(batch_size, generator))
    task.test_set = lambda: cast(test_set())
    return task


def _double_engine(s) -> SingleEngine:
    """A single run's engine in float64 (built in float32, as the ensemble builds its members)."""
    built = SingleEngine.build(s)
    built.net.model.double()
    return SingleEngine(s, _double(built.task), built.net, make_optimizer(s, built.net.model))


def _single_run(s, folder) -> dict:
    """The single-run path, the one loop with the single engine, in float64."""
    writer = RunWriter(folder)
    Run([Member(s, writer)], _double_engine(s)).train()
    writer.flush_metrics()
    return _rows(folder)


def _ensemble_run(settings, folders, dtype=torch.float64) -> Run:
    members = [Member(s, RunWriter(folder)) for s, folder in zip(settings, folders)]
    run = Run.setup(members, dtype=dtype)
    run.train()
    for member in members:
        member.writer.flush_metrics()
    return run


ONE_LR = [m for m in MEMBERS if not any(o.startswith("optim.lr") for o in m)]  # torch's fused Adam runs them


SCHEDULED = ["schedule=warmup_cosine", "schedule.warmup=10", "sal_schedule=step", "sal_schedule.every=20"]


@pytest.mark.parametrize("base, members", [(MLP_BASE, MEMBERS + [["method=lsuv", "seed=6"]]), (RNN_BASE, MEMBERS),
                                           (MLP_BASE, ONE_LR), (RNN_BASE, ONE_LR), (MLP_BASE + SCHEDULED, MEMBERS[:3]),
                                           (MLP_BASE + SCHEDULED, ONE_LR[:3])],
                         ids=["mlp", "rnn", "mlp-one-lr", "rnn-one-lr", "mlp-scheduled", "mlp-scheduled-one-lr"])
def test_members_equal_their_single_runs_in_float64(tmp_path, base, members):
    check_members_equal_single_runs(tmp_path, base, members, "cpu")


@pytest.mark.parametrize("base", [MLP_BASE, RNN_BASE], ids=["mlp", "rnn"])
def test_members_in_one_block_as_on_a_gpu_equal_their_single_runs(tmp_path, base, monkeypatch):
    """On a GPU the batched SAL takes every member's sums and products at once (`BatchedSAL._blocks`),
    on a CPU member by member: the GPU's way, run here, keeps each member's numbers too."""
    monkeypatch.setattr(BatchedSAL, "_blocks", staticmethod(lambda members, like: [slice(0, members)]))
    check_members_equal_single_runs(tmp_path, base, MEMBERS[:4], "cpu")


def check_members_equal_single_runs(tmp_path, base, members, device):
    """Each member's metrics of one batched run equal its single run's (both on `device`), float64."""
    settings = [_settings(base, member, device=device) for member in members]
    folders = [tmp_path / f"member{i}" for i in range(len(members))]
    trainer = _ensemble_run(settings, folders).engine
    assert isinstance(trainer, StackedEngine)
    assert trainer.device.type == device
    assert (trainer.optimizer.shared is not None) == all(not any(o.startswith("optim.lr") for o in m) for m in members)
    for i, s in enumerate(settings):
        single, batched = _single_run(s, tmp_path / f"single{i}"), _rows(folders[i])
        assert single.keys() == batched.keys(), members[i]
        assert any(key[1] == "sensitivity_rms" for key in single) and len(single) > 20
        for key, value in single.items():
            assert math.isclose(batched[key], value, rel_tol=1e-9, abs_tol=1e-12), (members[i], key, value, batched[key])
    assert len({_rows(f)[("50", "loss", "")] for f in folders}) == len(members)  # the members did differ


def test_a_diverged_member_is_frozen_and_the_others_go_on(tmp_path):
    members = (["seed=0"], ["seed=1", "optim.lr=1e38"], ["seed=2"])
    settings = [_settings([*MLP_BASE, "optim.name=sgd", "optim.lr=0.05"], member, steps=20) for member in members]
    folders = [tmp_path / f"member{i}" for i in range(3)]
    run = _ensemble_run(settings, folders, dtype=None)
    assert run.engine.alive == [True, False, True]
    assert run.members[1].summary["status"] == "diverged" and run.members[1].summary["diverged_step"] < 20
    alone = _ensemble_run([settings[0]], [tmp_path / "alone"], dtype=None)  # member 0 without the others
    assert alone.engine.alive == [True]
    together, alone_rows = _rows(folders[0]), _rows(tmp_path / "alone")
    assert together.keys() == alone_rows.keys() and len(together) > 20
    assert all(math.isclose(together[k], alone_rows[k], rel_tol=1e-5, abs_tol=1e-7) for k in together)
    assert max(int(k[0]) for k in _rows(folders[1])) < 20  # its rows stop where it diverged


def test_runs_of_different_shapes_do_not_batch():
    with pytest.raises(MembersDiffer, match="more than per-member"):
        StackedEngine([_settings(MLP_BASE, []), _settings(MLP_BASE, ["model.width=5"])])
    with pytest.raises(MembersDiffer, match="does not declare that it batches"):
        check_batchable([_settings(MLP_BASE, ["method=sal", "method.objective=linear"])])


def test_member_folders_are_single_run_folders(tmp_path):
    overrides = [[*MLP_BASE, *m, "train.steps=6", "train.log_every=3", "threads=1", "device=cpu"] for m in MEMBERS[:3]]
    cfgs = [compose("train", o) for o in overrides]
    summaries = jobs.run_jobs("train", cfgs, [tmp_path / f"member{i}" for i in range(3)])
    for i, cfg in enumerate(cfgs):
        single = jobs.run_job("train", cfg, tmp_path / f"single{i}")
        member = summaries[i]
        assert member["status"] == single["status"] == "ok"
        assert sorted(p.name for p in (tmp_path / f"member{i}").iterdir()) == \
            sorted(p.name for p in (tmp_path / f"single{i}").iterdir())
        assert member.keys() == single.keys()
        own = ("final", "wall_seconds", "startup_seconds", "folder", "started")  # each run's own numbers, folder and start time
        assert {k: v for k, v in member.items() if k not in own} == {k: v for k, v in single.items() if k not in own}
        a, b = _rows(tmp_path / f"member{i}"), _rows(tmp_path / f"single{i}")
        assert a.keys() == b.keys()
        assert all(math.isclose(a[k], b[k], rel_tol=1e-4, abs_tol=1e-6) for k in a)
        rebuilt = jobs.load_model(tmp_path / f"member{i}" / "model.pt")
        assert jobs.load_model(tmp_path / f"single{i}" / "model.pt").state_dict().keys() == rebuilt.state_dict().keys()


@pytest.mark.parametrize("base, members", [(MLP_BASE, MEMBERS[1:3]), (RNN_BASE, MEMBERS[1:3]), (MLP_BASE, ONE_LR[:2])],
                         ids=["mlp", "rnn", "mlp-one-lr"])
def test_an_exported_member_continues_as_its_single_run(tmp_path, base, members):
    """What a member's checkpoint holds (model, optimizer and SAL state) continues on the
    single-run path with the numbers the ensemble goes on with (float64)."""
    settings = [_settings(base, member, steps=20) for member in members]
    trainer = _ensemble_run(settings, [tmp_path / "a", tmp_path / "b"]).engine  # 20 steps
    trainer.nets[1].model.double()
    net, optimizer = trainer.export(1)
    s = settings[1]
    net = dataclasses.replace(net, generator=torch.Generator().set_state(net.generator.get_state()))
    alone = SingleEngine(s, _double(trainer.task), net, optimizer)
    # the run loop sets each step's rates from the schedules (a preset may schedule them): here both
    # paths go on at the rates as set, so that the state is all that differs between them
    for engine in (alone, trainer):
        engine.scale_rates(1.0, 1.0)
    for step in range(21, 26):
        alone.step(step, False, [None])
        trainer.step(step, False, [None, None])
    for name, view in trainer.model.member_views(1, dict(trainer.model.named_parameters())).items():
        # 1e-6: torch's fused Adam keeps its step count in float32 (its bias corrections round there)
        torch.testing.assert_close(dict(net.model.named_parameters())[name], view, rtol=1e-6, atol=1e-9)


def test_an_interrupt_checkpoints_every_member_and_each_resumes_as_a_single_run(tmp_path, monkeypatch):
    import os
    import signal

    step = StackedEngine.step

    def interrupted_step(self, number, log_now, writers):
        if number == 4:
            os.kill(os.getpid(), signal.SIGINT)  # held until the step ends, as Ctrl-C is
        return step(self, number, log_now, writers)

    monkeypatch.setattr(StackedEngine, "step", interrupted_step)
    overrides = [[*MLP_BASE, *m, "train.steps=8", "train.log_every=2", "threads=1", "device=cpu"] for m in MEMBERS[:2]]
    cfgs = [compose("train", o) for o in overrides]
    folders = [tmp_path / f"member{i}" for i in range(2)]
    summaries = jobs.run_jobs("train", cfgs, folders)
    assert [s["status"] for s in summaries] == ["interrupted"] * 2 and all(s["steps"] == 4 for s in summaries)
    monkeypatch.undo()
    for cfg, folder in zip(cfgs, folders):
        assert jobs.load_checkpoint(folder)["step"] == 4
        resumed = jobs.run_or_resume("train", cfg, folder)
        assert resumed["status"] == "ok" and resumed["resumed_from_step"] == 4 and resumed["steps"] == 8
        assert max(int(k[0]) for k in _rows(folder)) == 8


def test_sweep_ensemble_writes_the_table_of_a_sweep(run_cli, tmp_path):
    """The basic launcher trains the one group in this process, joblib its two halves side by
    side (one per core); both tables are the plain sweep's, up to float rounding."""
    import pandas as pd

    from conftest import TINY_FFN

    grid = [*TINY_FFN, "method=sal,none", "seed=0,1"]
    plain = run_cli("sweep", *grid, "--out", str(tmp_path / "plain"), "--quiet")
    batched = run_cli("sweep", *grid, "--ensemble", "--out", str(tmp_path / "batched"), "--quiet")
    side = run_cli("sweep", *grid, "hydra.launcher.n_jobs=2", "--ensemble", "--launcher", "joblib",
                   "--out", str(tmp_path / "side"), "--quiet")
    assert plain.returncode == batched.returncode == side.returncode == 0, batched.stderr + side.stderr
    assert "ensemble: 4 jobs in 1 batched model(s); 0 alone" in batched.stderr
    assert "ensemble: 4 jobs in 2 batched model(s); 0 alone" in side.stderr
    a = pd.read_csv(tmp_path / "plain" / "sweep.csv")
    def run_files(folder):  # the run folder contract's files, less Hydra's own (.hydra/, the job's log)
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.suffix != ".log")

    for name in ("batched", "side"):
        b = pd.read_csv(tmp_path / name / "sweep.csv")
        assert list(a.columns) == list(b.columns) and list(a["overrides"]) == list(b["overrides"])
        assert list(b["status"]) == ["ok"] * 4 and list(b["method"]) == list(a["method"])
        for column in ("loss", "test_loss", "accuracy", "log_sensitivity"):
            assert b[column].tolist() == pytest.approx(a[column].tolist(), rel=1e-4, abs=1e-6), (name, column)
        for i in range(4):
            assert run_files(tmp_path / name / str(i)) == run_files(tmp_path / "plain" / str(i))
    wrong = run_cli("sweep", *TINY_CHAOS_GRID, "--command", "lyapunov", "--ensemble", "--out", str(tmp_path / "wrong"))
    assert wrong.returncode == 2 and "--ensemble" in wrong.stderr and "Traceback" not in wrong.stderr


TINY_CHAOS_GRID = ["seed=0,1", "lyapunov.sal_steps=2"]


def test_the_rnn_sweep_runs_flossing_alone_and_the_rest_side_by_side(run_cli, tmp_path):
    """Members that cannot batch (flossing) run alone, announced in one line; every job's row
    is the plain sweep's."""
    import pandas as pd

    from conftest import TINY_RNN

    grid = [*TINY_RNN, "method=sal,flossing,spectral", "++method.rho=1.1", "seed=0,1"]
    plain = run_cli("sweep", *grid, "hydra.launcher.n_jobs=2", "--launcher", "joblib", "--out", str(tmp_path / "plain"),
                    "--quiet")
    side = run_cli("sweep", *grid, "hydra.launcher.n_jobs=2", "--ensemble", "--launcher", "joblib",
                   "--out", str(tmp_path / "side"), "--quiet")
    assert plain.returncode == side.returncode == 0, side.stderr
    assert "ensemble: 4 jobs in 2 batched model(s); 2 alone (jobs 2, 3)" in side.stderr
    a, b = pd.read_csv(tmp_path / "plain" / "sweep.csv"), pd.read_csv(tmp_path / "side" / "sweep.csv")
    assert list(a["overrides"]) == list(b["overrides"]) and list(b["status"]) == ["ok"] * 6
    assert b["loss"].tolist() == pytest.approx(a["loss"].tolist(), rel=1e-4, abs=1e-6)


def test_the_memory_preflight_counts_a_batched_group_as_its_members():
    from salrun import memory

    s = _settings(MLP_BASE, ["model.depth=50", "model.width=64", "train.batch_size=4096"])
    one = memory.total(memory.estimate(s))
    group = memory.total(memory.batched([s] * 8))
    assert group - memory.BASE_BYTES == pytest.approx(8 * (one - memory.BASE_BYTES))
    limit = (one + group) / 2  # one run fits; eight batched in one process do not
    memory.check([s] * 8, workers=1, limit=limit)
    with pytest.raises(memory.ConfigError, match="needs about"):
        memory.check([[s] * 8], workers=1, limit=limit)


@pytest.mark.slurm
def test_sweep_ensemble_submits_one_slurm_job_per_group(sweeps, tmp_path):
    """On SLURM each batched group is one cluster job: sal and none batch together, the two
    depths are two shapes, so two jobs for eight runs."""
    import pandas as pd

    from test_slurm import FFN, finish

    out = tmp_path / "sweep"
    grid = [*FFN, "train.steps=6", "train.log_every=3", "method=sal,none", "model.depth=2,3", "seed=0,1"]
    code, stderr = finish(sweeps.start(out, *grid, "--ensemble"))
    assert code == 0, stderr
    assert "ensemble: 8 jobs in 2 batched model(s); 0 alone" in stderr
    table = pd.read_csv(out / "sweep.csv")
    assert list(table.status) == ["ok"] * 8 and len(set(table.output)) == 8
    scripts = list((out / ".submitit").glob("*/*_submission.sh"))
    assert scripts and "#SBATCH --array=0-1" in scripts[0].read_text()  # two jobs: one per group


def test_a_task_loss_that_vmap_cannot_batch_is_refused_in_one_line(monkeypatch):
    """The members' losses run by torch.vmap; a registered task's loss that it cannot batch (here one
    that reads a value out with .item()) gets a ValueError that names the task and what to do."""
    engine = StackedEngine([_settings(MLP_BASE, member) for member in MEMBERS[:2]])
    monkeypatch.setattr(engine.task, "loss", lambda prediction, target: prediction.sum() * prediction.mean().item())
    with pytest.raises(ValueError, match="the loss of task 'clusters' does not run under torch.vmap.*without --ensemble"):
        engine.step(1, False, [None, None])

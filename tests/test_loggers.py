"""The logger group: TensorBoard and MLflow follow the one training loop, for every member of an ensemble."""
import pytest

from conftest import TINY_FFN, TINY_CHAOS
from salrun.launch import compose
from salrun.settings import REGISTRY, ConfigError, Entry, job_settings


def test_tensorboard_reads_back_for_every_ensemble_member(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from salrun.jobs import run_jobs

    cfgs = [compose("train", [*TINY_FFN, "logger=tensorboard", f"seed={seed}"]) for seed in (0, 1)]
    folders = [tmp_path / "0", tmp_path / "1"]
    summaries = run_jobs("train", cfgs, folders)  # one batched model of two members
    assert [s["status"] for s in summaries] == ["ok", "ok"]
    for folder, summary in zip(folders, summaries):
        events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
        events.Reload()
        accuracy = [(e.step, e.value) for e in events.Scalars("accuracy")]
        assert [step for step, _ in accuracy] == [1, 3, 6]  # every evaluation (log_every 3, and the last)
        assert accuracy[-1][1] == pytest.approx(summary["final"]["accuracy"])
        assert {"loss", "test_loss", "log_sensitivity"} <= set(events.Tags()["scalars"])
        histogram = events.Histograms("sensitivity_rms_over_layers")
        assert [h.step for h in histogram] == [1, 3, 6]
        assert histogram[0].histogram_value.num == 3  # one value per hidden layer (model.depth=3)


def test_tensorboard_draws_each_layers_neurons_from_the_probes(tmp_path):
    """With train.probes=true, each layer gets a histogram over its neurons' sensitivities whose
    bucket edges are the percentiles the probe wrote to metrics.csv."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from salrun.jobs import run_jobs
    from salrun.results import read_metrics

    cfg = compose("train", [*TINY_FFN, "logger=tensorboard", "train.probes=true"])
    [summary] = run_jobs("train", [cfg], [tmp_path])
    assert summary["status"] == "ok"
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"histograms": 0})
    events.Reload()
    tags = [tag for tag in events.Tags()["histograms"] if tag.startswith("sensitivity_per_neuron/")]
    assert len(tags) == 3  # one per hidden layer (model.depth=3)
    rows = read_metrics(tmp_path)
    last = max(rows["step"])
    for layer, tag in enumerate(sorted(tags)):
        value = events.Histograms(tag)[-1]
        assert value.step == last
        expected = {q: float(rows.query(f"step == {last} and layer == {layer} and metric == 'sensitivity_p{q}'")["value"].iloc[0])
                    for q in (0, 50, 100)}
        h = value.histogram_value
        assert h.min == pytest.approx(expected[0]) and h.max == pytest.approx(expected[100])
        assert list(h.bucket)[:3] == [10, 15, 25] and h.num == 100
        assert expected[50] in [pytest.approx(limit) for limit in h.bucket_limit]


def test_tensorboard_follows_the_chaos_study(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from salrun.jobs import run_job

    summary = run_job("lyapunov", compose("lyapunov", [*TINY_CHAOS, "logger=tensorboard"]), tmp_path)
    assert summary["status"] == "ok"
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("mle")] == [0, 3, 6]


def test_mlflow_run_is_found_by_search_runs(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from salrun.jobs import run_job

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # the embedded store: outputs/mlflow.db under the working directory
    folder = tmp_path / "run"
    summary = run_job("train", compose("train", [*TINY_FFN, "logger=mlflow", "method.lr=0.02"]), folder)
    assert summary["status"] == "ok"
    assert (tmp_path / "outputs" / "mlflow.db").is_file()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["salrun"], filter_string="params.`method.lr` = '0.02'")
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED" and run["tags.salrun.folder"] == str(folder.resolve())
    assert run["metrics.accuracy"] == pytest.approx(summary["final"]["accuracy"])
    history = mlflow.tracking.MlflowClient().get_metric_history(run["run_id"], "accuracy")
    assert sorted(m.step for m in history) == [1, 3, 6]
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run["run_id"])}
    assert {"config.yaml", "metrics.csv", "summary.json", "model.pt"} <= artifacts


def test_mlflow_honours_its_tracking_uri(monkeypatch):
    from salrun.loggers import mlflow_tracking_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert mlflow_tracking_uri() == "http://tracking.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert mlflow_tracking_uri().startswith("sqlite:///") and mlflow_tracking_uri().endswith("outputs/mlflow.db")


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    entry = REGISTRY["logger"]["tensorboard"]
    monkeypatch.setitem(REGISTRY["logger"], "tensorboard",
                        Entry(entry.settings, entry.target, requires=("no_such_module_28",), extra="tensorboard"))
    with pytest.raises(ConfigError, match=r"^logger=tensorboard needs no_such_module_28: pip install "
                                          r"'salrun\[tensorboard\]'$"):
        job_settings("train", compose("train", [*TINY_FFN, "logger=tensorboard"]))


def test_csv_is_the_default_and_old_folders_read_as_csv():
    cfg = compose("train", TINY_FFN)
    assert cfg["logger"] == {"name": "csv"}
    del cfg["logger"]  # a run folder written before the logger group
    assert job_settings("train", cfg).logger.name == "csv"

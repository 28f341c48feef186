"""Loggers: where a run's metrics go besides its run folder (the `logger` config group).

    logger=csv          metrics.csv alone (the default; the folder writes it, this logger adds nothing)
    logger=tensorboard  RUN/tensorboard: every network-level metric as a scalar, and the per-layer
                        sensitivity_rms and grad_norm as histograms over the layers at each evaluation;
                        with train.probes=true also each layer's histogram over its neurons'
                        sensitivities (from the probe's percentiles, salrun.probes)
    logger=mlflow       an MLflow run: params (the flattened config), metrics, and the run folder as
                        artifacts at the end; MLFLOW_TRACKING_URI if set, else outputs/mlflow.db

metrics.csv stays the one record: a logger reads the rows the run appended to it since its last
call (`update`, after each evaluation of the training loop, `salrun.training.Run`, for every
member of an ensemble alike) and forwards them. A logger's failure is a warning, never the run's.
"""
from __future__ import annotations

import csv
import math
import os
import sys
from pathlib import Path

from salrun.probes import PERCENTILES
from salrun.results import METRIC_COLUMNS
from salrun.settings import JobSettings, dotted_keys

MLFLOW_STORE = Path("outputs") / "mlflow.db"  # MLflow's store when MLFLOW_TRACKING_URI is not set


class Logger:
    """logger=csv, and the base of the others: follows metrics.csv from `skip` rows on."""

    def __init__(self, settings: JobSettings, folder: Path, skip: int = 0):
        self.settings, self.folder = settings, Path(folder)
        self.skip = skip       # rows already forwarded (a resumed run's rows before its checkpoint)
        self.offset = 0        # bytes of metrics.csv read so far
        self.working = True    # False once it failed: the run goes on with metrics.csv alone

    def update(self, step: int) -> None:
        """Forward the rows metrics.csv gained since the last call."""
        if self.working:
            self._safely(lambda: self.write(rows) if (rows := self._new_rows()) else None)

    def close(self, summary: dict) -> None:
        """The run ended with `summary` (its status says how): forward the last rows, then end."""
        self.update(summary.get("steps", 0))
        if self.working:
            self._safely(lambda: self.finish(summary))

    def write(self, rows: list[tuple[int, str, float, int | None]]) -> None:
        """(step, metric, value, layer or None) rows, oldest first."""

    def finish(self, summary: dict) -> None:
        """The end of the run."""

    def _safely(self, action) -> None:
        try:
            action()
        except Exception as err:  # noqa: BLE001 - a tracking server down must not cost the run
            self.working = False
            warn(f"logger={self.settings.logger.name} failed ({type(err).__name__}: {err}); metrics.csv only")

    def _new_rows(self) -> list[tuple[int, str, float, int | None]]:
        path = self.folder / "metrics.csv"
        if type(self).write is Logger.write or not path.is_file():
            return []
        with open(path, newline="") as handle:
            handle.seek(self.offset)
            text = handle.read()
        text = text[:text.rfind("\n") + 1]  # whole lines only
        self.offset += len(text.encode())
        rows = []
        for row in csv.reader(text.splitlines()):
            if tuple(row) == METRIC_COLUMNS:
                continue
            if self.skip:
                self.skip -= 1
                continue
            step, metric, value, layer = row
            rows.append((int(step), metric, float(value), int(layer) if layer else None))
        return rows


HISTOGRAM_LAYERS = 20  # at most this many layers' neuron histograms per evaluation: an RNN's layers are
                       # its time steps (hundreds), which would bury TensorBoard's histogram tab


def _percentiles(rows) -> dict[tuple[int, int], list[float]]:
    """{(step, layer): the probe's sensitivity percentiles, in PERCENTILES' order}, for up to
    HISTOGRAM_LAYERS layers spread evenly from the first to the last."""
    found: dict[tuple[int, int], dict[int, float]] = {}
    for step, metric, value, layer in rows:
        if layer is not None and metric.startswith("sensitivity_p") and math.isfinite(value):
            found.setdefault((step, layer), {})[int(metric.removeprefix("sensitivity_p"))] = value
    complete = {key: [levels[q] for q in PERCENTILES] for key, levels in found.items() if set(levels) >= set(PERCENTILES)}
    layers = sorted({layer for _, layer in complete})
    if len(layers) > HISTOGRAM_LAYERS:
        keep = {layers[round(k * (len(layers) - 1) / (HISTOGRAM_LAYERS - 1))] for k in range(HISTOGRAM_LAYERS)}
        complete = {key: levels for key, levels in complete.items() if key[1] in keep}
    return complete


def _network(rows):
    """{step: {metric: value}} of the network-level rows."""
    by_step: dict[int, dict[str, float]] = {}
    for step, metric, value, layer in rows:
        if layer is None:
            by_step.setdefault(step, {})[metric] = value
    return by_step


class TensorBoardLogger(Logger):
    """Event files in RUN/tensorboard, one run per run folder (point TensorBoard at a sweep folder
    to compare its jobs)."""

    def __init__(self, settings: JobSettings, folder: Path, skip: int = 0):
        super().__init__(settings, folder, skip)
        from torch.utils.tensorboard import SummaryWriter

        self.events = SummaryWriter(log_dir=str(self.folder / "tensorboard"))
        self.events.add_text("config", "\n".join(f"    {key}: {value}" for key, value in flat_config(settings)))

    def write(self, rows) -> None:
        import numpy as np

        for step, metrics in _network(rows).items():
            for metric, value in metrics.items():
                self.events.add_scalar(metric, value, step)
        if self.settings.logger.settings.histograms:
            layers: dict[tuple[int, str], list[float]] = {}
            for step, metric, value, layer in rows:
                if layer is not None and math.isfinite(value):
                    layers.setdefault((step, metric), []).append(value)
            for (step, metric), values in sorted(layers.items()):
                self.events.add_histogram(f"{metric}_over_layers", np.asarray(values), step)
            for (step, layer), levels in sorted(_percentiles(rows).items()):
                self._neuron_histogram(step, layer, levels)
        self.events.flush()

    def _neuron_histogram(self, step: int, layer: int, levels: list[float]) -> None:
        """One layer's neurons' sensitivities as a histogram whose buckets are the probe's percentiles:
        exact in what it shows (each bucket holds its share of the neurons, in percent), with no
        per-neuron values to store. sum and sum_squares take each bucket's midpoint."""
        counts = [b - a for a, b in zip(PERCENTILES, PERCENTILES[1:])]
        mids = [(a + b) / 2 for a, b in zip(levels, levels[1:])]
        self.events.add_histogram_raw(f"sensitivity_per_neuron/layer_{layer:04d}", min=levels[0], max=levels[-1],
                                      num=sum(counts), sum=sum(c * m for c, m in zip(counts, mids)),
                                      sum_squares=sum(c * m * m for c, m in zip(counts, mids)),
                                      bucket_limits=levels[1:], bucket_counts=counts, global_step=step)

    def finish(self, summary: dict) -> None:
        self.events.add_text("status", f"{summary.get('status')}: {summary.get('error', '')}".rstrip(": "))
        self.events.close()


def mlflow_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else the embedded SQLite store outputs/mlflow.db (of this directory)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{MLFLOW_STORE.resolve()}"


class MLflowLogger(Logger):
    """One MLflow run per run folder: the config's leaves as params, every network-level metric,
    and at the end the summary's verdict and the run folder as artifacts."""

    def __init__(self, settings: JobSettings, folder: Path, skip: int = 0):
        super().__init__(settings, folder, skip)
        import logging

        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # their INFO lines (creating the store's tables) would break -q;
            logging.getLogger(name).setLevel(logging.WARNING)  # after the import, which sets mlflow's level

        uri = mlflow_tracking_uri()
        if uri.startswith("sqlite:///") and "MLFLOW_TRACKING_URI" not in os.environ:
            MLFLOW_STORE.parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=uri)
        name = settings.logger.settings.experiment
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            experiment = found.experiment_id
        elif "MLFLOW_TRACKING_URI" in os.environ:
            experiment = self.client.create_experiment(name)
        else:  # keep the artifacts beside the store, under outputs/, not in the working directory
            experiment = self.client.create_experiment(name, artifact_location=(MLFLOW_STORE.parent / "mlartifacts")
                                                       .resolve().as_uri())
        tags = {"salrun.folder": str(self.folder.resolve()), "mlflow.runName": self.folder.name}
        self.run_id = self.client.create_run(experiment, tags=tags).info.run_id
        from mlflow.entities import Param

        params = [Param(key, str(value)[:500]) for key, value in flat_config(settings)]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def write(self, rows) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(metric, value, now, step) for step, values in _network(rows).items()
                   for metric, value in values.items() if math.isfinite(value)]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def finish(self, summary: dict) -> None:
        status = summary.get("status")
        tags = {"salrun.status": str(status)}
        if "success" in summary:
            tags["salrun.success"] = str(summary["success"])
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)
        if isinstance(summary.get("judged"), (int, float)) and math.isfinite(summary["judged"]):
            self.client.log_metric(self.run_id, "judged", float(summary["judged"]))
        if self.settings.logger.settings.artifacts:
            for path in sorted(self.folder.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, {"ok": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED"))


def flat_config(settings: JobSettings) -> list[tuple[str, object]]:
    """The config's leaves, dotted (model.depth, method.lr, method.name), without the other
    command's section (a train run's lyapunov.*)."""
    cfg = settings.config
    other = "lyapunov" if settings.command == "train" else "train"
    leaves = []
    for key in dotted_keys({k: v for k, v in cfg.items() if k != other}):
        value = cfg
        for part in key.split("."):
            value = value[part]
        leaves.append((key, value))
    return leaves


def open_logger(settings: JobSettings, folder: Path, skip: int = 0) -> Logger:
    """The run's logger (its `logger` group); logger=csv if it cannot start (a warning says why)."""
    try:
        return settings.logger.entry.load()(settings, folder, skip)
    except Exception as err:  # noqa: BLE001 - a tracking server down must not cost the run
        warn(f"logger={settings.logger.name} did not start ({type(err).__name__}: {err}); metrics.csv only")
        return Logger(settings, folder, skip)


def warn(message: str) -> None:
    print(f"warning: {message.splitlines()[0] if message else message}", file=sys.stderr)

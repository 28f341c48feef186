"""Per setting of the depth runs (docs/BENCHMARKS.md, "Depth"): the value each run was judged on
(the mean of its last `train.success_window` evaluations, 5 by default), its peak over training, and how many
runs reached the threshold at some evaluation. `salrun report` gives the success rates and the
last evaluation; this adds what a run did on the way there. Usage:

    python docs/depth_judged.py SWEEP_OR_RUN_FOLDER ...   # a markdown table to stdout
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd
import yaml
from depth_study import succeeds  # docs/ is on the path when this script runs


def runs(paths):
    for path in map(Path, paths):
        if (path / "summary.json").is_file():
            yield path
        else:
            yield from sorted(p.parent for p in path.glob("*/summary.json"))


def setting(run):
    config = yaml.safe_load((run / "config.yaml").read_text())
    model, method = config["model"], config["method"]
    size = (f"depth {model['depth']}, width {model['width']}" if "depth" in model
            else f"lag {config['task'].get('lag')}, hidden {model.get('hidden')}")
    name = method.get("name") or json.loads((run / "summary.json").read_text())["method"]
    init = config.get("init", {}).get("name", "random")
    if name == "sal":  # SAL's own settings, and the init it starts from
        name = f"sal on {init} (target {method['target']}, rate {method['lr']})"
    elif name == "none" and init != "random":  # an init alone
        name = f"none on {init}"
    return size, name


def _order(size, method):
    numbers = [int(word.strip(",")) for word in size.split() if word.strip(",").isdigit()]
    return numbers, not method.startswith("sal"), method


def main(paths):
    rows = defaultdict(list)
    for run in runs(paths):
        summary = json.loads((run / "summary.json").read_text())
        if summary.get("status") != "ok":
            continue
        metrics = pd.read_csv(run / "metrics.csv")
        series = metrics[metrics.metric == summary["metric"]].value
        test = succeeds(summary)
        better = max if test(float("inf")) else min
        reached = any(map(test, series))
        rows[setting(run)].append((summary["judged"], better(series), reached, summary["success"]))
    print("| setting | method | runs | judged: mean of last 5 (min–max) | best evaluation (mean) "
          "| reached the threshold once | success |")
    print("|---|---|---|---|---|---|---|")
    for (size, method), values in sorted(rows.items(), key=lambda item: _order(*item[0])):
        judged = [v[0] for v in values]
        print(f"| {size} | {method} | {len(values)} | {sum(judged) / len(judged):.3f} "
              f"({min(judged):.3f}–{max(judged):.3f}) | {sum(v[1] for v in values) / len(values):.3f} "
              f"| {sum(v[2] for v in values)} | {sum(v[3] for v in values)} |")


if __name__ == "__main__":
    main(sys.argv[1:])

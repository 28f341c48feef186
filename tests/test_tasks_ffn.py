"""Feed-forward tasks: their data match the chance level and criterion they declare."""
import torch

from conftest import make_task


def test_clusters_is_balanced_separable_and_fixed():
    task = make_task("clusters", train_size=400, test_size=400)
    x, y = task.test_set()
    assert x.shape == (400, 2) and task.output_size == 2
    assert task.chance == 0.5 == float(y.float().mean())
    # The Bayes rule for N(±m, σ²I) is the sign of x·m: it must clear the criterion by a margin.
    bayes = float(((x.sum(1) > 0).long() == y).float().mean())
    assert bayes > task.threshold + 0.03
    # The data belong to the task, not the run: built twice, they are the same.
    again = make_task("clusters", train_size=400, test_size=400)
    assert torch.equal(again.test_set()[0], x)

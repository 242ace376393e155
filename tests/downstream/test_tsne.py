"""t-SNE: deterministic image choice and embedding, separation scores, the picture, the task end to end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from disco_bench.cli import main
from downstream import tsne
from infra.errors import InputError


def clusters(per_class: int = 20, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated classes: orthogonal centres of norm 10 in 16-D plus unit noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), per_class)
    return np.eye(16)[y] * 10 + rng.normal(size=(len(y), 16)), y


# --- image choice ----------------------------------------------------------------------------------


def test_select_takes_the_first_per_class_items_of_the_first_classes_in_order():
    targets = [0, 1, 0, 2, 1, 0, 2, 2]
    assert tsne.select_per_class(targets, classes=2, per_class=2, where="val") == [0, 1, 2, 4]
    assert tsne.select_per_class(targets, classes=3, per_class=1, where="val") == [0, 1, 3]


def test_select_names_what_is_missing():
    targets = [0, 1, 0, 2, 1, 0, 2, 2]
    with pytest.raises(InputError, match=r"^d/val has 3 classes; --classes 4 asks for more$"):
        tsne.select_per_class(targets, classes=4, per_class=1, where="d/val")
    with pytest.raises(InputError, match=r"^d/val: class index 1 has 2 images; --per-class 3 asks for more$"):
        tsne.select_per_class(targets, classes=3, per_class=3, where="d/val")


# --- embedding and scores ----------------------------------------------------------------------------


def test_perplexity_is_capped_below_the_sample_count():
    assert tsne.capped_perplexity(12, 30.0) == 11 / 3
    assert tsne.capped_perplexity(500, 30.0) == 30.0


def test_tsne_with_a_fixed_seed_gives_identical_points():
    x, _ = clusters(per_class=10)
    first, second = tsne.embed_2d(x, seed=0), tsne.embed_2d(x.copy(), seed=0)
    assert first.shape == (30, 2)
    assert np.array_equal(first, second)


def test_knn_accuracy_on_hand_made_neighbours():
    x = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])  # two tight pairs of directions
    assert tsne.knn_accuracy(x, np.array([0, 0, 1, 1]), k=1) == 100.0
    assert (
        tsne.knn_accuracy(x, np.array([0, 1, 0, 1]), k=1) == 0.0
    )  # each nearest neighbour has the other label
    # k capped at N - 1 = 3: every point sees 1 of its own class and 2 of the other, and is outvoted
    assert tsne.knn_accuracy(x, np.array([0, 0, 1, 1]), k=10) == 0.0


def test_knn_ties_go_to_the_lower_class():
    x = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1], [0.0, 1.0]])
    # k=2 neighbours: point 0 -> 1, 2 (classes 2, 1: tie -> 1, right); point 1 -> 0, 2 (1, 1: wrong);
    # point 2 -> 0, 1 (1, 2: tie -> 1, right); point 3 -> 1, 0 (2, 1: tie -> 1, wrong). Ties to the
    # higher class would give 0%.
    assert tsne.knn_accuracy(x, np.array([1, 2, 1, 0]), k=2) == 50.0


def test_separated_clusters_score_high_and_shuffled_labels_low():
    x, y = clusters()
    good = tsne.separation_scores(x, y)
    assert good["silhouette"] > 0.8 and good["knn5_top1"] == 100.0
    for seed in range(3):
        bad = tsne.separation_scores(x, np.random.default_rng(seed).permutation(y))
        assert bad["silhouette"] < 0.05 and bad["knn5_top1"] < 50.0  # chance is 33%


# --- the picture ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("panels", [1, 3])
def test_png_is_a_valid_image_of_the_expected_size(tmp_path, panels):
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 1, 1, 2, 2])
    path = tsne.plot_panels(
        [(f"ckpt {i}", rng.normal(size=(6, 2))) for i in range(panels)],
        labels,
        ["a", "b", "c"],
        tmp_path / "t.png",
    )
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (400 * panels, 460)
    assert [p.name for p in tmp_path.iterdir()] == ["t.png"]  # no temp file left behind


# --- the task -----------------------------------------------------------------------------------------


def test_tsne_task_writes_a_panel_per_checkpoint_and_scores(eval_cfg):
    cfg = dataclasses.replace(eval_cfg, ckpts=[eval_cfg.ckpt, eval_cfg.ckpt], classes=3, per_class=4)
    result = tsne.evaluate(cfg, progress=False)
    labels = ["random-init resnet10t", "random-init resnet10t #2"]
    assert [(m.extra["ckpt"], m.metric) for m in result.measurements] == [
        (labels[0], "silhouette"),
        (labels[0], "knn5_top1"),
        (labels[1], "silhouette"),
        (labels[1], "knn5_top1"),
    ]
    assert all(
        m.split == "val" and m.extra["arch"] == "resnet10t" and len(m.extra["sha256"]) == 64
        for m in result.measurements
    )
    png, csv = result.artifacts
    with Image.open(png) as img:
        assert img.size == (800, 460)
    points = pd.read_csv(csv)
    assert len(points) == 2 * 12 and list(points.columns) == [
        "ckpt",
        "sha256",
        "image",
        "class_index",
        "class_name",
        "x",
        "y",
    ]
    first, second = (points[points.ckpt == name] for name in labels)
    assert np.array_equal(
        first[["x", "y"]].to_numpy(), second[["x", "y"]].to_numpy()
    )  # same features, same seed
    assert first.class_index.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert result.protocol["tsne"] == {
        "n_components": 2,
        "init": "pca",
        "random_state": 0,
        "perplexity": 11 / 3,
    }


def test_tsne_task_asks_for_more_images_than_val_has(eval_cfg, tiny_imagefolder):
    with pytest.raises(InputError, match=r"class index 0 has 4 images; --per-class 5 asks for more"):
        tsne.evaluate(dataclasses.replace(eval_cfg, classes=3, per_class=5), progress=False)


def test_cli_eval_tsne_with_classes_and_per_class(eval_cfg, tmp_path):
    ck = eval_cfg.ckpt
    code = main(
        [
            "eval",
            "tsne",
            "--ckpt",
            ck,
            "--ckpt",
            ck,
            "--data",
            eval_cfg.data,
            "--classes",
            "2",
            "--per-class",
            "3",
            "--image-size",
            "16",
            "--out",
            str(tmp_path),
            "--quiet",
            "--set",
            "device=cpu",
        ]
    )
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["metric"] for r in records] == ["silhouette", "knn5_top1"] * 2
    assert records[0]["protocol"]["eval"]["images"] == 6
    assert len(pd.read_csv(tmp_path / "eval" / "tsne" / "tsne_points.csv")) == 12


def test_a_long_legend_wraps_into_rows_inside_the_picture(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [f"digit_{i}_handwritten" for i in range(10)]
    fig = Figure(figsize=(tsne.PANEL_INCHES, tsne.PANEL_INCHES + tsne.LEGEND_INCHES), dpi=tsne.DPI)
    ax = fig.add_subplot(1, 1, 1)
    handles = [ax.scatter([i], [i], label=name) for i, name in enumerate(names)]
    needed = tsne.fit_legend(fig, handles)
    (legend,) = fig.legends
    box = legend.get_window_extent(FigureCanvasAgg(fig).get_renderer())
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width  # one panel's width holds it: in several rows
    assert legend._ncols < 10 and needed > tsne.LEGEND_INCHES
    x, y = clusters(per_class=5, classes=10)
    png = tsne.plot_panels([("a", x[:, :2])], y, names, tmp_path / "t.png")
    width, height = Image.open(png).size
    assert width == 400 and abs(height - 100 * (tsne.PANEL_INCHES + needed)) <= 1  # taller, not clipped

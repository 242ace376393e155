"""Semi-supervised subsets: SimCLR's published list when it is beside the dataset, stratified otherwise."""

from __future__ import annotations

import shutil

from downstream.config import EvalConfig
from downstream.semisup import choose_subset
from pretrain.data import image_folder


def test_the_published_list_beside_the_dataset_is_used_and_recorded(tiny_imagefolder, tmp_path):
    data = tmp_path / "imagenet"
    shutil.copytree(tiny_imagefolder, data)
    samples = image_folder(data / "train").samples
    cfg = EvalConfig(data=str(data), subset_fraction=0.01)

    indices, desc = choose_subset(samples, cfg)
    assert (
        desc["source"] == "stratified"
        and desc["simclr_list"] == "not found: imagenet_subsets/1percent.txt beside the dataset"
    )
    assert len(indices) == 3  # one image of each of the 3 classes (round(0.01 x 8) = 0, at least 1)

    chosen = [samples[0][0], samples[9][0], samples[-1][0]]
    (tmp_path / "imagenet_subsets").mkdir()
    (tmp_path / "imagenet_subsets" / "1percent.txt").write_text(
        "".join(f"{'/'.join(p.rsplit('/', 2)[1:])}\n" for p in chosen)
    )  # class/file: embedded file names repeat
    indices, desc = choose_subset(samples, cfg)
    assert desc["source"] == "list" and desc["list"] == "1percent.txt" and "simclr_list" not in desc
    assert [samples[i][0] for i in indices] == chosen  # every line kept, the first one too

    other = EvalConfig(
        data=str(data), subset_fraction=0.25
    )  # no published list for 25%: stratified, nothing looked for
    assert "simclr_list" not in choose_subset(samples, other)[1]

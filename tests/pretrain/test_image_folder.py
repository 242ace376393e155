"""What an ImageFolder holds: images in subfolders of a class belong to it (a class holding only
nested images is a class, not an empty one), and a file of a type not read is left out with one
warning counting them, never silently; the files counted are exactly those the dataset reads."""

from __future__ import annotations

import shutil
from pathlib import Path

from disco_bench.cli import main
from pretrain.data import check_image_folder, image_folder
from tests.pretrain.helpers import bomb_png, pretrain_args


def copy(tiny_imagefolder, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_imagefolder, tmp_path / "data"))


def test_nested_images_belong_to_their_class_also_when_a_class_holds_only_nested_ones(
    tiny_imagefolder, tmp_path
):
    root = copy(tiny_imagefolder, tmp_path) / "train"
    first, second = sorted(root.iterdir())[:2]
    (first / "sub").mkdir()
    shutil.move(sorted(first.glob("*.png"))[0], first / "sub" / "moved.png")
    (second / "only").mkdir()
    for png in sorted(second.glob("*.png")):
        shutil.move(png, second / "only" / png.name)  # every image of this class is nested now
    assert check_image_folder(root) == sorted(p.name for p in root.iterdir())
    samples = dict(image_folder(root).samples)
    assert samples[str(first / "sub" / "moved.png")] == 0
    assert sum(label == 1 for label in samples.values()) == 8  # all of the nested class's images


def test_files_of_a_type_not_read_are_left_out_with_one_warning_counting_them(
    tiny_imagefolder, tmp_path, capsys
):
    root = copy(tiny_imagefolder, tmp_path) / "train"
    first = sorted(root.iterdir())[0]
    (first / "anim.gif").write_bytes(b"GIF89a")
    (first / "notes.txt").write_text("labels checked")
    samples = [path for path, _ in image_folder(root).samples]
    image_folder(root)  # listed again (a probe reads a split more than once): warned once
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"warning: 2 file(s) under {root} are not images")
    assert f"{first.name}/anim.gif" in err and f"{first.name}/notes.txt" in err
    assert len(samples) == 24 and not any(p.endswith((".gif", ".txt")) for p in samples)


def test_a_run_stopped_by_a_bad_image_before_its_first_checkpoint_leaves_no_log(
    tiny_imagefolder, tmp_path, capsys, monkeypatch
):
    """It once left log.csv and tb/ of steps no checkpoint held."""
    import pretrain.train as train

    rows = []
    real_write = train.StepLog.write
    monkeypatch.setattr(train.StepLog, "write", lambda self, row: (rows.append(row), real_write(self, row)))
    root = copy(tiny_imagefolder, tmp_path)
    # the last image of the last class: met after the first steps of the epoch have been logged
    bomb_png(sorted(sorted((root / "train").iterdir())[-1].iterdir())[-1])
    out = tmp_path / "out"
    assert main(pretrain_args(root, out, save_every=None, batch_size=4)) == 2
    assert "too large to decode" in capsys.readouterr().err
    assert rows  # steps were logged before the bad image came up
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []

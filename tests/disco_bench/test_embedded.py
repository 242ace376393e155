"""The embedded generator's selection split and class list: a carved validation split is made of
the full set's own training images (compared byte for byte), never of its reported validation images."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from disco_bench.embedded import PATTERNS, EmbeddedConfig, make_embedded
from infra.errors import InputError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_carved_split_is_the_full_sets_last_training_images(tmp_path):
    spec = dict(classes=3, train_per_class=5, val_per_class=4, image_size=8, seed=3)
    full = _files(make_embedded(tmp_path / "full", EmbeddedConfig(**spec), progress=False))
    carved = _files(
        make_embedded(tmp_path / "carved", EmbeddedConfig(**spec, carve_val_per_class=2), progress=False)
    )
    names = list(PATTERNS)[:3]
    assert sorted(carved) == sorted(
        [f"train/{n}/{i:05d}.png" for n in names for i in range(3)]
        + [f"val/{n}/{i:05d}.png" for n in names for i in (3, 4)]  # named by their training index
    )
    for n in names:
        for i in range(3):
            assert carved[f"train/{n}/{i:05d}.png"] == full[f"train/{n}/{i:05d}.png"]
        for i in (3, 4):  # carved val image i is training image i of the full set
            assert carved[f"val/{n}/{i:05d}.png"] == full[f"train/{n}/{i:05d}.png"]
    reported = {v for k, v in full.items() if k.startswith("val/")}
    assert not reported & set(carved.values())  # no reported image reaches the selection split
    assert EmbeddedConfig(**spec, carve_val_per_class=2).train_images == 9


def test_class_offset_changes_the_class_list_and_keeps_offset_zero_bytes(tmp_path):
    spec = dict(classes=2, train_per_class=2, val_per_class=1, image_size=8, seed=0)
    base = _files(make_embedded(tmp_path / "a", EmbeddedConfig(**spec), progress=False))
    shifted = _files(make_embedded(tmp_path / "b", EmbeddedConfig(**spec, class_offset=1), progress=False))
    assert {k.split("/")[1] for k in base} == set(list(PATTERNS)[:2])
    assert {k.split("/")[1] for k in shifted} == set(list(PATTERNS)[1:3])
    shared = list(PATTERNS)[1]  # the class both lists hold: same pattern, same seed -> same bytes
    assert shifted[f"train/{shared}/00000.png"] == base[f"train/{shared}/00000.png"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"classes": 10, "class_offset": 2}, "class_offset + classes = 12: expected at most 11"),
        ({"train_per_class": 4, "carve_val_per_class": 4}, "carve_val_per_class=4: expected fewer than"),
    ],
)
def test_impossible_class_list_or_carve_is_one_error(fields, message):
    with pytest.raises(InputError, match=re.escape(message)):
        EmbeddedConfig(**fields)

"""Counted nouns read as English: never "1 image(s)"."""

from __future__ import annotations

from radiology.wording import counted


def test_one_is_singular_and_every_other_count_plural() -> None:
    assert counted(1, "image") == "1 image"
    assert counted(0, "image") == "0 images"
    assert counted(2, "radiograph") == "2 radiographs"
    assert counted(3, "study", "studies") == "3 studies"

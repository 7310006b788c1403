"""Image health flags and the Fréchet distance on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.demo.faces import draw_sketch
from tasks.validate.frechet import frechet_distance
from tasks.validate.health import image_health

LIMITS = {"min_pixel_std": 6.0, "max_saturated_share": 0.6, "max_colour_deviation": 4.0}


def test_a_drawn_sketch_is_healthy():
    assert image_health(draw_sketch(0), **LIMITS).healthy


@pytest.mark.parametrize(("image", "reason"), [
    (np.full((64, 64), 128, np.uint8), "blank"),
    ((np.random.default_rng(0).random((64, 64)) > 0.5).astype(np.uint8) * 255, "saturated"),
    (np.dstack([np.full((64, 64), v, np.uint8) for v in (20, 120, 220)]), "colour"),
])
def test_broken_images_are_flagged(image, reason):
    health = image_health(image, **LIMITS)
    assert not health.healthy and reason in health.reasons()


def test_grey_stored_as_bgr_is_not_colour():
    grey = draw_sketch(1)
    assert image_health(np.dstack([grey] * 3), **LIMITS).healthy


def test_frechet_distance_is_zero_for_the_same_set_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    near = frechet_distance(a, rng.normal(size=(500, 8)))
    far = frechet_distance(a, rng.normal(loc=2.0, size=(500, 8)))
    assert near < 1.0 < far
    assert far == pytest.approx(8 * 4.0, rel=0.2)  # ||mu||^2 = 8 * 2^2


def test_frechet_distance_with_fewer_samples_than_dimensions_is_finite():
    rng = np.random.default_rng(1)
    assert np.isfinite(frechet_distance(rng.normal(size=(5, 32)), rng.normal(size=(6, 32))))


def test_noise_and_a_faint_wash_are_flagged_but_a_blank_page_is_only_blank():
    limits = {**LIMITS, "min_contrast": 32.0, "min_neighbour_correlation": 0.3}
    noise = np.random.default_rng(2).integers(0, 256, (64, 64), dtype=np.uint8)
    assert image_health(noise, **limits).reasons() == ["noise"]
    wash = (np.linspace(225, 245, 64)[None, :].repeat(64, 0)
            + np.random.default_rng(3).normal(0, 1, (64, 64))).astype(np.uint8)
    wash[20:40, 20:40] -= 15
    health = image_health(wash, **limits)
    assert health.reasons() == ["low_contrast"], health
    assert image_health(np.full((64, 64), 240, np.uint8), **limits).reasons() == ["blank"]
    assert image_health(draw_sketch(2), **limits).healthy

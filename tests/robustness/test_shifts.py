"""Real-world shifts: each one changes the page, the same for the same seed, and the pages go
through the checkpoint's preprocessing (the one data path)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.errors import ConfigError
from cnnlab.inference import Preprocess
from cnnlab.robustness.shifts import SHIFTS, STYLE_CLASS, check_shifts, render_page, shifted_inputs


@pytest.mark.parametrize("name", SHIFTS)
def test_each_shift_changes_the_page_and_is_deterministic(name: str,
                                                          digits: np.ndarray) -> None:
    plain = np.asarray(render_page(digits[0]))
    # dark ink on light paper, as a user's scan
    assert plain.mean() > 150 and plain.min() < 60
    pages = [np.asarray(render_page(digits[0], name, s, seed=1)) for s in (1, 2, 3)]
    for page in pages:
        assert page.shape != plain.shape or not np.array_equal(page, plain)
    np.testing.assert_array_equal(np.asarray(render_page(digits[0], name, 2, seed=1)),
                                  pages[1])


def test_pages_are_read_through_the_preprocessing(digits: np.ndarray) -> None:
    pre = Preprocess("mnist-digits", 1, 32, 32)
    targets = np.array([7, 1, 7, 3, 1, 0])
    x, t, refused = shifted_inputs(digits, targets, pre, "slant", 2)
    assert x.shape == (len(t), 1, 32, 32) and x.dtype == np.uint8
    assert len(t) + len(refused) == len(digits)
    # a style shift takes only its class's digits
    _x7, t7, r7 = shifted_inputs(digits, targets, pre, "crossed_7", 1)
    assert set(t7.tolist()) | set(r7.tolist()) == {STYLE_CLASS["crossed_7"]}
    assert len(t7) + len(r7) == 2


def test_bad_names_and_severities() -> None:
    with pytest.raises(ConfigError, match="unknown shift 'slnt'; did you mean 'slant'"):
        check_shifts(["slnt"])
    with pytest.raises(ConfigError, match="severity"):
        render_page(np.zeros((28, 28), np.uint8), "slant", 4)


def test_the_shifts_digits_are_the_first_or_spread_over_all() -> None:
    from cnnlab.robustness import RobustnessSettings
    from cnnlab.robustness.suite import shift_indices

    assert shift_indices(10_000, 200).tolist() == list(range(200))
    spread = shift_indices(10_000, 2_000, spread=True)
    assert len(spread) == len(set(spread.tolist())) == 2_000
    assert spread[0] == 0 and spread[-1] == 9_995 and (spread < 5_000).sum() == 1_000
    assert shift_indices(100, 200, spread=True).tolist() == list(range(100))  # all of them
    with pytest.raises(ConfigError, match="'shift_spread' setting of robustness must be a bool"):
        RobustnessSettings(shift_spread="yes").check()  # type: ignore[arg-type]

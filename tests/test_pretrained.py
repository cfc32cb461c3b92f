"""lcx.pretrained: the base models' recipes and the measures of how they use their window."""

import pandas as pd
import pytest

from lcx import pretrained


def test_context_use_reads_b1s_measures_from_the_evaluations():
    W = 4
    ppl = pd.DataFrame({"length": [W, 8 * W, 16 * W], "ppl": [10.0, 30.0, 45.0]})
    passkey = pd.DataFrame(
        {
            "length": [W, W, 8 * W, 16 * W],
            "per_digit": [0.5, 1.0, 0.1, 0.3],
            "near_copy": [1.0, 0.5, 0.0, 0.0],
        }
    )
    by_position = pd.DataFrame({"start": [0, 1, 2, 3], "end": [1, 2, 3, 4], "nll": [5.0, 4, 3, 2]})
    m = pretrained.context_use(ppl, passkey, by_position, W)
    assert m["ppl_ratio_16w_over_w"] == pytest.approx(4.5)
    assert m["passkey_per_digit_at_w"] == pytest.approx(0.75)
    assert m["passkey_per_digit_8w_16w_max"] == pytest.approx(0.3)
    assert m["near_copy_at_w"] == pytest.approx(0.75)
    # first bucket 5 nats; buckets in (W/2, W] start at 3: 2 nats
    assert m["context_gain_nats"] == pytest.approx(3.0)

"""The sampler at the edges of its settings."""

import numpy as np
import pytest

from edgekv.runtime.sampler import Sampler


@pytest.mark.parametrize("temperature", [1e-310, 5e-324])
def test_a_temperature_near_zero_picks_the_top_token(temperature):
    logits = np.array([0.5, 3.0, -2.0, 2.9], dtype=np.float32)
    assert Sampler(temperature=temperature)(logits) == 1


def test_a_huge_temperature_samples_every_token():
    sampler = Sampler(temperature=1e308, seed=0)
    logits = np.array([0.0, 50.0, -50.0], dtype=np.float32)
    assert {sampler(logits) for _ in range(200)} == {0, 1, 2}


@pytest.mark.parametrize("kwargs", [{"temperature": "1"}, {"top_p": None}, {"seed": 1.5},
                                    {"temperature": True}])
def test_settings_of_the_wrong_type_are_a_setting_error(kwargs):
    from edgekv.runtime.errors import SettingError

    with pytest.raises(SettingError, match="must be numbers and seed an integer"):
        Sampler(**kwargs)

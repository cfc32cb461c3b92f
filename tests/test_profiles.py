import pytest

from lcx import profiles


def test_check_names_parameter_value_and_allowed():
    with pytest.raises(ValueError) as err:
        profiles.check("profile", "gpux", profiles.PROFILES)
    assert (
        str(err.value)
        == "parameter 'profile' = 'gpux' is not allowed; choose one of: tiny, cpu, gpu, paper"
    )
    with pytest.raises(
        ValueError, match=r"'max_distance' = 10 is out of range; allowed: \[32768, None\]"
    ):
        profiles.check("max_distance", 10, low=32768)
    with pytest.raises(ValueError, match="'head_dim' = '64' has type str; expected int"):
        profiles.check("head_dim", "64", kind=int)
    assert profiles.check("head_dim", 64, kind=int, low=8) == 64


def test_pick_by_profile():
    assert profiles.pick("tiny", tiny=1, cpu=2, gpu=3) == 1
    assert profiles.pick("paper", tiny=1, cpu=2, gpu=3) == 3  # paper falls back to gpu
    with pytest.raises(ValueError, match="no value given for profile 'cpu'"):
        profiles.pick("cpu", tiny=1)
    with pytest.raises(ValueError, match="'profile' = 'big'"):
        profiles.pick("big", tiny=1)

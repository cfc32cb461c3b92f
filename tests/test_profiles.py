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


def test_a_bool_is_not_a_count_and_a_flag_is_a_bool():
    with pytest.raises(ValueError, match="'n_windows' = True has type bool; expected int"):
        profiles.check("n_windows", True, kind=int, low=1)
    assert profiles.check("x", 1.5, kind=(int, float)) == 1.5
    with pytest.raises(ValueError, match="'run_cost' = 1 has type int; expected bool"):
        profiles.check_flag("run_cost", 1)
    with pytest.raises(ValueError, match="'run_scratch' = None"):
        profiles.check_flag("run_scratch", None)
    assert profiles.check_flag("run_scratch", None, none=True) is None


def test_gpu_profiles_are_refused_without_cuda_unless_rehearsed(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("LCX_REHEARSAL", raising=False)
    for profile in ("gpu", "paper"):
        with pytest.raises(RuntimeError, match=f"profile='{profile}' needs a CUDA GPU"):
            profiles.check_device(profile)
    profiles.check_device("cpu")
    monkeypatch.setenv("LCX_REHEARSAL", "1")
    profiles.check_device("gpu")


def test_seeds_are_distinct_non_negative_integers():
    from lcx import chapter

    assert chapter.check_seeds([0, 3]) == [0, 3]
    for bad in ([-1], [True], [0, 0], [], [1.0]):
        with pytest.raises(ValueError):
            chapter.check_seeds(bad)


def test_an_unwritable_cache_is_named_up_front(monkeypatch, tmp_path):
    from lcx import cache

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LCX_CACHE", str(blocker / "cache"))
    with pytest.raises(PermissionError, match="set LCX_CACHE to a folder you can write"):
        cache.check_writable()
    monkeypatch.setenv("LCX_CACHE", str(tmp_path / "cache"))
    assert cache.check_writable() == tmp_path / "cache"


def test_run_scratch_on_gpu_is_refused():
    from lcx import llama2_long

    assert llama2_long.check_run_scratch(None, "tiny") is True
    assert llama2_long.check_run_scratch(None, "cpu") is False
    with pytest.raises(ValueError, match="trains Llama-2-7B from scratch"):
        llama2_long.check_run_scratch(True, "gpu")
    with pytest.raises(ValueError, match="'run_scratch' = 1"):
        llama2_long.check_run_scratch(1, "cpu")

"""genvis_hf.settings: the one settings object of the fast path, its environment defaults and overrides."""

from __future__ import annotations

import threading

import pytest

from genvis_hf import settings
from genvis_hf.settings import Settings, get_settings, settings_from_environment, settings_override
from genvis_hf.utils.cpu import cpu_vendor


def test_defaults_and_environment_variables():
    assert settings_from_environment({}) == Settings()
    parsed = settings_from_environment({
        "GENVIS_HF_OPTIMIZE": "0", "GENVIS_HF_COMPILED_OPS": "false", "GENVIS_HF_FUSED_CONV": "off",
        "GENVIS_HF_LINEAR": "BLAS", "GENVIS_HF_FRAMES_PER_CALL": "2",
    })  # fmt: skip
    assert parsed == Settings(optimize_on_eval=False, compiled_ops=False, fused_conv=False, linear_route="blas",
                              frames_per_call=2)  # fmt: skip
    assert settings_from_environment({"GENVIS_HF_OPTIMIZE": "1", "GENVIS_HF_LINEAR": " "}) == Settings()


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("GENVIS_HF_FUSED_CONV", "maybe", "GENVIS_HF_FUSED_CONV='maybe': expected 1 or 0"),
    ("GENVIS_HF_FRAMES_PER_CALL", "four", "GENVIS_HF_FRAMES_PER_CALL='four': expected a positive integer"),
    ("GENVIS_HF_FRAMES_PER_CALL", "0", "frames_per_call must be a positive integer, got 0"),
    ("GENVIS_HF_LINEAR", "mkl", "linear_route must be one of ('auto', 'onednn', 'blas'), got 'mkl'"),
])  # fmt: skip
def test_a_bad_environment_value_is_named_in_one_line(variable, value, message):
    with pytest.raises(ValueError) as raised:
        settings_from_environment({variable: value})
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_override_is_scoped_and_thread_local():
    before = get_settings()
    seen_in_thread = []
    with settings_override(frames_per_call=1, linear_route="blas") as inside:
        assert get_settings() is inside and settings.frames_per_call() == 1 and not settings.linear_uses_onednn()
        thread = threading.Thread(target=lambda: seen_in_thread.append(settings.frames_per_call()))
        thread.start()
        thread.join()
        with settings_override(frames_per_call=3):
            assert settings.frames_per_call() == 3
        assert settings.frames_per_call() == 1
    assert get_settings() == before
    assert seen_in_thread == [before.frames_per_call]  # another thread sees the process-wide settings


def test_set_settings_changes_the_process_wide_ones(monkeypatch):
    monkeypatch.setattr(settings, "_process_settings", Settings())
    assert settings.set_settings(fused_conv=False).fused_conv is False
    assert settings.fused_conv_enabled() is False
    with pytest.raises(ValueError, match="frames_per_call must be a positive integer"):
        settings.set_settings(frames_per_call=-1)


def test_linear_route_auto_follows_the_measured_vendor_choice():
    with settings_override(linear_route="auto"):
        assert settings.linear_uses_onednn() is (cpu_vendor() != "GenuineIntel")
    with settings_override(linear_route="onednn"):
        assert settings.linear_uses_onednn()

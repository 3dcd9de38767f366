"""Policy defaults come from policy.proto's [(field_default)] options, as the daemon's."""

import pytest

from kvwarden import Policy


def test_zero_fields_take_the_proto_default():
    s = Policy.scissorhands(64).proto.scissorhands
    assert Policy.value_or_default(s, "window") == 400
    assert Policy.value_or_default(s, "recent") == 10
    assert Policy.value_or_default(s, "threshold_scale") == 1.0
    assert Policy.value_or_default(Policy.h2o(64).proto.h2o, "recent") == 10
    w = Policy.windowkv(100).proto.windowkv
    assert [Policy.value_or_default(w, f) for f in ("alpha", "omega", "gamma", "lambda")] == [8, 8, 8, 14]
    assert Policy.value_or_default(Policy.streaming(16).proto.streaming, "sinks") == 4


def test_set_fields_win_and_optional_zero_stays_zero():
    assert Policy.value_or_default(Policy.scissorhands(64, recent=3).proto.scissorhands, "recent") == 3
    # `optional` fields: an explicit 0 is a value (sinks 0 is allowed; omega 0 the daemon refuses).
    assert Policy.value_or_default(Policy.streaming(16, sinks=0).proto.streaming, "sinks") == 0
    assert Policy.value_or_default(Policy.windowkv(100, omega=0).proto.windowkv, "omega") == 0


def test_a_field_without_a_default_is_refused():
    with pytest.raises(KeyError, match="budget has no documented default"):
        Policy.value_or_default(Policy.h2o(64).proto.h2o, "budget")

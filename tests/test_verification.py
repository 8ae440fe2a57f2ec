"""A forget result is verified before it is reported (issue 10, case 3), and options are checked first (case 5)."""
import pytest

import oblivio
from oblivio import OblivioError
from oblivio.methods import get_method
from oblivio.verification import NothingForgotten


@pytest.mark.parametrize("method,options,match", [
    ("ft", {"lr": "abc"}, "option lr must be a number, got 'abc'"),
    ("ft", {"batch_size": 0}, "option batch_size must be >= 1, got 0"),
    ("ft", {"epochs": 2.5}, "option epochs must be an integer, got 2.5"),
    ("ft", {"lr": -1}, "option lr must be > 0, got -1"),
    ("ft", {"epochs": -3}, "option epochs must be >= 1, got -3"),
    ("ga", {"lr": 0}, "option lr must be > 0, got 0"),
    ("dm", {"max_steps": 0}, "option max_steps must be >= 1, got 0"),
    ("scrub", {"lr_decay_epochs": [1, "x"]}, "option lr_decay_epochs must be a list of"),
    ("dm", {"optimizer": "rmsprop"}, "option optimizer must be one of sgd, adam"),
    ("bad-teacher", {"lr": "abc"}, "option lr must be a number"),  # its __post_init__ used to crash with TypeError
    ("ga", {"lr": float("nan")}, "option lr must be a finite number"),
])
def test_bad_option_values_are_one_line_errors(method, options, match):
    with pytest.raises(OblivioError, match=match) as e:
        get_method(method, **options)
    assert f"method {method!r}" in str(e.value) and "\n" not in str(e.value)


def test_options_are_coerced_from_their_annotations():
    m = get_method("dm", max_steps=2.0, budget=None, lr="1e-4")
    assert m.config.max_steps == 2 and isinstance(m.config.max_steps, int)
    assert m.config.budget is None and m.config.lr == 1e-4
    assert get_method("scrub", lr_decay_epochs=[1, "2"]).config.lr_decay_epochs == (1, 2)
    assert get_method("ft", {"epochs": 3}).config.epochs == 3  # a dict config


def test_field_metadata_declares_a_range():
    from dataclasses import dataclass, field

    from oblivio.validation import check_options

    @dataclass
    class Config:
        keep: float = field(default=0.5, metadata={"gt": 0, "le": 1})
        shift: float = field(default=-1.0, metadata={"unchecked": True})
        count: int = 3

    assert check_options("x", Config, {"keep": 1, "shift": -5, "count": "4"}) == {"keep": 1.0, "shift": -5.0, "count": 4}
    with pytest.raises(OblivioError, match="x: option keep must be > 0, got 0"):
        check_options("x", Config, {"keep": 0})
    with pytest.raises(OblivioError, match="x: option count must be >= 0, got -1"):
        check_options("x", Config, {"count": -1})


def test_a_forget_that_forgets_nothing_is_refused(splits, original):
    # a step so small that no prediction moves: the model changed, the forget accuracy did not fall
    with pytest.raises(NothingForgotten, match=r"forget accuracy did not fall \(.*steps\)"):
        oblivio.unlearn(original("class"), split=splits["class"], method="ga", lr=1e-7, steps=1)
    with pytest.raises(NothingForgotten, match="share of triggered forget samples predicted as the target did not fall"):
        oblivio.unlearn(original("backdoor"), split=splits["backdoor"], method="ga", lr=1e-7, steps=1)


def test_an_unchanged_model_is_refused_in_every_scenario(splits, original, monkeypatch):
    from oblivio.methods.gradient_ascent import GradientAscent

    monkeypatch.setattr(GradientAscent, "run", lambda self, model, data: {"steps": 0})
    for scenario in ("random", "class"):
        with pytest.raises(NothingForgotten, match="did not change the model"):
            oblivio.unlearn(original(scenario), split=splits[scenario], method="ga")
    # verify=False is the explicit opt-out (e.g. for experiments)
    assert oblivio.unlearn(original("random"), split=splits["random"], method="ga", verify=False).info == {"steps": 0}


def test_a_real_forget_is_verified_and_says_what_changed(splits, original):
    result = oblivio.unlearn(original("class"), split=splits["class"], method="ga")
    assert result.info["verified"].startswith("forget accuracy ")


def test_dm_states_when_there_was_nothing_to_forget(splits, original):
    # dm's stopping test passes before any step when the threshold is generous: reported, not refused
    result = oblivio.unlearn(original("random"), split=splits["random"], method="dm", z_stop=1e9)
    assert result.info["stopped_by"] == "already_matched" and result.info["nothing_to_forget"] is True
    assert result.info["verified"].startswith("nothing to forget: before any step")

"""Run specs: a profile with overrides on top, validated, and the profiles file they come from."""
from __future__ import annotations

import pytest

from shared.domain.spec import Profiles, SpecOverrides, resolve_spec
from shared.errors import InvalidRunSpec

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
PROFILE = {"model_id": HAIKU, "template": "Summarize: {{ text }}", "params": {"max_tokens": 200, "temperature": 0.5},
           "recipients": ["ops@example.com"]}


def test_given_a_profile_and_an_override_when_resolved_then_the_override_wins_field_by_field():
    spec = resolve_spec(PROFILE, SpecOverrides(model_id=NOVA, output_format="csv"), where="test")

    assert (spec.model_id, spec.output_format, spec.template) == (NOVA, "csv", "Summarize: {{ text }}")


def test_given_override_params_when_resolved_then_they_are_merged_into_the_profiles_params():
    spec = resolve_spec(PROFILE, SpecOverrides(params={"temperature": 0.1, "top_p": 0.9}), where="test")

    assert (spec.params.max_tokens, spec.params.temperature, spec.params.top_p) == (200, 0.1, 0.9)


def test_given_two_overrides_when_resolved_then_the_later_one_applies_on_top_of_the_earlier():
    sidecar = SpecOverrides(params={"max_tokens": 50}, name="sidecar")
    cli = SpecOverrides(params={"temperature": 0.0})

    spec = resolve_spec(PROFILE, sidecar, cli, where="test")

    assert (spec.params.max_tokens, spec.params.temperature, spec.name) == (50, 0.0, "sidecar")


def test_given_no_profile_when_overrides_name_a_model_then_they_alone_make_the_spec():
    spec = resolve_spec(None, SpecOverrides(model_id=HAIKU), where="test")

    assert spec.model_id == HAIKU


def test_given_an_unknown_model_id_when_resolved_then_the_error_names_where_and_the_supported_families():
    with pytest.raises(InvalidRunSpec,
                       match=r"invalid run spec from the sidecar: model_id: .*'acme\.gpt-9'.*anthropic"):
        resolve_spec(PROFILE, SpecOverrides(model_id="acme.gpt-9"), where="the sidecar")


@pytest.mark.parametrize("recipient", ["not-an-address", "two words@example.com"])
def test_given_a_bad_email_recipient_when_resolved_then_the_error_names_it(recipient):
    with pytest.raises(InvalidRunSpec, match=rf"recipients: .*not an email address: {recipient}"):
        resolve_spec(PROFILE, SpecOverrides(recipients=["ok@example.com", recipient]), where="test")


def test_given_an_out_of_range_param_when_resolved_then_the_error_names_the_param():
    with pytest.raises(InvalidRunSpec, match=r"params\.temperature"):
        resolve_spec(PROFILE, SpecOverrides(params={"temperature": 3}), where="test")


def test_given_an_override_with_an_unknown_field_when_read_then_it_is_rejected():
    with pytest.raises(ValueError, match="modle_id"):
        SpecOverrides.model_validate({"modle_id": HAIKU})


# --- the profiles file ----------------------------------------------------------------------------------
def test_given_a_profiles_file_when_loaded_then_each_profile_is_found_by_name(tmp_path):
    path = tmp_path / "profiles.yaml"
    path.write_text(f"profiles:\n  summarize:\n    model_id: {HAIKU}\n"
                    "  embed:\n    model_id: amazon.titan-embed-text-v2:0\n")

    profiles = Profiles.load(path)

    assert profiles.names() == ["embed", "summarize"]
    assert profiles.get("summarize") == {"model_id": HAIKU}


def test_given_an_unknown_profile_when_asked_for_then_the_error_names_the_known_ones(tmp_path):
    path = tmp_path / "profiles.yaml"
    path.write_text(f"profiles:\n  summarize:\n    model_id: {HAIKU}\n  classify:\n    model_id: {NOVA}\n")

    with pytest.raises(InvalidRunSpec,
                       match=r"unknown profile 'translate'; profiles in .*profiles.yaml: classify, summarize"):
        Profiles.load(path).get("translate")


def test_given_no_profiles_file_when_a_profile_is_asked_for_then_the_error_says_there_are_none(tmp_path):
    with pytest.raises(InvalidRunSpec, match="unknown profile 'summarize'.*: none"):
        Profiles.load(tmp_path / "missing.yaml").get("summarize")


def test_given_a_profiles_file_that_is_not_yaml_when_loaded_then_it_is_rejected_as_invalid_yaml(tmp_path):
    path = tmp_path / "profiles.yaml"
    path.write_text("profiles: [unclosed\n")

    with pytest.raises(InvalidRunSpec, match="is not valid YAML"):
        Profiles.load(path)


@pytest.mark.parametrize("text", ["profiles:\n  - summarize\n", "- profiles\n", "profiles: 3\n"],
                         ids=["a-list-of-profiles", "a-list-at-the-top", "a-number"])
def test_given_a_profiles_file_of_the_wrong_shape_when_loaded_then_the_error_shows_the_shape_expected(tmp_path, text):
    path = tmp_path / "profiles.yaml"
    path.write_text(text)

    with pytest.raises(InvalidRunSpec, match=r"must hold a mapping `profiles: \{name: spec\}`"):
        Profiles.load(path)


def test_given_a_profile_with_an_invalid_spec_when_loaded_then_the_error_names_the_profile(tmp_path):
    path = tmp_path / "profiles.yaml"
    path.write_text("profiles:\n  broken:\n    model_id: acme.gpt-9\n")

    with pytest.raises(InvalidRunSpec, match=r"profile 'broken' in .*profiles.yaml: model_id"):
        Profiles.load(path)

"""The policy file: defaults, per-model overrides, and errors that name file, key and problem."""

from __future__ import annotations

import pytest

from shared.policy import (
    ModelPolicy,
    Policy,
    PolicyError,
    deep_merge,
    load_policy,
    parse_policy_text,
)


def test_no_file_means_built_in_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("GATEHOUSE_POLICY_PATH", raising=False)
    monkeypatch.setattr("shared.policy.DEFAULT_POLICY_PATH", tmp_path / "absent.toml")
    policy = load_policy()
    assert policy.for_model("anything") == ModelPolicy()
    assert policy.models == []


def test_a_named_file_that_is_missing_is_an_error(tmp_path):
    with pytest.raises(PolicyError, match="policy file not found"):
        load_policy(tmp_path / "nope.toml")


def test_deep_merge_overrides_leaves_and_keeps_siblings():
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"c": 9}}) == \
        {"a": {"b": 1, "c": 9}, "d": 3}


@pytest.mark.parametrize("text,origin,expected", [
    ("[models.fraud.gates]\nunknown_knob = 1\n", "p.toml",
     "p.toml: models.fraud.gates.unknown_knob: Extra inputs are not permitted"),
    ("[defaults.nonsense]\nx = 1\n", "p.toml", "p.toml: defaults.nonsense: Extra inputs"),
    ("version = 2\n", "p.toml", "p.toml: version: Input should be less than or equal to 1"),
    ("surprise = true\n", "p.toml", "p.toml: surprise: Extra inputs are not permitted"),
    ("[models\n", "p.toml", "p.toml: not valid toml"),
    ("- just\n- a list\n", "p.yaml", "p.yaml: the policy must be a table/mapping"),
    ("models: {fraud: {gates: {bad: 1}}}\n", "p.yml", "p.yml: models.fraud.gates.bad"),
])
def test_errors_name_the_file_the_key_and_the_problem(text, origin, expected):
    with pytest.raises(PolicyError) as error:
        parse_policy_text(text, origin)
    assert expected in str(error.value)


def test_environment_variable_picks_the_file(tmp_path, monkeypatch):
    path = tmp_path / "team.yaml"
    path.write_text("models:\n  fraud: {}\n")
    monkeypatch.setenv("GATEHOUSE_POLICY_PATH", str(path))
    policy = load_policy()
    assert policy.origin == str(path) and policy.models == ["fraud"]


def test_empty_documents_are_defaults():
    assert Policy({}).for_model("m") == ModelPolicy()
    assert parse_policy_text("", "p.yaml").for_model("m") == ModelPolicy()


def test_an_edited_policy_file_is_read_again_without_a_restart(tmp_path, monkeypatch, caplog):
    import os

    from shared.policy import CurrentPolicy

    path = tmp_path / "policy.toml"
    path.write_text("[defaults.rollout]\nsteps = [5, 100]\n")
    monkeypatch.setenv("GATEHOUSE_POLICY_PATH", str(path))
    current = CurrentPolicy()
    assert current().for_model("m").rollout.steps == (5, 100)

    def edit(text: str, seconds_later: int) -> None:
        path.write_text(text)
        stamp = path.stat().st_mtime + seconds_later
        os.utime(path, (stamp, stamp))

    edit("[defaults.rollout]\nsteps = [10, 50, 100]\n", 1)
    assert current().for_model("m").rollout.steps == (10, 50, 100)
    # A broken edit leaves the last good policy in force and says why, once.
    edit("[defaults.rollout]\nstepz = [1]\n", 2)
    assert current().for_model("m").rollout.steps == (10, 50, 100)
    assert current().for_model("m").rollout.steps == (10, 50, 100)
    refusals = [r for r in caplog.records if "policy edit not applied" in r.getMessage()]
    assert len(refusals) == 1 and "defaults.rollout.stepz" in refusals[0].getMessage()
    edit("[defaults.rollout]\nsteps = [100]\n", 3)
    assert current().for_model("m").rollout.steps == (100,)


def test_a_first_policy_that_does_not_parse_is_an_error(tmp_path, monkeypatch):
    from shared.policy import CurrentPolicy

    path = tmp_path / "policy.toml"
    path.write_text("[defaults.gates]\nnope = 1\n")
    monkeypatch.setenv("GATEHOUSE_POLICY_PATH", str(path))
    with pytest.raises(PolicyError, match="defaults.gates.nope"):
        CurrentPolicy()()

"""The gates section of the policy: defaults equal the issue's thresholds, the example file
parses, overrides apply per model, bad input names the file and the key."""

from __future__ import annotations

import pytest

from shared.foundation.storage import PROJECT_ROOT
from shared.gates.policy import GatePolicy
from shared.policy import PolicyError, parse_policy_text

EXAMPLE = PROJECT_ROOT / "policy.example.toml"


def test_defaults_are_the_issue_thresholds():
    policy = GatePolicy()
    assert policy.ece.threshold == 0.02
    assert policy.reliability.max_gap == 0.05
    assert (policy.conformal.level, policy.conformal.tolerance) == (0.90, 0.02)
    assert all(spec.tolerance == 0 for spec in policy.metric_specs())
    assert [s.name for s in policy.metric_specs()] == ["auc", "accuracy", "log_loss", "brier"]
    assert (policy.drift.psi_warn, policy.drift.psi_fail) == (0.1, 0.2)
    assert policy.lineage.required_tags == ["dataset_version", "feature_store_table", "team"]
    assert policy.lineage.require_run_id
    assert policy.first_version_becomes_champion is False
    assert all(policy.gate(name).enabled and policy.gate(name).blocking
               for name in ("lineage", "schema", "ece", "reliability", "conformal",
                            "comparison", "drift", "fairness", "latency"))


def test_the_example_file_parses_and_its_defaults_are_the_built_in_ones():
    policy = parse_policy_text(EXAMPLE.read_text(), str(EXAMPLE))
    defaults = policy.for_model("any-model").gates
    built_in = GatePolicy()
    assert defaults.model_dump(exclude={"evaluation"}) == built_in.model_dump(
        exclude={"evaluation"})
    assert defaults.resolved_path(defaults.evaluation.path, "m") == \
        "s3://gatehouse-holdouts/m/holdout.parquet"
    fraud = policy.for_model("fraud-detector").gates
    assert fraud.ece.threshold == 0.03 and fraud.ece.binning == "equal_mass"
    assert fraud.ece.n_bins == 15  # untouched keys keep the defaults
    assert fraud.sensitive_column == "region" and fraud.first_version_becomes_champion
    assert fraud.fairness.blocking is False
    assert [(s.name, s.threshold, s.tolerance) for s in fraud.metric_specs()] == [
        ("auc", 0.5, 0.0), ("log_loss", 0.5, 0.0), ("recall", 0.3, 0.01)]
    churn = policy.for_model("churn").gates
    assert churn.task == "multiclass_classification" and not churn.latency.enabled
    assert [s.name for s in churn.metric_specs()] == ["accuracy", "log_loss", "brier"]


def test_yaml_works_the_same():
    policy = parse_policy_text("models:\n  m:\n    gates:\n      ece: {threshold: 0.05}\n",
                               "policy.yaml")
    assert policy.for_model("m").gates.ece.threshold == 0.05


@pytest.mark.parametrize("text,expected", [
    ("[defaults.gates.ece]\nthreshhold = 0.1\n",
     "policy.toml: defaults.gates.ece.threshhold: Extra inputs are not permitted"),
    ("[defaults.gates.ece]\nthreshold = 2\n",
     "policy.toml: defaults.gates.ece.threshold: Input should be less than or equal to 1"),
    ("[models.m.gates.drift]\npsi_warn = 0.3\n",
     "models.m.gates.drift: Value error, psi_warn (0.3) must not exceed psi_fail (0.2)"),
    ("[defaults.gates.comparison]\nmetrics = [\"rmse\"]\n",
     "metric 'rmse' does not apply to task 'binary_classification'"),
    ("[defaults.gates.comparison]\nmetrics = [\"speed\"]\n",
     "defaults.gates.comparison.metrics.0.name: Input should be 'auc'"),
    ("[defaults.gates.conformal]\nregression_score = \"cqr\"\n",
     "regression_score 'cqr' needs lower_output and upper_output"),
    ("[defaults.gates]\ntask = \"ranking\"\n",
     "defaults.gates.task: Input should be 'binary_classification', "
     "'multiclass_classification' or 'regression'"),
])
def test_bad_input_names_the_file_the_key_and_what_is_allowed(text, expected):
    with pytest.raises(PolicyError) as error:
        parse_policy_text(text, "policy.toml")
    assert expected in str(error.value)

"""classifier.metrics against scikit-learn and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

from classifier.metrics import (
    binary_metrics,
    cluster_bootstrap,
    cluster_consistency,
    cluster_means,
    expected_calibration_error,
    fit_platt,
    fit_temperature,
    roc_auc,
    threshold_for_sensitivity,
)


@pytest.fixture
def arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 400)
    scores = np.clip(rng.normal(0.4 + 0.25 * labels, 0.2), 0, 1).round(2)  # ties on purpose
    return labels, scores


def test_roc_auc_matches_sklearn_with_ties_and_weights(arrays: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = arrays
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    weights = np.random.default_rng(1).integers(0, 4, len(labels)).astype(float)
    assert roc_auc(labels, scores, weights) == pytest.approx(
        roc_auc_score(labels, scores, sample_weight=weights)
    )
    assert np.isnan(roc_auc(np.ones(5), np.arange(5)))


def test_binary_metrics_match_sklearn(arrays: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = arrays
    m = binary_metrics(labels, scores, 0.5)
    predicted = (scores >= 0.5).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, predicted).ravel()
    assert (m.tp, m.fp, m.tn, m.fn) == (tp, fp, tn, fn)
    assert m.sensitivity == pytest.approx(recall_score(labels, predicted))
    assert m.specificity == pytest.approx(recall_score(1 - labels, 1 - predicted))
    assert m.precision == pytest.approx(precision_score(labels, predicted))
    assert m.f1 == pytest.approx(f1_score(labels, predicted))
    assert m.accuracy == pytest.approx((tp + tn) / len(labels))


def test_ece_of_known_arrays() -> None:
    # Two bins: 0.2 predicted where 0 % happen (gap 0.2), 0.9 predicted where 100 % happen (gap 0.1).
    probabilities = np.array([0.2, 0.2, 0.9, 0.9])
    labels = np.array([0, 0, 1, 1])
    assert expected_calibration_error(labels, probabilities) == pytest.approx(0.5 * 0.2 + 0.5 * 0.1)
    assert expected_calibration_error(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.0)


def test_threshold_reaches_the_target_sensitivity(arrays: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = arrays
    for target in (0.8, 0.9, 0.95, 1.0):
        t = threshold_for_sensitivity(labels, scores, target)
        assert binary_metrics(labels, scores, t).sensitivity >= target
        above = scores[(labels == 1) & (scores > t)]
        if len(above):  # the next higher candidate would miss the target
            assert binary_metrics(labels, scores, above.min()).sensitivity < target


def test_platt_recovers_a_known_calibration() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, 20000)
    labels = (rng.random(len(logits)) < 1 / (1 + np.exp(-(0.5 * logits - 1.0)))).astype(int)
    fitted = fit_platt(logits, labels)
    assert fitted["a"] == pytest.approx(0.5, abs=0.05) and fitted["b"] == pytest.approx(-1.0, abs=0.08)
    temperature = fit_temperature(
        logits, (rng.random(len(logits)) < 1 / (1 + np.exp(-logits / 2))).astype(int)
    )
    assert temperature["temperature"] == pytest.approx(2.0, rel=0.1)


def test_cluster_means_and_consistency() -> None:
    clusters = np.array(["a", "a", "b", "c", "c", "c"])
    labels = np.array([1, 1, 0, 1, 1, 1])
    ids, cluster_labels, means = cluster_means(clusters, labels, np.array([0.2, 0.4, 0.5, 0.9, 0.6, 0.3]))
    assert ids.tolist() == ["a", "b", "c"] and cluster_labels.tolist() == [1, 0, 1]
    np.testing.assert_allclose(means, [0.3, 0.5, 0.6])
    share, count = cluster_consistency(clusters, np.array([1, 1, 0, 1, 0, 1]))
    assert (share, count) == (0.5, 2)  # a agrees, c does not; b has one image


def test_cluster_bootstrap_resamples_whole_clusters(arrays: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = arrays
    clusters = np.array([f"c{i // 10}" for i in range(len(labels))])
    labels = np.array([int(i // 10 % 2) for i in range(len(labels))])  # one label per cluster
    estimate, low, high = cluster_bootstrap(
        lambda w: roc_auc(labels, scores, w), clusters, labels, n_boot=300
    )
    assert estimate == pytest.approx(roc_auc(labels, scores))
    assert low <= estimate <= high and high - low > 0.02
    again = cluster_bootstrap(lambda w: roc_auc(labels, scores, w), clusters, labels, n_boot=300)
    assert again == (estimate, low, high)
    # Bigger correlated clusters -> wider interval than treating images as independent.
    singles = np.array([f"s{i}" for i in range(len(labels))])
    _, low1, high1 = cluster_bootstrap(lambda w: roc_auc(labels, scores, w), singles, labels, n_boot=300)
    assert high1 - low1 < high - low

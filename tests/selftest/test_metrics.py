"""Metric math on vectors whose answers are known by hand."""

import math

import pytest
import torch

from csm_conformance.accuracy import metrics

pytestmark = pytest.mark.selftest


def test_cosine_identical_orthogonal_opposite():
    a = torch.tensor([1.0, 2.0, 3.0])
    assert metrics.cosine(a, a) == pytest.approx(1.0)
    assert metrics.cosine(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])) == pytest.approx(0.0)
    assert metrics.cosine(a, -a) == pytest.approx(-1.0)


def test_logits_metrics_known_values():
    ref = torch.tensor([[3.0, 0.0, 4.0], [1.0, 2.0, 2.0]])  # norm sqrt(34)
    dev = ref.clone()
    dev[0, 0] += 0.5  # one element off by 0.5
    m = metrics.logits_metrics(ref, dev)
    assert m["rel_error"] == pytest.approx(0.5 / math.sqrt(34))
    assert m["mae"] == pytest.approx(0.5 / 6)
    assert m["max_abs_error"] == pytest.approx(0.5)
    assert m["argmax_agreement"] == pytest.approx(1.0)
    expected_row0 = (3.5 * 3 + 16) / (5 * math.sqrt(3.5**2 + 16))
    assert m["worst_position_cosine"] == pytest.approx(expected_row0)
    assert m["kl_divergence"] > 0


def test_argmax_agreement_counts_flips():
    ref = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    dev = ref.clone()
    dev[0] = torch.tensor([0.0, 1.0])
    assert metrics.logits_metrics(ref, dev)["argmax_agreement"] == pytest.approx(0.75)


def test_kl_of_known_distributions():
    p = torch.log(torch.tensor([[0.5, 0.5]]))
    q = torch.log(torch.tensor([[0.9, 0.1]]))
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert metrics.logits_metrics(p, q)["kl_divergence"] == pytest.approx(expected)
    assert metrics.logits_metrics(p, p)["kl_divergence"] == 0.0


def test_snr_of_known_noise():
    signal = torch.ones(1000)
    noisy = signal + 0.1  # noise power 0.01 -> 20 dB
    assert metrics.waveform_metrics(signal, noisy)["snr_db"] == pytest.approx(20.0)
    assert metrics.waveform_metrics(signal, signal)["snr_db"] == math.inf


def test_code_agreement_and_shape_checks():
    a = torch.tensor([[1, 2], [3, 4]])
    assert metrics.code_agreement(a, torch.tensor([[1, 2], [3, 0]]))["code_agreement"] == 0.75
    with pytest.raises(ValueError, match="shape mismatch"):
        metrics.logits_metrics(torch.zeros(2, 3), torch.zeros(3, 3))


def test_nan_never_passes_a_bound():
    assert not metrics.is_within("cosine", float("nan"), 0.9)
    assert not metrics.is_within("rel_error", float("nan"), 1.0)
    assert metrics.nonfinite_count(torch.tensor([1.0, float("nan"), float("inf")])) == 2


@pytest.mark.parametrize("metric", sorted(metrics.METRICS))
def test_error_form_round_trips(metric):
    value = {"snr_db": 35.0}.get(metric, 0.9 if metrics.METRICS[metric].better == "higher" else 0.01)
    assert metrics.from_error(metric, metrics.to_error(metric, value)) == pytest.approx(value)


def test_argmax_agreement_leaves_out_near_ties_of_the_device_dtype():
    """A top-1/top-2 margin inside bfloat16's resolution may flip legitimately; a clear one may not."""
    ref = torch.tensor([[4.0, 4.0 + 1e-3, 0.0], [4.0, 1.0, 0.0]])  # position 0: a near tie
    dev = torch.tensor([[4.0 + 2e-3, 4.0, 0.0], [4.0, 1.0, 0.0]])  # its top-1 flips
    assert metrics.near_ties(ref, torch.bfloat16).tolist() == [True, False]
    assert metrics.logits_metrics(ref, dev)["argmax_agreement"] == 0.5  # no dtype: every position counts
    assert metrics.logits_metrics(ref, dev, torch.bfloat16)["argmax_agreement"] == 1.0
    assert metrics.logits_metrics(ref, dev, torch.float32)["argmax_agreement"] == 0.5  # not a tie at float32
    flipped = torch.tensor([[4.0 + 2e-3, 4.0, 0.0], [1.0, 4.0, 0.0]])  # position 1 flips a clear margin
    assert metrics.logits_metrics(ref, flipped, torch.bfloat16)["argmax_agreement"] == 0.0


def test_rel_error_is_normwise():
    assert metrics.rel_error(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 4.0]) * 1.01) == pytest.approx(0.01)

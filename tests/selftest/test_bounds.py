"""Recording, storing and judging per-case bounds."""

import json

import pytest

from csm_conformance.accuracy import bounds, metrics

pytestmark = pytest.mark.selftest


def test_recorded_bound_gives_margin_in_error_form():
    # cosine 0.99996 -> error 4e-5 -> with 50 % margin 6e-5 (+1e-7 floor)
    assert bounds.bound_from_measurement("cosine", 0.99996, 0.5) == pytest.approx(1 - 6.01e-5)
    assert bounds.bound_from_measurement("rel_error", 0.008, 0.5) == pytest.approx(0.012 + 1e-6)
    assert bounds.bound_from_measurement("argmax_agreement", 0.95, 1.0) == pytest.approx(0.90)
    # SNR 40 dB with 100 % margin: noise ratio doubles -> about 37 dB
    assert bounds.bound_from_measurement("snr_db", 40.0, 1.0) == pytest.approx(36.99, abs=0.01)


def test_exact_match_still_gets_a_floor():
    assert bounds.bound_from_measurement("rel_error", 0.0, 0.5) == metrics.floor("rel_error")
    assert bounds.bound_from_measurement("cosine", 1.0, 0.5) < 1.0


def test_every_metric_has_a_floor():
    assert all(m.floor >= 0 and m.column and m.better in ("higher", "lower") for m in metrics.METRICS.values())


def test_round_trip_and_judgement(tmp_path):
    doc = bounds.build_bounds({"short_en": {"backbone_logits": {"cosine": 0.99996, "rel_error": 0.008}}}, 0.5,
                              {"model": {"weights_digest": "sha256:abc"}})
    path = tmp_path / "b.json"
    bounds.write_bounds(path, doc)
    book = bounds.BoundsBook.load(path)
    b = book.bound("short_en", "backbone_logits", "rel_error")
    assert metrics.is_within("rel_error", 0.0119, b)
    assert not metrics.is_within("rel_error", 0.0121, b)
    assert book.bound("short_en", "depth_logits", "rel_error") is None
    book.check_weights("sha256:abc")
    with pytest.raises(bounds.BaselineError, match="re-record"):
        book.check_weights("sha256:other")


def test_missing_file_is_none_and_corrupt_file_is_one_line_error(tmp_path):
    assert bounds.BoundsBook.load(tmp_path / "absent.json") is None
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(bounds.BaselineError, match="corrupt") as err:
        bounds.BoundsBook.load(bad)
    assert "\n" not in str(err.value)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"schema": 1, "cases": {"a": {"b": {"cosine": {"bound": "high"}}}}}))
    with pytest.raises(bounds.BaselineError, match="bad entry"):
        bounds.BoundsBook.load(wrong)


def test_merge_keeps_cases_not_measured(tmp_path):
    path = tmp_path / "b.json"
    bounds.write_bounds(path, bounds.build_bounds({"a": {"c": {"mae": 0.1}}}, 0.5, {}))
    old = bounds.BoundsBook.load(path)
    bounds.write_bounds(path, bounds.build_bounds({"b": {"c": {"mae": 0.2}}}, 0.5, {}), merge_with=old)
    merged = bounds.BoundsBook.load(path)
    assert merged.bound("a", "c", "mae") is not None and merged.bound("b", "c", "mae") is not None


def test_merge_keeps_the_checks_not_measured_and_the_files_description(tmp_path):
    """Recording one check (`-k decode_loop`) adds its bounds beside the case's other checks, keeps
    the stored file's description and notes, and says in a note what it recorded, where and how."""
    path = tmp_path / "b.json"
    first = bounds.build_bounds({"a": {"c": {"mae": 0.1}}}, 0.5, {"device": {"name": "old cpu"}, "notes": ["hand note"]})
    bounds.write_bounds(path, first)
    old = bounds.BoundsBook.load(path)
    bounds.write_bounds(path, bounds.build_bounds({"a": {"loop": {"mae": 0.2}}}, 1.0, {"device": {"name": "new cpu"}, "versions": {"torch": "x"}}),
                        merge_with=old)
    merged = bounds.BoundsBook.load(path)
    assert merged.bound("a", "c", "mae") == old.bound("a", "c", "mae") and merged.bound("a", "loop", "mae") is not None
    assert merged.data["device"] == {"name": "old cpu"} and merged.data["margin"] == 0.5
    assert merged.data["notes"][0] == "hand note"
    assert "loop bounds of 1 case(s) recorded on new cpu ({'torch': 'x'}) with margin 1, merged into this file" in merged.data["notes"][1]
    bounds.write_bounds(path, bounds.build_bounds({"a": {"c": {"mae": 0.3}, "loop": {"mae": 0.3}}}, 0.5, {"device": {"name": "new cpu"}}),
                        merge_with=merged)
    again = bounds.BoundsBook.load(path)  # everything re-recorded: the new run's description
    assert again.data["device"] == {"name": "new cpu"} and "notes" not in again.data


def test_module_qualified_metrics_are_judged_as_their_kind(tmp_path):
    """The module_local check stores one `rel_error@<module>` per module; it is a rel_error in
    every respect (direction, floor, error form), and a qualifier on an unknown metric is still
    a corrupt file."""
    name = "rel_error@backbone_model.layers.0.mlp"
    assert metrics.known(name) and metrics.better(name) == "lower"
    assert bounds.bound_from_measurement(name, 0.0055, 0.5) == pytest.approx(0.00825 + 1e-6)
    assert metrics.is_within(name, 0.008, 0.00825) and not metrics.is_within(name, 0.0111, 0.00825)
    doc = bounds.build_bounds({"short_en": {"module_local": {name: 0.0055, "bogus@x": 1.0}}}, 0.5, {})
    assert list(doc["cases"]["short_en"]["module_local"]) == [name]
    path = tmp_path / "b.json"
    path.write_text(json.dumps(doc))
    assert bounds.BoundsBook.load(path).bound("short_en", "module_local", name) == pytest.approx(0.00825 + 1e-6)
    doc["cases"]["short_en"]["module_local"]["bogus@x"] = {"measured": 1.0, "bound": 1.5}
    path.write_text(json.dumps(doc))
    with pytest.raises(bounds.BaselineError, match="bad entry at short_en/module_local/bogus@x"):
        bounds.BoundsBook.load(path)

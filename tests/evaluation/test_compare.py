"""The counts an evaluation keeps (counts.npz) and the paired bootstrap of `wnet compare`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bsds_data import BENCH, bench_tree
from typer.testing import CliRunner

from wnetcli.cli import app
from wnetcli.errors import InputError
from wnetcli.evaluation import RunCounts, compare_runs
from wnetcli.evaluation.counts import COUNTS_FILE, MEASURES

runner = CliRunner()


def synthetic_run(n_images: int = 40, n_thresholds: int = 6, seed: int = 0, name: str = "a") -> RunCounts:
    """Plausible counts: recall falls and precision rises with the threshold, regions coarsen."""
    rng = np.random.default_rng(seed)
    sum_r = rng.integers(2000, 4000, size=(n_images, 1)).repeat(n_thresholds, axis=1)
    falling = np.linspace(0.9, 0.3, n_thresholds)[None, :]
    cnt_r = np.round(sum_r * np.clip(falling + rng.normal(0, 0.05, sum_r.shape), 0, 1))
    sum_p = np.round(sum_r * np.linspace(2.0, 0.4, n_thresholds)[None, :] * rng.uniform(0.8, 1.2, (n_images, 1)))
    rising = np.linspace(0.35, 0.9, n_thresholds)[None, :]
    cnt_p = np.round(sum_p * np.clip(rising + rng.normal(0, 0.05, sum_p.shape), 0, 1))
    boundary = np.stack([cnt_r, sum_r, cnt_p, sum_p], axis=-1).astype(np.int64)
    den = rng.uniform(5e5, 8e5, n_images)
    bump = np.sin(np.linspace(0.3, 2.8, n_thresholds))[None, :]
    cover = np.clip(0.35 + 0.3 * bump + rng.normal(0, 0.05, (n_images, n_thresholds)), 0.05, 0.95)
    regions = {
        "cover_num": cover * den[:, None],
        "cover_den": den,
        "best_num": cover.max(axis=1) * den * 1.1,
        "pri": np.clip(0.7 + 0.15 * bump + rng.normal(0, 0.03, cover.shape), 0, 1),
        "vi": 2.5 - 0.9 * bump + rng.normal(0, 0.1, cover.shape),
    }
    return RunCounts(
        method=name,
        kind="ucm2",
        ids=tuple(f"img{k:03d}" for k in range(n_images)),
        thresholds=np.linspace(0.1, 0.9, n_thresholds),
        boundary=boundary,
        regions=regions,
    )


def improved(run: RunCounts, name: str = "b") -> RunCounts:
    """The same run, better on every image at every threshold by every measure."""
    cnt_r, sum_r, cnt_p, sum_p = np.moveaxis(run.boundary, -1, 0)
    boundary = np.stack(
        [np.minimum(sum_r, cnt_r + sum_r // 10), sum_r, np.minimum(sum_p, cnt_p + sum_p // 10), sum_p], axis=-1
    )
    regions = dict(run.regions)
    regions["cover_num"] = np.minimum(regions["cover_num"] * 1.05, regions["cover_den"][:, None])
    regions["best_num"] = regions["best_num"] * 1.05
    regions["pri"] = np.minimum(regions["pri"] + 0.02, 1.0)
    regions["vi"] = regions["vi"] - 0.1
    return RunCounts(name, run.kind, run.ids, run.thresholds, boundary, regions)


def reordered(run: RunCounts, order: np.ndarray) -> RunCounts:
    regions = {k: v[order] for k, v in run.regions.items()}
    ids = tuple(run.ids[k] for k in order)
    return RunCounts(run.method, run.kind, ids, run.thresholds, run.boundary[order], regions)


def test_counts_round_trip_through_the_file(tmp_path):
    run = synthetic_run()
    run.save(tmp_path / COUNTS_FILE)
    loaded = RunCounts.load(tmp_path)  # the folder finds its counts.npz
    assert (loaded.method, loaded.kind, loaded.ids) == (run.method, run.kind, run.ids)
    np.testing.assert_array_equal(loaded.thresholds, run.thresholds)
    np.testing.assert_array_equal(loaded.boundary, run.boundary)
    for name, values in run.regions.items():
        np.testing.assert_array_equal(loaded.regions[name], values)
    assert loaded.scores() == run.scores()
    assert list(loaded.scores()) == [name for name, _ in MEASURES]


def test_a_missing_or_broken_counts_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no counts.npz"):
        RunCounts.load(tmp_path)
    (tmp_path / COUNTS_FILE).write_bytes(b"not a zip file")
    with pytest.raises(InputError, match="cannot read"):
        RunCounts.load(tmp_path)
    (tmp_path / "empty").write_bytes(b"")  # np.load raises EOFError on it
    with pytest.raises(InputError, match="cannot read the counts in .*empty .*EOFError"):
        RunCounts.load(tmp_path / "empty")
    # A path that is not there is named as given, not by its parent folder.
    with pytest.raises(InputError, match=r"^not found: .*nothere[/\\]deeper$"):
        RunCounts.load(tmp_path / "nothere" / "deeper")


def test_scores_of_a_draw_rescore_the_drawn_images():
    run = synthetic_run()
    twice = np.concatenate([np.arange(len(run.ids))] * 2)
    # Every image twice: sums double, means stay, so every measure is unchanged.
    for name, value in run.scores(twice).items():
        assert value == pytest.approx(run.scores()[name], abs=1e-12), name
    first_half = np.arange(len(run.ids) // 2)
    assert run.scores(first_half) != run.scores()


def test_a_run_against_itself_differs_by_nothing():
    run = synthetic_run()
    result = compare_runs(run, run, resamples=50)
    assert result.images == len(run.ids)
    for m in result.measures:
        assert m.difference == 0 and m.low == 0 and m.high == 0
        assert m.better_share == 0.5  # every draw a tie
        assert m.verdict == "unclear"


def test_a_candidate_better_on_every_image_is_better_on_every_measure():
    run = synthetic_run()
    result = compare_runs(run, improved(run), resamples=200)
    assert [m.name for m in result.measures] == [name for name, _ in MEASURES]
    for m in result.measures:
        assert m.verdict == "better", m
        assert m.better_share == 1.0
        assert (m.low > 0) if m.higher_is_better else (m.high < 0)
    # And the other way round.
    assert {m.verdict for m in compare_runs(improved(run), run, resamples=200).measures} == {"worse"}


def test_a_small_gain_on_every_image_is_established_because_the_draws_are_paired():
    run = synthetic_run()
    regions = dict(run.regions)
    # Far smaller than the spread between images (0.03 of PRI, 0.1 of VI): only pairing sees it.
    regions["pri"] = regions["pri"] + 0.002
    regions["vi"] = regions["vi"] - 0.005
    slightly = RunCounts("b", run.kind, run.ids, run.thresholds, run.boundary, regions)
    by_name = {m.name: m for m in compare_runs(run, slightly, resamples=200).measures}
    for name in ("PRI ODS", "PRI OIS", "VI ODS", "VI OIS"):
        assert by_name[name].verdict == "better", by_name[name]
    assert by_name["covering ODS"].verdict == "unclear"  # unchanged


def test_a_difference_from_a_few_images_is_not_established():
    run = synthetic_run(n_images=40)
    better = improved(run)
    # The candidate helps one image in forty: a real but tiny gain that the draws cannot tell
    # from chance for the data-set measures.
    boundary = run.boundary.copy()
    boundary[0] = better.boundary[0]
    regions = {k: v.copy() for k, v in run.regions.items()}
    for name in ("cover_num", "pri", "vi"):
        regions[name][0] = better.regions[name][0]
    one_image = RunCounts("b", run.kind, run.ids, run.thresholds, boundary, regions)
    result = compare_runs(run, one_image, resamples=500)
    by_name = {m.name: m for m in result.measures}
    for name in ("covering ODS", "PRI ODS", "VI ODS", "boundary F ODS"):
        assert by_name[name].verdict == "unclear", by_name[name]
        assert 0.5 < by_name[name].better_share < 1.0


def test_images_are_paired_by_id_not_by_position():
    run, other = synthetic_run(seed=0), improved(synthetic_run(seed=0))
    shuffled = reordered(other, np.random.default_rng(3).permutation(len(other.ids)))
    a = compare_runs(run, other, resamples=100, seed=7)
    b = compare_runs(run, shuffled, resamples=100, seed=7)
    assert a.to_dict() == b.to_dict()


def test_the_same_seed_gives_the_same_intervals():
    run, other = synthetic_run(seed=0), synthetic_run(seed=1, name="b")
    assert compare_runs(run, other, resamples=100, seed=5) == compare_runs(run, other, resamples=100, seed=5)
    assert compare_runs(run, other, resamples=100, seed=5) != compare_runs(run, other, resamples=100, seed=6)


def test_runs_over_different_images_are_refused():
    run = synthetic_run(n_images=10)
    regions = {k: v[:8] for k, v in run.regions.items()}
    fewer = RunCounts("b", run.kind, run.ids[:8], run.thresholds, run.boundary[:8], regions)
    with pytest.raises(InputError, match="2 only in the baseline, 0 only in the candidate"):
        compare_runs(run, fewer)


def test_thresholds_may_differ_and_only_shared_measures_are_compared():
    run = synthetic_run(n_thresholds=6)
    coarser = synthetic_run(n_thresholds=4, seed=2, name="b")
    boundary_only = RunCounts("c", "soft", coarser.ids, coarser.thresholds, coarser.boundary, None)
    names = [m.name for m in compare_runs(run, boundary_only, resamples=20).measures]
    assert names == ["boundary F ODS", "boundary F OIS", "boundary AP"]
    regions_only = RunCounts("d", "ucm2", run.ids, run.thresholds, None, run.regions)
    with pytest.raises(InputError, match="share no measure"):
        compare_runs(boundary_only, regions_only, resamples=20)


@pytest.mark.parametrize(("resamples", "confidence"), [(5, 0.95), (100, 1.0), (100, 0.0)])
def test_settings_out_of_range_are_refused(resamples, confidence):
    run = synthetic_run(n_images=5)
    with pytest.raises(InputError):
        compare_runs(run, run, resamples=resamples, confidence=confidence)


@pytest.mark.needs_data
def test_evaluate_keeps_counts_that_reproduce_its_metrics_and_compare_reads_them(tmp_path):
    bsds = bench_tree(tmp_path / "bsds", count=3)
    runs = {}
    for name, thresholds in (("ucm2-5", "5"), ("ucm2-9", "9")):
        out = tmp_path / name
        args = ["evaluate", "--bsds", str(bsds), "--split", "val", "--results", str(BENCH / "ucm2")]
        result = runner.invoke(app, [*args, "--thresholds", thresholds, "--out", str(out)])
        assert result.exit_code == 0, result.output
        runs[name] = out
    metrics = json.loads((runs["ucm2-5"] / "metrics.json").read_text())
    scores = RunCounts.load(runs["ucm2-5"]).scores()
    assert scores["boundary F ODS"] == pytest.approx(metrics["boundary"]["ods"]["f"], abs=1e-12)
    assert scores["boundary AP"] == pytest.approx(metrics["boundary"]["ap"], abs=1e-12)
    assert scores["covering ODS"] == pytest.approx(metrics["covering"]["ods"], abs=1e-12)
    assert scores["covering Best"] == pytest.approx(metrics["covering"]["best"], abs=1e-12)
    assert scores["PRI OIS"] == pytest.approx(metrics["pri"]["ois"], abs=1e-12)
    assert scores["VI ODS"] == pytest.approx(metrics["vi"]["ods"], abs=1e-12)

    report = tmp_path / "comparison.json"
    args = ["compare", str(runs["ucm2-5"]), str(runs["ucm2-9"]), "--resamples", "50", "--out", str(report)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "covering ODS" in result.output and "95% interval" in result.output
    written = json.loads(report.read_text())
    assert written["images"] == 3 and written["resamples"] == 50
    assert set(written["measures"]) == {name for name, _ in MEASURES}
    assert written["measures"]["covering ODS"]["baseline"] == pytest.approx(metrics["covering"]["ods"], abs=1e-12)


def test_compare_without_counts_is_a_one_line_error(tmp_path):
    (tmp_path / "a").mkdir()
    result = runner.invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "a")])
    assert result.exit_code == 1
    assert "no counts.npz" in result.output
    assert "Traceback" not in result.output

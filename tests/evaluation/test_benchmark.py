"""wnetcli.evaluation: the BSDS benchmark against the official self-test, and its building blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wnetcli.errors import DataError, InputError
from wnetcli.evaluation import (
    EvaluationOptions,
    ResultsDir,
    evaluate,
    find_split,
    load_ground_truth,
    pair_folder,
    read_prediction,
    thresholds_for,
)
from wnetcli.evaluation.boundary import BoundaryGroundTruth, Matching, _matching, boundary_scores, thin
from wnetcli.evaluation.regions import RegionGroundTruth

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BENCH = DATA / "bsds500-bench"

needs_bench = pytest.mark.skipif(not BENCH.is_dir(), reason=f"BSDS bench data not found at {BENCH}")


# --- the official self-test ------------------------------------------------------------------


def golden(test: str, name: str) -> np.ndarray:
    return np.atleast_2d(np.loadtxt(BENCH / test / name))


@pytest.fixture(scope="module")
def bench_results():
    """The three input kinds of the bench scored once (5 images, 5 thresholds)."""
    images = pair_folder(BENCH / "images", BENCH / "groundTruth")
    options = EvaluationOptions(thresholds=5)
    return {kind: evaluate(images, ResultsDir(BENCH / kind), options) for kind in ("ucm2", "png", "segs")}


# (golden folder, result kind) for every boundary and every region reference.
BOUNDARY_CASES = [("test_1", "ucm2"), ("test_2", "png"), ("test_3", "segs"), ("test_4", "segs")]
REGION_CASES = [("test_1", "ucm2"), ("test_4", "segs"), ("test_5", "segs")]


@needs_bench
@pytest.mark.needs_data
@pytest.mark.parametrize(("test", "kind"), BOUNDARY_CASES)
def test_boundary_benchmark_reproduces_the_official_results(bench_results, test, kind):
    b = bench_results[kind].boundary
    summary = golden(test, "eval_bdry.txt")[0]
    ours = [b.ods_threshold, b.ods_recall, b.ods_precision, b.ods_f, b.ois_recall, b.ois_precision, b.ois_f, b.ap]
    # The official matcher is randomized and slightly below a maximum matching (see boundary.py).
    np.testing.assert_allclose(ours, summary, atol=2e-3)
    np.testing.assert_allclose(b.per_threshold, golden(test, "eval_bdry_thr.txt"), atol=2e-3)
    per_image = golden(test, "eval_bdry_img.txt")
    np.testing.assert_allclose(b.per_image[:, 1:], per_image[:, 2:], atol=3e-3)


@needs_bench
@pytest.mark.needs_data
@pytest.mark.parametrize(("test", "kind"), REGION_CASES)
def test_region_benchmark_reproduces_the_official_results(bench_results, test, kind):
    r = bench_results[kind].regions
    cover = golden(test, "eval_cover.txt")[0]
    np.testing.assert_allclose(
        [r.covering_ods_threshold, r.covering_ods, r.covering_ois, r.covering_best], cover, atol=1e-4
    )
    np.testing.assert_allclose(r.per_threshold[:, :2], golden(test, "eval_cover_th.txt"), atol=1e-4)
    per_image = golden(test, "eval_cover_img.txt")
    np.testing.assert_allclose(r.per_image[:, :2], per_image[:, 1:3], atol=1e-4)
    ri_voi = golden(test, "eval_RI_VOI.txt")[0]
    ours = [r.pri_ods_threshold, r.pri_ods, r.pri_ois, r.vi_ods_threshold, r.vi_ods, r.vi_ois]
    np.testing.assert_allclose(ours, ri_voi, atol=1e-4)
    np.testing.assert_allclose(r.per_threshold[:, [0, 2, 3]], golden(test, "eval_RI_VOI_thr.txt"), atol=1e-4)


@needs_bench
@pytest.mark.needs_data
def test_parallel_jobs_give_the_same_counts(bench_results):
    images = pair_folder(BENCH / "images", BENCH / "groundTruth")[:2]
    parallel = evaluate(images, ResultsDir(BENCH / "ucm2"), EvaluationOptions(thresholds=5, jobs=2))
    serial = bench_results["ucm2"]
    for a, b in zip(parallel.images, serial.images[:2], strict=True):
        assert a.id == b.id
        np.testing.assert_array_equal(a.boundary, b.boundary)
        np.testing.assert_array_equal(a.regions.cover_num, b.regions.cover_num)


@needs_bench
@pytest.mark.needs_data
def test_saved_predictions_score_the_same_again(tmp_path, bench_results):
    images = pair_folder(BENCH / "images", BENCH / "groundTruth")[:2]
    options = EvaluationOptions(thresholds=5, save_dir=tmp_path / "results")
    evaluate(images, ResultsDir(BENCH / "segs"), options)
    again = evaluate(images, ResultsDir(tmp_path / "results"), EvaluationOptions(thresholds=5))
    for a, b in zip(again.images, bench_results["segs"].images[:2], strict=True):
        np.testing.assert_array_equal(a.boundary, b.boundary)
        np.testing.assert_allclose(a.regions.pri, b.regions.pri)


# --- thinning and matching -------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "quantile"), [(0, 0.5), (1, 0.86), (2, 0.9), (3, 0.95)])
def test_thin_equals_skimage_thin(seed, quantile):
    from scipy import ndimage as ndi
    from skimage.morphology import thin as skimage_thin

    rng = np.random.default_rng(seed)
    blobs = ndi.gaussian_filter(rng.random((60, 80)), 2.0)
    bmap = blobs > np.quantile(blobs, quantile)  # 0.5: the dense path, the others: the sparse one
    bmap[0, :10] = True  # blobs touching the border too
    np.testing.assert_array_equal(thin(bmap), skimage_thin(bmap))


def test_matching_is_maximum_where_nearest_first_would_not_be():
    # Machine pixels a (x=0) and b (x=-4), human pixels c (x=0) and d (x=+4), radius 4.33:
    # pairing the coincident a-c first leaves b alone; the maximum matching is a-d, b-c.
    edge_m = np.array([0, 0, 1])
    edge_g = np.array([0, 1, 0])
    dist2 = np.array([0, 16, 16])
    mate = _matching(edge_m, edge_g, dist2, 2, 2)
    assert (mate >= 0).sum() == 2


def test_warm_started_matchings_stay_maximum():
    # A sequence of maps that lose and gain pixels, scored with and without the carried-over
    # matchings: the matched human counts (maximum matchings) must agree exactly.
    rng = np.random.default_rng(3)
    human = [np.zeros((60, 60), dtype=bool) for _ in range(2)]
    human[0][20, 5:55] = human[0][5:55, 30] = True
    human[1][22, 5:55] = human[1][40, 10:50] = True
    gt = BoundaryGroundTruth(human, max_dist=0.05)  # radius 4.2 px
    noise = rng.random((60, 60))
    maps = [thin(noise < p) for p in (0.5, 0.4, 0.3, 0.3, 0.2, 0.25, 0.1)]
    warm = Matching()
    for bmap in maps:
        cold = gt.match(bmap)
        again = gt.match(bmap, warm)
        assert again[:2] == cold[:2] and again[3] == cold[3]
        assert abs(again[2] - cold[2]) <= 0.01 * max(1, cold[3])


def test_match_counts_on_a_shifted_line():
    human = np.zeros((50, 50), dtype=bool)
    human[25, 5:45] = True
    gt = BoundaryGroundTruth([human, human])
    assert gt.radius == pytest.approx(0.0075 * np.hypot(50, 50))
    cnt_r, sum_r, cnt_p, sum_p = gt.match(human.copy())
    assert (cnt_r, sum_r, cnt_p, sum_p) == (80, 80, 40, 40)
    shifted = np.roll(human, 1, axis=0)  # 1 px away: outside the 0.53 px radius of a 50x50 image
    assert gt.match(shifted)[0] == 0
    big = BoundaryGroundTruth([np.pad(human, 100)])  # 250x250: radius 2.65 px
    assert big.match(np.roll(np.pad(human, 100), 2, axis=0))[:2] == (40, 40)
    assert big.match(np.roll(np.pad(human, 100), 3, axis=0))[0] == 0
    assert gt.match(np.zeros_like(human)) == (0, 80, 0, 0)


def test_boundary_scores_ods_interpolates_and_ois_picks_per_image():
    thresholds = [0.25, 0.5, 0.75]
    # counts: cnt_r, sum_r, cnt_p, sum_p for 2 images x 3 thresholds
    counts = np.array(
        [
            [[90, 100, 50, 100], [60, 100, 55, 60], [10, 100, 10, 10]],
            [[80, 100, 40, 100], [70, 100, 60, 70], [20, 100, 20, 20]],
        ]
    )
    scores = boundary_scores(thresholds, counts)
    f_at_thresholds = scores.per_threshold[:, 3]
    assert scores.ods_f >= f_at_thresholds.max()
    assert 0.25 <= scores.ods_threshold <= 0.75
    # image 1's best is threshold 0.5 (F 0.846 > 0.643), image 2's as well
    np.testing.assert_allclose(scores.per_image[:, 0], [0.5, 0.5])
    assert scores.ois_recall == pytest.approx(130 / 200)
    assert scores.ois_precision == pytest.approx(115 / 130)
    assert 0 < scores.ap <= 1


# --- region measures -------------------------------------------------------------------------


def test_identical_segmentation_scores_perfectly():
    seg = np.repeat(np.arange(4), 25).reshape(10, 10) + 1
    gt = RegionGroundTruth([seg, seg])
    overlaps, pri, vi = gt.measure(seg * 7)  # relabelled: same partition
    np.testing.assert_allclose(overlaps, 1.0)
    assert pri == pytest.approx(1.0)
    assert vi == pytest.approx(0.0, abs=1e-12)


def test_trivial_segmentation_against_closed_forms():
    rng = np.random.default_rng(0)
    human = rng.integers(1, 4, size=(12, 10))
    n = human.size
    sizes = np.bincount(human.ravel())[1:].astype(float)
    gt = RegionGroundTruth([human])
    overlaps, pri, vi = gt.measure(np.zeros_like(human))  # one region
    np.testing.assert_allclose(overlaps, sizes / n)  # region R' inside the whole image: |R'| / N
    expected_ri = 1 - 0.5 * (n**2 - (sizes**2).sum()) / (n * (n - 1) / 2)
    assert pri == pytest.approx(expected_ri)
    p = sizes / n
    assert vi == pytest.approx(-(p * np.log2(p)).sum())  # VI = H(G) when S has one region


# --- data set and result files ---------------------------------------------------------------


def test_find_split_reports_a_missing_layout(tmp_path):
    with pytest.raises(DataError, match="not a BSDS500 folder"):
        find_split(tmp_path, "val")
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "groundTruth").mkdir()
    with pytest.raises(DataError, match="split 'val' not found"):
        find_split(tmp_path, "val")
    with pytest.raises(DataError, match="split must be one of"):
        find_split(tmp_path, "dev")


def test_find_split_names_the_image_without_annotations(tmp_path):
    from PIL import Image

    base = tmp_path / "BSR" / "BSDS500" / "data"
    (base / "images" / "test").mkdir(parents=True)
    (base / "groundTruth" / "test").mkdir(parents=True)
    Image.new("RGB", (4, 3)).save(base / "images" / "test" / "42.jpg")
    with pytest.raises(DataError, match="42.mat is missing"):
        find_split(tmp_path, "test")


def test_load_ground_truth_rejects_bad_files(tmp_path):
    from scipy.io import savemat

    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="junk.mat"):
        load_ground_truth(junk)
    other = tmp_path / "other.mat"
    savemat(other, {"something": np.zeros(3)})
    with pytest.raises(DataError, match="no variable 'groundTruth'"):
        load_ground_truth(other)


def test_read_prediction_formats(tmp_path):
    from PIL import Image
    from scipy.io import savemat

    shape = (3, 4)
    ucm2 = np.zeros((7, 9))
    ucm2[2, :] = 0.5
    np.save(tmp_path / "a.npy", ucm2)
    assert read_prediction(tmp_path / "a.npy", shape).kind == "ucm2"
    Image.fromarray((ucm2 * 65535).astype(np.uint16)).save(tmp_path / "a.ucm.png")
    png = read_prediction(tmp_path / "a.ucm.png", shape)
    assert png.kind == "ucm2"
    np.testing.assert_allclose(png.data, ucm2, atol=1e-4)
    Image.fromarray(np.full(shape, 255, dtype=np.uint8)).save(tmp_path / "soft.png")
    soft = read_prediction(tmp_path / "soft.png", shape)
    assert soft.kind == "soft"
    np.testing.assert_allclose(soft.data, 1.0)
    cells = np.empty((1, 2), dtype=object)
    cells[0, 0], cells[0, 1] = np.ones(shape, np.uint16), np.arange(12, dtype=np.uint16).reshape(shape)
    savemat(tmp_path / "s.mat", {"segs": cells})
    segs = read_prediction(tmp_path / "s.mat", shape)
    assert segs.kind == "segs"
    assert len(segs.data) == 2
    folder = tmp_path / "levels"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(np.full(shape, k, dtype=np.uint8)).save(folder / f"{k}.png")
    assert len(read_prediction(folder, shape).data) == 3
    with pytest.raises(InputError, match="expected"):
        read_prediction(tmp_path / "a.npy", (5, 5))


def test_results_dir_names_the_missing_result(tmp_path):
    with pytest.raises(InputError, match="not found"):
        ResultsDir(tmp_path / "nowhere")
    with pytest.raises(InputError, match="no result for image 77"):
        ResultsDir(tmp_path).locate("77")


def test_thresholds_are_the_official_ones():
    np.testing.assert_allclose(thresholds_for(5), [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])
    assert thresholds_for(99)[0] == pytest.approx(0.01)


def test_machine_pixels_far_from_every_human_pixel_are_unmatched():
    human = np.zeros((100, 100), dtype=bool)
    human[10, 10:20] = True
    machine = np.zeros_like(human)
    machine[80, 70:90] = True
    assert BoundaryGroundTruth([human]).match(machine) == (0, 10, 0, 20)


def test_predictions_that_cannot_be_scored_are_input_errors():
    from wnetcli.evaluation.inputs import Prediction

    ucm2 = np.zeros((7, 9), np.float32)
    assert Prediction("ucm2", ucm2).check((3, 4), "m on x") is not None
    ucm2[1, 1] = np.nan
    with pytest.raises(InputError, match="m on x: the ucm2 map holds NaN or infinite values"):
        Prediction("ucm2", ucm2).check((3, 4), "m on x")
    with pytest.raises(InputError, match=r"a \.png is read as a soft boundary map"):
        Prediction("soft", np.zeros((7, 9))).check((5, 5), "x.png")

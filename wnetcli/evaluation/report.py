"""Writing benchmark results: ``metrics.json``, per-image and per-threshold CSVs, the PR plot.

The CSVs carry the columns of the official ``eval_*.txt`` files, with a header row:

- ``eval_bdry.csv``: ``threshold, ods_recall, ods_precision, ods_f, ois_recall, ois_precision, ois_f, ap``
- ``eval_bdry_thr.csv``: ``threshold, recall, precision, f``
- ``eval_bdry_img.csv``: ``image, threshold, recall, precision, f`` (at the image's best threshold)
- ``eval_cover.csv``: ``threshold, ods, ois, best``; ``eval_cover_thr.csv``: ``threshold, covering``
- ``eval_cover_img.csv``: ``image, threshold, covering, best``
- ``eval_RI_VOI.csv``: ``pri_threshold, pri_ods, pri_ois, vi_threshold, vi_ods, vi_ois``
- ``eval_RI_VOI_thr.csv``: ``threshold, pri, vi``; ``eval_RI_VOI_img.csv``: ``image, pri_threshold, pri,
  vi_threshold, vi``

Beside them, ``counts.npz`` keeps every image's counts at every threshold
(:mod:`wnetcli.evaluation.counts`), from which ``wnet compare`` rescores runs on resampled images.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from wnetcli.atomic import atomic_path, atomic_write_text, prepare_folder, staged_folder
from wnetcli.evaluation.api import EvaluationResult
from wnetcli.evaluation.counts import COUNTS_FILE, RunCounts

__all__ = ["metrics_dict", "write_report"]


def metrics_dict(result: EvaluationResult) -> dict:
    """The summary written to ``metrics.json`` (None for measures that were not computed)."""
    metrics: dict = {"method": result.method, "kind": result.kind, "settings": result.settings}
    b = result.boundary
    metrics["boundary"] = (
        None
        if b is None
        else {
            "ods": {"threshold": b.ods_threshold, "recall": b.ods_recall, "precision": b.ods_precision, "f": b.ods_f},
            "ois": {"recall": b.ois_recall, "precision": b.ois_precision, "f": b.ois_f},
            "ap": b.ap,
        }
    )
    r = result.regions
    metrics["covering"] = (
        None
        if r is None
        else {
            "ods": r.covering_ods,
            "ois": r.covering_ois,
            "best": r.covering_best,
            "threshold": r.covering_ods_threshold,
        }
    )
    metrics["pri"] = None if r is None else {"ods": r.pri_ods, "ois": r.pri_ois, "threshold": r.pri_ods_threshold}
    metrics["vi"] = None if r is None else {"ods": r.vi_ods, "ois": r.vi_ois, "threshold": r.vi_ods_threshold}
    metrics["images"] = len(result.images)
    metrics["seconds"] = result.seconds
    metrics["thresholds"] = int(result.thresholds.size)
    metrics["matching"] = "exact maximum-cardinality, nearest pairs first (see wnetcli.evaluation.boundary)"
    metrics["stage_seconds"] = {
        stage: float(sum(img.timings.get(stage, 0.0) for img in result.images))
        for stage in ("method", "ground_truth", "thin", "match", "regions")
    }
    return metrics


def _csv(path: Path, header: list[str], rows, ids: list[str] | None = None) -> None:
    buffer = io.StringIO()
    buffer.write(",".join(header) + "\n")
    for k, row in enumerate(np.atleast_2d(rows)):
        cells = ([ids[k]] if ids is not None else []) + [f"{float(v):.6g}" for v in row]
        buffer.write(",".join(cells) + "\n")
    atomic_write_text(path, buffer.getvalue())


def _plot_pr(result: EvaluationResult, path: Path) -> None:
    """Precision-recall curve over iso-F contours, with the ODS point, like the BSDS figures."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    b = result.boundary
    fig = Figure(figsize=(5.5, 5.5), dpi=120)
    ax = fig.add_subplot()
    r = np.linspace(0.01, 1, 200)
    for f in np.arange(0.1, 1.0, 0.1):
        # Points of constant F: P = F R / (2R - F), where that lies in [0, 1].
        with np.errstate(divide="ignore", invalid="ignore"):
            p = f * r / (2 * r - f)
        ok = (p >= 0) & (p <= 1) & (2 * r > f)
        ax.plot(r[ok], p[ok], color="0.8", linewidth=0.8)
        ax.annotate(f"{f:.1f}", (r[ok][-1], p[ok][-1]), fontsize=7, color="0.6")
    thr = b.per_threshold
    valid = thr[:, 1] + thr[:, 2] > 0
    ax.plot(thr[valid, 1], thr[valid, 2], color="tab:red", linewidth=2, label=f"{result.method} [F={b.ods_f:.3f}]")
    ax.plot([b.ods_recall], [b.ods_precision], "o", color="tab:red")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="Recall", ylabel="Precision", title="BSDS boundary benchmark")
    ax.set_aspect("equal")
    ax.grid(True, linewidth=0.3)
    ax.legend(loc="lower left")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")


def write_report(result: EvaluationResult, out_dir: str | Path) -> list[Path]:
    """Write ``metrics.json``, the CSVs, ``counts.npz`` and (for boundaries) ``pr_curve.png`` into ``out_dir``.

    All or nothing: the files are written into a hidden staging folder inside ``out_dir`` and
    moved into place together once all are written (:func:`wnetcli.atomic.staged_folder`), so
    a failure (a full disk) leaves the report there before, if any, untouched.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    InputError
        If ``out_dir`` is a file or cannot be written to.
    OutputError
        If a file cannot be written (a full disk): it names the file and the reason.
    """
    out = prepare_folder(out_dir)
    with staged_folder(out) as staging:
        names = _write_files(result, staging)
    return [out / name for name in names]


def _write_files(result: EvaluationResult, out: Path) -> list[str]:
    """Write the report's files into ``out``; return their names."""
    ids = [img.id for img in result.images]
    names = ["metrics.json", COUNTS_FILE]
    atomic_write_text(out / "metrics.json", json.dumps(metrics_dict(result), indent=2) + "\n")
    RunCounts.from_result(result).save(out / COUNTS_FILE)
    b = result.boundary
    if b is not None:
        summary = [b.ods_threshold, b.ods_recall, b.ods_precision, b.ods_f, b.ois_recall, b.ois_precision]
        _csv(
            out / "eval_bdry.csv",
            ["threshold", "ods_recall", "ods_precision", "ods_f", "ois_recall", "ois_precision", "ois_f", "ap"],
            [[*summary, b.ois_f, b.ap]],
        )
        _csv(out / "eval_bdry_thr.csv", ["threshold", "recall", "precision", "f"], b.per_threshold)
        _csv(out / "eval_bdry_img.csv", ["image", "threshold", "recall", "precision", "f"], b.per_image, ids)
        _plot_pr(result, out / "pr_curve.png")
        names += ["eval_bdry.csv", "eval_bdry_thr.csv", "eval_bdry_img.csv", "pr_curve.png"]
    r = result.regions
    if r is not None:
        _csv(
            out / "eval_cover.csv",
            ["threshold", "ods", "ois", "best"],
            [[r.covering_ods_threshold, r.covering_ods, r.covering_ois, r.covering_best]],
        )
        _csv(out / "eval_cover_thr.csv", ["threshold", "covering"], r.per_threshold[:, :2])
        _csv(out / "eval_cover_img.csv", ["image", "threshold", "covering", "best"], r.per_image[:, :3], ids)
        _csv(
            out / "eval_RI_VOI.csv",
            ["pri_threshold", "pri_ods", "pri_ois", "vi_threshold", "vi_ods", "vi_ois"],
            [[r.pri_ods_threshold, r.pri_ods, r.pri_ois, r.vi_ods_threshold, r.vi_ods, r.vi_ois]],
        )
        _csv(out / "eval_RI_VOI_thr.csv", ["threshold", "pri", "vi"], r.per_threshold[:, [0, 2, 3]])
        _csv(
            out / "eval_RI_VOI_img.csv",
            ["image", "pri_threshold", "pri", "vi_threshold", "vi"],
            r.per_image[:, 3:],
            ids,
        )
        names += [
            "eval_cover.csv",
            "eval_cover_thr.csv",
            "eval_cover_img.csv",
            "eval_RI_VOI.csv",
            "eval_RI_VOI_thr.csv",
            "eval_RI_VOI_img.csv",
        ]
    return names

"""The raw counts of an evaluation run, kept beside its report so that runs can be compared later.

``wnet evaluate`` writes them to ``<out>/counts.npz``. Every data-set score (ODS, OIS, AP,
Best) is a function of these per-image, per-threshold counts, so a run can be rescored on any
subset or resample of its images without running the method again: that is what
:mod:`wnetcli.evaluation.compare` does to put confidence intervals on a difference.

File layout (``np.load`` keys; N images, T thresholds):

- ``format`` (int, :data:`COUNTS_FORMAT`), ``method`` (str), ``kind`` (``"ucm2"``, ``"segs"``
  or ``"soft"``), ``ids`` (N strings), ``thresholds`` (T floats; level numbers for ``segs``);
- ``boundary`` (N, T, 4) int64: ``cnt_r, sum_r, cnt_p, sum_p`` per image and threshold, if the
  boundary benchmark ran;
- ``cover_num`` (N, T), ``cover_den`` (N,), ``best_num`` (N,), ``pri`` (N, T), ``vi`` (N, T)
  float64, if the region benchmark ran (:class:`~wnetcli.evaluation.regions.RegionCounts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wnetcli.errors import InputError
from wnetcli.evaluation.api import EvaluationResult
from wnetcli.evaluation.boundary import boundary_scores
from wnetcli.evaluation.regions import RegionCounts, region_scores

__all__ = ["COUNTS_FILE", "COUNTS_FORMAT", "MEASURES", "RunCounts"]

#: The file name inside an evaluation's output folder.
COUNTS_FILE = "counts.npz"
#: Bumped when the layout above changes.
COUNTS_FORMAT = 1

#: Every data-set measure a run can have: (name, higher is better).
MEASURES = (
    ("boundary F ODS", True),
    ("boundary F OIS", True),
    ("boundary AP", True),
    ("covering ODS", True),
    ("covering OIS", True),
    ("covering Best", True),
    ("PRI ODS", True),
    ("PRI OIS", True),
    ("VI ODS", False),
    ("VI OIS", False),
)

_REGION_FIELDS = ("cover_num", "cover_den", "best_num", "pri", "vi")


@dataclass(frozen=True)
class RunCounts:
    """Per-image counts of one evaluation run.

    Attributes
    ----------
    method, kind : str
        As in :class:`~wnetcli.evaluation.api.EvaluationResult`.
    ids : tuple of str
        The N image ids, in the run's order.
    thresholds : (T,) float64 ndarray
    boundary : (N, T, 4) int64 ndarray or None
        Boundary counts per image and threshold (None: the boundary benchmark did not run).
    regions : dict of str to ndarray, or None
        ``cover_num`` (N, T), ``cover_den`` (N,), ``best_num`` (N,), ``pri`` (N, T), ``vi`` (N, T)
        (None: no region benchmark, as for soft boundary maps).
    """

    method: str
    kind: str
    ids: tuple[str, ...]
    thresholds: np.ndarray
    boundary: np.ndarray | None
    regions: dict[str, np.ndarray] | None

    @classmethod
    def from_result(cls, result: EvaluationResult) -> RunCounts:
        """The counts held by an :class:`~wnetcli.evaluation.api.EvaluationResult`."""
        images = result.images
        boundary = None
        if result.boundary is not None:
            boundary = np.stack([img.boundary for img in images]).astype(np.int64)
        regions = None
        if result.regions is not None:
            counts = [img.regions for img in images]
            regions = {name: np.array([getattr(c, name) for c in counts], dtype=np.float64) for name in _REGION_FIELDS}
        return cls(
            method=result.method,
            kind=result.kind,
            ids=tuple(img.id for img in images),
            thresholds=np.asarray(result.thresholds, dtype=np.float64),
            boundary=boundary,
            regions=regions,
        )

    def save(self, path: str | Path) -> None:
        """Write the counts to ``path`` (``.npz``), atomically."""
        from wnetcli.atomic import atomic_path

        arrays: dict[str, np.ndarray] = {
            "format": np.array(COUNTS_FORMAT),
            "method": np.array(self.method),
            "kind": np.array(self.kind),
            "ids": np.array(self.ids, dtype=str),
            "thresholds": self.thresholds,
        }
        if self.boundary is not None:
            arrays["boundary"] = self.boundary
        if self.regions is not None:
            arrays.update(self.regions)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> RunCounts:
        """Read counts written by :meth:`save`; ``path`` may be the file or its evaluation folder.

        Raises
        ------
        InputError
            If there is no counts file (not an evaluation folder, or one written before wnet
            kept the counts) or it cannot be read.
        """
        path = Path(path)
        if not path.exists():
            raise InputError(f"not found: {path}")
        if path.is_dir():
            path = path / COUNTS_FILE
        if not path.is_file():
            raise InputError(
                f"no {COUNTS_FILE} at {path.parent}: not the output folder of `wnet evaluate`, "
                "or one written before wnet kept the counts (rerun the evaluation)"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                fmt = int(data["format"])
                if fmt != COUNTS_FORMAT:
                    raise InputError(f"{path} has counts format {fmt}; this wnet reads format {COUNTS_FORMAT}")
                boundary = data.get("boundary")
                regions = {name: data[name] for name in _REGION_FIELDS} if "cover_num" in data else None
                return cls(
                    method=str(data["method"]),
                    kind=str(data["kind"]),
                    ids=tuple(str(i) for i in data["ids"]),
                    thresholds=data["thresholds"],
                    boundary=boundary,
                    regions=regions,
                )
        except (OSError, ValueError, KeyError, EOFError) as exc:  # EOFError: an empty file
            raise InputError(
                f"cannot read the counts in {path} ({type(exc).__name__}: {exc}): "
                f"not a {COUNTS_FILE} of `wnet evaluate`"
            ) from exc

    @property
    def measures(self) -> tuple[str, ...]:
        """The names (of :data:`MEASURES`) this run has scores for."""
        names = []
        for name, _ in MEASURES:
            if name.startswith("boundary") and self.boundary is None:
                continue
            if name == "boundary AP" and self.thresholds.size < 2:
                continue  # one segmentation is one point of the precision-recall curve
            if not name.startswith("boundary") and self.regions is None:
                continue
            names.append(name)
        return tuple(names)

    def scores(self, index: np.ndarray | None = None) -> dict[str, float]:
        """The data-set scores of the images ``index`` (positions, repeats allowed; all if None).

        Computed by the same functions as ``wnet evaluate``'s report, so with ``index=None``
        they equal its metrics.json.
        """
        scores: dict[str, float] = {}
        if self.boundary is not None:
            b = boundary_scores(self.thresholds, self.boundary if index is None else self.boundary[index])
            scores.update({"boundary F ODS": b.ods_f, "boundary F OIS": b.ois_f, "boundary AP": b.ap})
        if self.regions is not None:
            fields = self.regions if index is None else {k: v[index] for k, v in self.regions.items()}
            counts = [
                RegionCounts(num, float(den), float(best), pri, vi)
                for num, den, best, pri, vi in zip(*(fields[name] for name in _REGION_FIELDS), strict=True)
            ]
            r = region_scores(self.thresholds, counts)
            scores.update(
                {
                    "covering ODS": r.covering_ods,
                    "covering OIS": r.covering_ois,
                    "covering Best": r.covering_best,
                    "PRI ODS": r.pri_ods,
                    "PRI OIS": r.pri_ois,
                    "VI ODS": r.vi_ods,
                    "VI OIS": r.vi_ois,
                }
            )
        return {name: scores[name] for name in self.measures}

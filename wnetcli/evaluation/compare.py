"""Is one method really better than another on the benchmark? A paired bootstrap over images.

Two runs of ``wnet evaluate`` on the same images differ by a few thousandths on most
measures; whether such a difference says anything about the method or only about which 100
images happen to be in the split is what :func:`compare_runs` answers. It draws the images
with replacement many times and scores both runs on each draw (the same draw for both: the
comparison is paired, so the images' own difficulty cancels), redoing every step of the
benchmark on it, the choice of the ODS threshold included. The spread of the difference over
the draws gives a percentile confidence interval.

What it does not measure: the variation from retraining the network or from another split;
and with ten measures at 95% each, one interval in twenty excludes 0 by chance.

References
----------
.. [1] B. Efron and R. Tibshirani, "An Introduction to the Bootstrap", Chapman & Hall, 1993
       (the percentile interval, chapter 13).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wnetcli.errors import InputError
from wnetcli.evaluation.counts import MEASURES, RunCounts

__all__ = ["Comparison", "MeasureComparison", "compare_runs"]


@dataclass(frozen=True)
class MeasureComparison:
    """One measure of two runs.

    Attributes
    ----------
    name : str
        One of :data:`wnetcli.evaluation.counts.MEASURES`.
    higher_is_better : bool
        False for VI.
    baseline, candidate : float
        The two runs' scores on all the images.
    low, high : float
        The confidence interval of ``candidate - baseline``.
    better_share : float
        The share of the bootstrap draws on which the candidate scores better (ties count
        half), in [0, 1].
    """

    name: str
    higher_is_better: bool
    baseline: float
    candidate: float
    low: float
    high: float
    better_share: float

    @property
    def difference(self) -> float:
        """``candidate - baseline`` on all the images."""
        return self.candidate - self.baseline

    @property
    def verdict(self) -> str:
        """``"better"`` or ``"worse"`` (for the candidate) when the interval excludes 0, else
        ``"unclear"`` (no difference established)."""
        if self.low > 0 or self.high < 0:
            gain = self.low > 0
            return "better" if gain == self.higher_is_better else "worse"
        return "unclear"


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare_runs`.

    Attributes
    ----------
    baseline, candidate : str
        The runs' method names.
    images : int
        Images both runs scored (each draw has this many).
    resamples : int
    confidence : float
    measures : tuple of MeasureComparison
        The measures both runs have, in the order of :data:`~wnetcli.evaluation.counts.MEASURES`.
    """

    baseline: str
    candidate: str
    images: int
    resamples: int
    confidence: float
    measures: tuple[MeasureComparison, ...]

    def to_dict(self) -> dict:
        """A JSON-ready form: the settings, and per measure its scores, difference, interval,
        share of draws and verdict."""
        return {
            "baseline": self.baseline,
            "candidate": self.candidate,
            "images": self.images,
            "resamples": self.resamples,
            "confidence": self.confidence,
            "measures": {
                m.name: {
                    "baseline": m.baseline,
                    "candidate": m.candidate,
                    "difference": m.difference,
                    "interval": [m.low, m.high],
                    "better_share": m.better_share,
                    "verdict": m.verdict,
                }
                for m in self.measures
            },
        }


def _paired_order(baseline: RunCounts, candidate: RunCounts) -> np.ndarray:
    """Positions in ``candidate`` of ``baseline``'s images, in ``baseline``'s order."""
    if len(set(baseline.ids)) != len(baseline.ids) or len(set(candidate.ids)) != len(candidate.ids):
        raise InputError("a run lists an image id twice; the comparison pairs images by id")
    only_baseline = sorted(set(baseline.ids) - set(candidate.ids))
    only_candidate = sorted(set(candidate.ids) - set(baseline.ids))
    if only_baseline or only_candidate:
        example = (only_baseline or only_candidate)[0]
        raise InputError(
            f"the runs scored different images ({len(only_baseline)} only in the baseline, "
            f"{len(only_candidate)} only in the candidate, e.g. {example}); "
            "a paired comparison needs the same images (same --split and --limit)"
        )
    position = {image: k for k, image in enumerate(candidate.ids)}
    return np.array([position[image] for image in baseline.ids], dtype=np.intp)


def compare_runs(
    baseline: RunCounts,
    candidate: RunCounts,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Paired bootstrap comparison of two evaluation runs on the same images.

    Parameters
    ----------
    baseline, candidate : RunCounts
        Runs over the same image ids (in any order); their thresholds may differ.
    resamples : int
        Bootstrap draws (each: as many images as the runs have, with replacement).
    confidence : float
        Coverage of the percentile interval, in (0, 1).
    seed : int
        Seed of the draws: the same seed gives the same intervals.

    Returns
    -------
    Comparison

    Raises
    ------
    InputError
        If the runs scored different images, share no measure, or the settings are out of range.
    """
    if resamples < 10:
        raise InputError(f"resamples must be at least 10, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must be in (0, 1), got {confidence}")
    order = _paired_order(baseline, candidate)
    names = [name for name in baseline.measures if name in candidate.measures]
    if not names:
        raise InputError(
            "the runs share no measure (one has only boundary scores, the other only region scores?)"
        )
    higher = dict(MEASURES)
    n = len(baseline.ids)
    rng = np.random.default_rng(seed)
    differences = np.empty((resamples, len(names)))
    for r in range(resamples):
        draw = rng.integers(0, n, size=n)
        first, second = baseline.scores(draw), candidate.scores(order[draw])
        differences[r] = [second[name] - first[name] for name in names]
    full_baseline, full_candidate = baseline.scores(), candidate.scores(order)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(differences, [tail, 1.0 - tail], axis=0)
    measures = []
    for k, name in enumerate(names):
        signed = differences[:, k] if higher[name] else -differences[:, k]
        share = float(np.mean(signed > 0) + 0.5 * np.mean(signed == 0))
        measures.append(
            MeasureComparison(
                name=name,
                higher_is_better=higher[name],
                baseline=full_baseline[name],
                candidate=full_candidate[name],
                low=float(low[k]),
                high=float(high[k]),
                better_share=share,
            )
        )
    return Comparison(
        baseline=baseline.method,
        candidate=candidate.method,
        images=n,
        resamples=resamples,
        confidence=confidence,
        measures=tuple(measures),
    )

"""What a cue is, and the per-image context that the cues of a recipe share.

A cue (:class:`Cue`) is a small frozen dataclass that owns its parameters, checks them itself
and computes, from an :class:`ImageContext`, one or more of:

- ``boundary``: an (h, w) float32 map in [0, 1] on the recipe's grid, high where a region
  border is likely (the recipe averages these into the map the watershed floods and whose mean
  along a border is the border's merge cost);
- ``likeness``: per-pixel descriptors of the region-likeness term of the merge cost (parts of
  :class:`wnetcli.segmentation.hierarchy.PixelDescriptors`);
- ``partition``: an (h, w) int map whose changes cut the superpixels (candidate borders).

A cue also says what it reads (:attr:`Cue.reads`): the image, the network's soft maps (raw or
CRF-smoothed), or the network's boundary map. The pipeline runs the network if and only if a
cue of the recipe reads one of its outputs, and the CRF if and only if one reads smoothed maps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from wnetcli.errors import InputError
from wnetcli.options import check_field_types

if TYPE_CHECKING:
    from wnetcli.segmentation.crf import CRFOptions

__all__ = ["IMAGE", "BOUNDARIES", "SMOOTHED_MAPS", "SOFT_MAPS", "Cue", "ImageContext", "NetworkMaps"]

#: What a cue can read (:attr:`Cue.reads`).
IMAGE, SOFT_MAPS, SMOOTHED_MAPS, BOUNDARIES = "image", "soft_maps", "smoothed_maps", "boundaries"


@dataclass
class NetworkMaps:
    """The network's outputs for one image, at the image's size (H, W).

    Attributes:
        soft_maps: (K, H, W) float32 softmax (sums to 1 over K), or None when not computed.
        boundaries: (H, W) float32 in [0, 1], the boundary output of a model trained with
            boundaries, or None.
    """

    soft_maps: np.ndarray | None = None
    boundaries: np.ndarray | None = None


@dataclass(frozen=True)
class Cue:
    """Base of the cues; see the module's docstring.

    Subclasses set :attr:`name` (their key in a recipe) and :attr:`gives` (which of
    ``"boundary"``, ``"likeness"``, ``"partition"`` they compute), and override the matching
    methods. Their fields are their parameters, in the image's pixels where they are lengths.
    """

    name: ClassVar[str] = ""
    gives: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        check_field_types(self)
        self.check()

    def check(self) -> None:
        """Raise :class:`InputError` naming the field of a parameter out of its range."""

    @property
    def reads(self) -> frozenset[str]:
        """What this cue reads: a subset of ``{IMAGE, SOFT_MAPS, SMOOTHED_MAPS, BOUNDARIES}``."""
        return frozenset({IMAGE})

    def boundary(self, context: ImageContext) -> np.ndarray:
        """(h, w) float32 boundary map in [0, 1] on the context's grid."""
        raise NotImplementedError(f"{type(self).__name__} gives no boundary map")

    def likeness(self, context: ImageContext, weight: float) -> list[tuple[str, float, Any]]:
        """Parts of the region-likeness descriptors (:class:`.hierarchy.PixelDescriptors`)
        whose weights add up to ``weight``."""
        raise NotImplementedError(f"{type(self).__name__} gives no region likeness")

    def partition(self, context: ImageContext) -> np.ndarray:
        """(h, w) int map whose changes cut the superpixels."""
        raise NotImplementedError(f"{type(self).__name__} gives no partition")

    # --- helpers for the checks of subclasses ---
    def _positive_scales(self, field: str) -> None:
        scales = getattr(self, field)
        if not scales or min(scales) <= 0:
            raise InputError(f"{type(self).__name__}.{field} must be positive scales in pixels, got {list(scales)}")

    def _at_least(self, field: str, low: float) -> None:
        if getattr(self, field) < low:
            raise InputError(f"{type(self).__name__}.{field} must be at least {low}, got {getattr(self, field)}")

    def parameters(self) -> dict[str, Any]:
        """The cue's parameters by field name (tuples as lists), as a recipe file writes them."""
        return {
            f.name: list(value) if isinstance(value := getattr(self, f.name), tuple) else value
            for f in dataclasses.fields(self)
        }


class ImageContext:
    """What the cues of one image share, each computed once on first use.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 ndarray
        The image, at the post-processing's size.
    downsample : int
        The recipe's grid: cues work on block means ``downsample`` times coarser,
        (h, w) = (ceil(H / downsample), ceil(W / downsample)) (:mod:`..grids`).
    network : NetworkMaps, optional
        The network's outputs at (H, W), for the cues that read them.
    crf : CRFOptions, optional
        How soft maps are smoothed for the cues that read smoothed maps.

    Attributes
    ----------
    seconds_in_crf : float
        Time spent smoothing soft maps (reported as the pipeline's ``"crf"`` stage).
    """

    def __init__(
        self, rgb: np.ndarray, downsample: int = 1, network: NetworkMaps | None = None, crf: CRFOptions | None = None
    ) -> None:
        self.rgb = rgb
        self.downsample = downsample
        self.network = network or NetworkMaps()
        self._crf = crf
        self.seconds_in_crf = 0.0
        self._memo: dict[Any, Any] = {}

    @cached_property
    def grid_rgb(self) -> np.ndarray:
        """(h, w, 3) uint8: the image on the grid."""
        from wnetcli.segmentation.grids import block_mean_rgb

        return block_mean_rgb(self.rgb, self.downsample)

    @cached_property
    def lab(self) -> np.ndarray:
        """(h, w, 3) float32 CIELAB of :attr:`grid_rgb` (L in 0..100)."""
        from wnetcli.segmentation.cues.colour import rgb_to_lab

        return rgb_to_lab(self.grid_rgb)

    @property
    def shape(self) -> tuple[int, int]:
        """(h, w): the grid's size."""
        return self.lab.shape[:2]

    def on_grid(self, pixels: float) -> float:
        """A length in the image's pixels, in pixels of the grid."""
        return float(pixels) / self.downsample

    def scales_on_grid(self, scales: Sequence[float]) -> tuple[float, ...]:
        """Lengths in the image's pixels, in pixels of the grid."""
        return tuple(float(scale) / self.downsample for scale in scales)

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per ``key`` for this image (shared by the cues that need it)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def soft_maps(self, smoothed: bool) -> np.ndarray:
        """(K, h, w) float32: the network's soft maps on the grid, CRF-smoothed (at the image's
        size, before going to the grid) when ``smoothed``."""
        if self.network.soft_maps is None:
            raise InputError("this recipe reads the network's soft maps, and none were given")
        return self.memo(("soft_maps", smoothed), lambda: self._grid_maps(self._smoothed() if smoothed else
                                                                          self.network.soft_maps))

    def _smoothed(self) -> np.ndarray:
        import time

        from wnetcli.segmentation.crf import CRFOptions, dense_crf

        began = time.perf_counter()
        smoothed = dense_crf(self.rgb, self.network.soft_maps, self._crf or CRFOptions())
        self.seconds_in_crf += time.perf_counter() - began
        return smoothed

    def network_boundaries(self) -> np.ndarray:
        """(h, w) float32 in [0, 1]: the network's boundary map on the grid."""
        if self.network.boundaries is None:
            raise InputError("this recipe reads the network's boundary map, and none was given")
        return self.memo("boundaries", lambda: self._grid_maps(self.network.boundaries[None])[0])

    def _grid_maps(self, maps: np.ndarray) -> np.ndarray:
        from wnetcli.segmentation.grids import block_mean

        return block_mean(np.asarray(maps, dtype=np.float32), self.downsample)

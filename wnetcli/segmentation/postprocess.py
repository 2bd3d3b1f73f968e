"""The paper's post-processing (Algorithm 2), our version: soft maps in, hierarchy and labels out.

1. CRF smoothing of the soft maps (:mod:`.crf`), optional.
2. Boundary strength from the soft maps and from multi-scale colour gradients (:mod:`.boundaries`).
3. Watershed superpixels, greedy merging by boundary strength, recorded as a ucm2 (:mod:`.hierarchy`).
4. Its levels put on the 0..1 scale of ``--level`` (:class:`.levels.LevelScale`), then one cut:
   ``regions`` (exactly that many regions), ``level`` (a ucm threshold) or
   :data:`.levels.DEFAULT_LEVEL`; connected components are relabelled so one label is one region.

Pure NumPy / SciPy / scikit-image: no torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from wnetcli.errors import InputError
from wnetcli.options import check_field_types
from wnetcli.segmentation.boundaries import (
    LAB_RANGES,
    TEXTON_SAMPLE,
    BoundaryOptions,
    boundary_maps,
    histogram_grid,
    lab_histograms,
    one_hot,
    rgb_to_lab,
    soft_bin_positions,
    texton_map,
)
from wnetcli.segmentation.crf import CRFOptions, block_mean, dense_crf
from wnetcli.segmentation.hierarchy import (
    PixelDescriptors,
    SuperpixelOptions,
    build_hierarchy,
    upsample_labels,
    upsample_ucm2,
)
from wnetcli.segmentation.levels import DEFAULT_LEVEL, LevelScale, cut_into_regions
from wnetcli.ucm import ucm2_to_labels

__all__ = [
    "DEFAULT_LEVEL",
    "FAST_OVERRIDES",
    "PostprocessOptions",
    "PostprocessResult",
    "postprocess",
]

#: What ``--fast`` changes: the cues and the hierarchy on a grid twice as coarse, with the texton
#: filters kept at 1 and 2 pixels of that grid (2 and 4 of the image), a 14-pixel watershed
#: marker window (7 cells) and the colour-histogram gradient at its coarse scale only (8 pixels
#: of the image, which it computes on a block grid 4x coarser than the image: the 4-pixel
#: scale needed per-cell histograms of the whole 2x grid and was a third of the time). Scaled
#: down with the grid, to 0.5 and 1 pixel, the texton filters lost most of the texture and a
#: further 0.004-0.009 of covering; the larger window made no difference to the scores and
#: saved 14% of the time. On the 200 BSDS500 train images (benchmarks/tune_pipeline.py) this
#: cost covering ODS 0.615 -> 0.606, PRI 0.833 -> 0.825 and VI 1.548 -> 1.613 (before the level
#: calibration, which raised both: 0.624 and 0.613 now), for about a third of the default's
#: time (CPU 0.06-0.08 against 0.23-0.27 s per image in interleaved runs; 79-86 against
#: 223-263 ms in two runs of benchmarks/bench_segment.py).
FAST_OVERRIDES = {
    "hierarchy_downsample": 2,
    "texton_scales": (2.0, 4.0),
    "superpixel_window": 14,
    "histogram_sigmas": (8.0,),
}


@dataclass(frozen=True)
class PostprocessOptions:
    """Options of :func:`postprocess`.

    Attributes:
        crf: mean-field CRF smoothing of the soft maps before the boundaries are computed.
        crf_iterations: mean-field updates.
        crf_appearance_weight, crf_appearance_xy, crf_appearance_lab: weight, spatial width
            (pixels) and colour width (CIELAB Delta E) of the appearance kernel.
        crf_smoothness_weight, crf_smoothness_xy: weight and width (pixels) of the smoothness kernel.
        crf_downsample, crf_radius: the CRF messages are computed on a grid this many times
            coarser, in a window of this half-width (coarse cells); see :class:`.crf.CRFOptions`.
        wnet_weight: weight of the soft segmentation's own boundaries (where the probabilities
            change) in the boundary map; off by default: on BSDS500 no weight beat the hierarchy
            without it beyond chance (train covering ODS at most +0.005, with OIS or PRI lower;
            the model card has the runs), as the network's maps change inside textures too.
        wnet_histogram_weight: weight of the soft segmentation's region cue (the chi-squared
            gradient of its class mix, :class:`.boundaries.BoundaryOptions`).
        wnet_merge_only: the W-Net's boundary cues (``wnet_weight``,
            ``wnet_histogram_weight``) weigh in the merge costs only: the watershed floods the
            image cues' map, so the superpixel borders stay where the image's edges are
            (``--wnet-merge-only``; off: it helped on BSDS500 train only with the ``--fast``
            grid, see wnetcli/models/README.md).
        wnet_split: cut the watershed superpixels along the changes of the (CRF-smoothed)
            soft segmentation's argmax too, as the paper's Algorithm 2 takes its candidate
            boundaries from the CRF segmentation (:func:`.hierarchy.build_hierarchy`).
        colour_weight: weight of the multi-scale colour-gradient cue.
        colour_sigmas: scales (pixels) of the colour gradients.
        colour_contrast: Delta E of a step edge whose colour cue is about 0.63.
        wnet_sigma: Gaussian smoothing (pixels) of the W-Net boundary cue.
        histogram_weight: weight of the brightness and colour histogram gradients (chi-squared
            between the two halves of a window, :func:`.boundaries.lab_histogram_gradient`).
        histogram_sigmas, histogram_bins: their scales (pixels) and bins per channel.
        texture_weight, textons: weight of the texton histogram gradient (gPb's texture cue,
            at the ``histogram_sigmas`` scales) and textons per image
            (:func:`.boundaries.texture_gradient`).
        texton_scales: Gaussian scales (pixels) of the texton filter bank.
        texton_downsample: the textons are computed on a grid this many times coarser than
            the hierarchy's (block means) and enlarged back (nearest neighbour).
        hierarchy_downsample: the boundary cues, the superpixels and the merging are computed
            on a grid this many times coarser than the image (block means of the pixels); the
            superpixels are then enlarged back (nearest neighbour, the same region graph) and
            the ucm2 and labels come out at the image's size, with borders on a
            ``hierarchy_downsample``-pixel lattice. Every setting in pixels (the sigmas, the
            marker window) is in the image's pixels and scaled to the grid, so 1 and 2 compute
            the same cues at the same physical scales, 2 about four times faster.
        superpixel_quantisation, superpixel_sigma, superpixel_window: grey levels, smoothing
            (pixels) and marker window of the watershed; see :class:`.hierarchy.SuperpixelOptions`.
        size_prior: regions smaller than about this fraction of the image merge earlier
            (:func:`.hierarchy.merge_regions`); 0: by mean boundary strength alone.
        likeness_weight: share of region likeness in the merge cost (the rest is the mean
            boundary strength): how unlike the two regions' soft segmentations, colour
            histograms and texton histograms are (:func:`.hierarchy.merge_regions`); 0:
            boundary strength alone.
        likeness_colour_share: how much of the likeness comes from the image, colour and
            texture (the rest from the W-Net's soft segmentation; ``wnet --wnet-share`` is one
            minus this); without ``probs`` it is all image. The default 1.0 leaves the network out: on
            BSDS500 train any share for it lowered covering, PRI and VI.
        likeness_texture_share: the part of the image share (colour histograms and texton
            histograms together) that the texton histograms take: on BSDS500 train 0.5 with
            likeness_weight 0.45 raised covering ODS from 0.590 (colour alone, 0.35) to 0.614.
        level_scale: how each image's merge levels are put on the 0..1 scale of ``level``
            (:class:`.levels.LevelScale`): 1.0 where its strongest structure merges, the
            default cut at :data:`.levels.DEFAULT_LEVEL`. The partitions of each hierarchy are
            unchanged, only their levels move.
        regions: output exactly this many regions (the hierarchy's partition after that many
            merges; all of its superpixels when it has fewer), or
        level: cut the ucm at this threshold in [0, 1]; both ``None``: :data:`.levels.DEFAULT_LEVEL`.
        keep_probs: return the (CRF-smoothed) soft maps in :attr:`PostprocessResult.probs`.
            False: the CRF runs only when a W-Net cue reads its output, and ``probs`` comes back
            empty (K = 0); ``wnet segment`` sets it unless ``--save probs`` is given, since
            with the default cues the CRF is otherwise ~0.1 s per image of unused work.
    """

    crf: bool = True
    crf_iterations: int = 5
    crf_appearance_weight: float = 4.0
    crf_appearance_xy: float = 12.0
    crf_appearance_lab: float = 10.0
    crf_smoothness_weight: float = 1.0
    crf_smoothness_xy: float = 3.0
    crf_downsample: int = 4
    crf_radius: int = 3
    wnet_weight: float = 0.0
    wnet_histogram_weight: float = 0.0
    wnet_merge_only: bool = False
    wnet_split: bool = False
    colour_weight: float = 1.0
    colour_sigmas: tuple[float, ...] = (1.0, 2.0, 4.0)
    colour_contrast: float = 40.0
    wnet_sigma: float = 1.0
    histogram_weight: float = 1.0
    histogram_sigmas: tuple[float, ...] = (4.0, 8.0)
    histogram_bins: int = 12
    texture_weight: float = 0.0
    textons: int = 32
    texton_scales: tuple[float, ...] = (1.0, 2.0)
    texton_downsample: int = 1
    hierarchy_downsample: int = 1
    superpixel_quantisation: int = 256
    superpixel_sigma: float = 1.0
    superpixel_window: int = 11
    size_prior: float = 0.01
    likeness_weight: float = 0.45
    # 1.0: on BSDS500 train every W-Net share above 0 lowered covering, PRI and VI (0.1: SC
    # .588 vs .590; 0.3: .581), so the network stays out of the merge by default.
    likeness_colour_share: float = 1.0
    likeness_texture_share: float = 0.5
    level_scale: LevelScale = LevelScale()
    regions: int | None = None
    level: float | None = None
    keep_probs: bool = True

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.regions is not None and self.level is not None:
            raise InputError("give either regions or level, not both")
        if self.regions is not None and self.regions < 1:
            raise InputError(f"regions must be at least 1, got {self.regions}")
        if self.level is not None and not 0.0 <= self.level <= 1.0:
            raise InputError(f"level must be a ucm threshold in [0, 1], got {self.level}")
        if not 0.0 <= self.likeness_colour_share <= 1.0:
            raise InputError(f"likeness_colour_share must be in [0, 1], got {self.likeness_colour_share}")
        if not 0.0 <= self.likeness_texture_share <= 1.0:
            raise InputError(f"likeness_texture_share must be in [0, 1], got {self.likeness_texture_share}")
        for name in ("hierarchy_downsample", "texton_downsample"):
            if not 1 <= getattr(self, name) <= 8:
                raise InputError(f"{name} must be between 1 and 8, got {getattr(self, name)}")
        if self.superpixel_window < 1:  # rounded up to 1 on a coarse grid below, so checked here
            raise InputError(f"superpixel_window must be at least 1 pixel, got {self.superpixel_window}")
        if not self.texton_scales or min(self.texton_scales) <= 0:
            raise InputError(f"texton_scales must be positive scales, got {self.texton_scales}")
        # The nested option classes check their own ranges; their messages start with their
        # own field names, given back here under this class's names.
        superpixel_names = {
            "quantisation": "superpixel_quantisation", "sigma": "superpixel_sigma",
            "window": "superpixel_window", "descriptor_weight": "likeness_weight",
        }
        for build, rename in (
            (self.crf_options, lambda name: f"crf_{name}"),
            (self.boundary_options, lambda name: name),
            (self.superpixel_options, lambda name: superpixel_names.get(name, name)),
        ):
            try:
                build()
            except ValueError as exc:
                name, _, rest = str(exc).partition(" ")
                raise InputError(f"{rename(name)} {rest}") from exc

    def uses_wnet(self) -> bool:
        """True when a W-Net cue is on: its boundaries, its class-mix gradient, or its share of
        the region likeness."""
        return (
            self.wnet_weight > 0
            or self.wnet_histogram_weight > 0
            or self.wnet_split
            or (self.likeness_weight > 0 and self.likeness_colour_share < 1)
        )

    def reads_probs(self) -> bool:
        """True when :func:`postprocess` reads the soft maps at all (a W-Net cue, or
        ``keep_probs``); otherwise it gives the same result for ``probs=None``, so callers
        may skip computing or resizing them."""
        return self.keep_probs or self.uses_wnet()

    def crf_options(self) -> CRFOptions:
        """The CRF part as :class:`.crf.CRFOptions`."""
        return CRFOptions(
            iterations=self.crf_iterations,
            appearance_weight=self.crf_appearance_weight,
            appearance_xy=self.crf_appearance_xy,
            appearance_lab=self.crf_appearance_lab,
            smoothness_weight=self.crf_smoothness_weight,
            smoothness_xy=self.crf_smoothness_xy,
            downsample=self.crf_downsample,
            radius=self.crf_radius,
        )

    def grid_scales(self, scales) -> tuple[float, ...]:
        """Scales in the image's pixels -> on the :attr:`hierarchy_downsample` grid."""
        return tuple(float(scale) / self.hierarchy_downsample for scale in scales)

    def boundary_options(self) -> BoundaryOptions:
        """The boundary part as :class:`.boundaries.BoundaryOptions`, in pixels of the
        :attr:`hierarchy_downsample` grid."""
        return BoundaryOptions(
            wnet_weight=self.wnet_weight,
            wnet_histogram_weight=self.wnet_histogram_weight,
            colour_weight=self.colour_weight,
            colour_sigmas=self.grid_scales(self.colour_sigmas),
            colour_contrast=self.colour_contrast,
            wnet_sigma=self.wnet_sigma / self.hierarchy_downsample,
            histogram_weight=self.histogram_weight,
            histogram_sigmas=self.grid_scales(self.histogram_sigmas),
            histogram_bins=self.histogram_bins,
            texture_weight=self.texture_weight,
            textons=self.textons,
        )

    def superpixel_options(self) -> SuperpixelOptions:
        """The watershed part as :class:`.hierarchy.SuperpixelOptions`, in pixels of the
        :attr:`hierarchy_downsample` grid."""
        return SuperpixelOptions(
            quantisation=self.superpixel_quantisation,
            sigma=self.superpixel_sigma / self.hierarchy_downsample,
            window=max(1, round(self.superpixel_window / self.hierarchy_downsample)),
            size_prior=self.size_prior,
            descriptor_weight=self.likeness_weight,
        )


@dataclass
class PostprocessResult:
    """What :func:`postprocess` returns.

    Attributes:
        labels: (H, W) int32, labels 1..n, each label one 4-connected region.
        ucm2: (2H+1, 2W+1) float32 in [0, 1], the hierarchy as an ultrametric contour map.
        probs: (K, H, W) float32, the soft maps actually used (CRF-smoothed if ``crf``);
            (0, H, W) when :func:`postprocess` got ``probs=None``.
        timings: seconds per stage: ``"crf"``, ``"boundaries"``, ``"hierarchy"``.
        threshold: the ucm threshold that gave ``labels`` (for ``regions``: the level of the
            last merge made).
        note: ``""``, or why ``labels`` does not have the ``regions`` asked for.
    """

    labels: np.ndarray
    ucm2: np.ndarray
    probs: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    threshold: float = 0.0
    note: str = ""


def _check_inputs(rgb: np.ndarray, probs: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"rgb must be an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    if rgb.size == 0:
        raise InputError(f"the image is empty (shape {rgb.shape})")
    if probs is None:
        return rgb, None
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[1:] != rgb.shape[:2] or probs.shape[0] < 1:
        raise InputError(f"probs must be (K, H, W) with (H, W) = {rgb.shape[:2]}, got {probs.shape}")
    # Two reductions (about 2 ms for K = 20 at 481 x 321): a NaN anywhere spreads through the
    # CRF to most of the image, and unnormalised maps change the merge costs without a sign.
    total, lowest = float(probs.sum(dtype=np.float64)), float(probs.min())
    pixels = probs.shape[1] * probs.shape[2]
    if not np.isfinite(total) or lowest < -1e-6 or abs(total - pixels) > 1e-3 * pixels:
        raise InputError(
            "probs must be finite, non-negative and sum to 1 over K at every pixel (a softmax); "
            f"got a sum of {total:.6g} over {pixels} pixels and a minimum of {lowest:.3g}"
        )
    return rgb, probs


def _descriptors(
    lab: np.ndarray,
    probs: np.ndarray | None,
    options: PostprocessOptions,
    textons: np.ndarray | None = None,
) -> PixelDescriptors | None:
    """Per-pixel descriptors of the region-likeness merge term, or None if it is off.

    The soft segmentation (a distribution over K) weighted ``1 - share``, then the image part
    ``share`` split between the texton histograms (one-hot over the textons, weighted
    ``share * likeness_texture_share``) and the soft colour histograms of ``lab`` (L, a, b,
    each a distribution over its bins, sharing the rest in thirds), so that half the L1
    distance of two region means is a weighted total-variation distance in [0, 1]. Without
    ``probs`` the image part takes all the weight. ``textons``: (H, W) texton labels.
    """
    if options.likeness_weight <= 0:
        return None
    share = 1.0 if probs is None else options.likeness_colour_share
    parts = []
    if share < 1:
        parts.append(("dense", 1 - share, probs))
    # The texton histograms take their share out of the colour part.
    texture = options.likeness_texture_share * share if textons is not None else 0.0
    if share - texture > 0:
        for c, (low, high) in enumerate(LAB_RANGES):
            bins = soft_bin_positions(lab[..., c], options.histogram_bins, low, high)
            parts.append(("soft_bins", (share - texture) / 3, (*bins, options.histogram_bins)))
    if texture > 0:
        parts.append(("labels", texture, (textons, options.textons)))
    return PixelDescriptors(parts)


def _texton_labels(work_rgb: np.ndarray, lab: np.ndarray, options: PostprocessOptions) -> np.ndarray:
    """(H, W) texton labels of the working grid (its ``lab``), computed on a grid
    ``texton_downsample`` times coarser still and enlarged (nearest neighbour)."""
    coarser = options.texton_downsample
    grid = options.hierarchy_downsample * coarser
    texton_lab = lab if coarser == 1 else rgb_to_lab(_block_mean_rgb(work_rgb, coarser))
    scales = tuple(float(scale) / grid for scale in options.texton_scales)
    # On a coarser grid the k-means sample shrinks with the pixels: the same share of them.
    textons = texton_map(texton_lab, options.textons, scales=scales, sample_size=max(2000, TEXTON_SAMPLE // grid**2))
    return textons if coarser == 1 else upsample_labels(textons, lab.shape[:2])


def _block_mean_rgb(rgb: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, 3) uint8 -> its ``factor x factor`` block means, (ceil(H/f), ceil(W/f), 3) uint8."""
    means = block_mean(np.moveaxis(rgb, -1, 0).astype(np.float32), factor)
    return np.moveaxis(np.round(means), 0, -1).astype(np.uint8)


def postprocess(
    rgb: np.ndarray, probs: np.ndarray | None, options: PostprocessOptions = PostprocessOptions()
) -> PostprocessResult:
    """CRF, boundary strength, hierarchy and one level of it, for one image.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 ndarray
        The image.
    probs : (K, H, W) float32 ndarray or None
        The network's softmax (sums to 1 over K). ``None``: no CRF and no W-Net cue, the
        classical colour-only hierarchy (same as ``options.wnet_weight == 0`` without the CRF).
    options : PostprocessOptions

    Returns
    -------
    PostprocessResult

    Raises
    ------
    InputError
        If the arrays have the wrong shapes or types.

    Examples
    --------
    >>> rgb = np.zeros((32, 32, 3), np.uint8); rgb[:, 16:] = 200
    >>> result = postprocess(rgb, None, PostprocessOptions(regions=2))
    >>> int(result.labels.max()), result.ucm2.shape
    (2, (65, 65))
    """
    from skimage.measure import label

    rgb, probs = _check_inputs(rgb, probs)
    timings = {"crf": 0.0, "boundaries": 0.0, "hierarchy": 0.0}

    use_wnet = probs is not None and options.uses_wnet()
    if not use_wnet and options.colour_weight == 0 and options.histogram_weight == 0 and options.texture_weight == 0:
        raise InputError(
            "no boundary cue: the colour, histogram and texture weights are 0 and the W-Net cue is off "
            "(probs None or wnet_weight 0)"
        )
    if probs is not None and options.crf and options.reads_probs():
        began = time.perf_counter()
        probs = dense_crf(rgb, probs, options.crf_options())
        timings["crf"] = time.perf_counter() - began

    began = time.perf_counter()
    factor = options.hierarchy_downsample
    work_rgb = rgb if factor == 1 else _block_mean_rgb(rgb, factor)
    lab = rgb_to_lab(work_rgb)
    cue_probs = probs if factor == 1 or not use_wnet else block_mean(probs, factor)
    boundary_options = options.boundary_options()
    histograms = None
    if options.histogram_weight > 0:
        grid = histogram_grid(boundary_options.histogram_sigmas)
        histograms = lab_histograms(lab, options.histogram_bins, grid)
    needs_textons = options.texture_weight > 0 or (options.likeness_weight > 0 and options.likeness_texture_share > 0)
    textons = _texton_labels(work_rgb, lab, options) if needs_textons else None
    texton_bins = one_hot(textons, options.textons)[None] if options.texture_weight > 0 else None
    strength, image_strength = boundary_maps(
        lab, cue_probs if use_wnet else None, boundary_options, histograms, texton_bins
    )
    # The watershed floods the image cues alone only when they differ from the combined map.
    flood = image_strength if options.wnet_merge_only and image_strength is not strength else None
    timings["boundaries"] = time.perf_counter() - began

    began = time.perf_counter()
    descriptors = _descriptors(lab, cue_probs if use_wnet else None, options, textons)
    split_by = cue_probs.argmax(axis=0) if use_wnet and options.wnet_split else None
    hierarchy = build_hierarchy(strength, options.superpixel_options(), descriptors, split_by, flood)
    ucm2, levels = options.level_scale.rescale(hierarchy.ucm2, hierarchy.levels)
    note = ""
    # On a coarse grid the cut is taken there and enlarged (the same regions as the cut of the
    # enlarged ucm2, for a quarter of the work).
    if options.regions is not None:
        labels = cut_into_regions(hierarchy.superpixels, hierarchy.merges, options.regions)
        made = hierarchy.n_superpixels - int(labels.max())
        threshold = float(levels[made - 1]) if made > 0 else 0.0
        if int(labels.max()) != options.regions:
            note = f"{options.regions} regions asked for; the hierarchy has {int(labels.max())} at most"
    else:
        threshold = DEFAULT_LEVEL if options.level is None else float(options.level)
        # ucm2_to_labels' regions are 4-connected already (see hierarchy); the relabelling
        # guarantees it.
        labels = label(ucm2_to_labels(ucm2, threshold), background=0, connectivity=1).astype(np.int32)
    if factor > 1:
        labels = upsample_labels(labels, rgb.shape[:2])
        ucm2 = upsample_ucm2(ucm2, rgb.shape[:2])
    timings["hierarchy"] = time.perf_counter() - began

    if probs is None or not options.keep_probs:
        probs = np.zeros((0, *rgb.shape[:2]), dtype=np.float32)
    return PostprocessResult(
        labels=labels, ucm2=ucm2, probs=probs, threshold=threshold, timings=timings, note=note
    )

"""The cues a recipe combines into a hierarchy: one module per kind.

- :mod:`.colour`: :class:`LabGradient`, the CIELAB colour gradient (and the CIELAB conversion);
- :mod:`.histograms`: :class:`ColourHistograms`, brightness and colour histogram gradients and
  likeness;
- :mod:`.textons`: :class:`Textons`, texton gradient and likeness;
- :mod:`.network`: the W-Net's outputs: :class:`NetworkEdges`, :class:`NetworkClassMix`,
  :class:`NetworkLikeness`, :class:`ArgmaxSplit`, :class:`NetworkBoundaries`;
- :mod:`.base`: what a cue is (:class:`Cue`) and the per-image context they share.

:data:`CUES` maps each cue's recipe key (:attr:`Cue.name`) to its class.
"""

from __future__ import annotations

from wnetcli.segmentation.cues.base import BOUNDARIES, IMAGE, SMOOTHED_MAPS, SOFT_MAPS, Cue, ImageContext, NetworkMaps
from wnetcli.segmentation.cues.colour import LabGradient
from wnetcli.segmentation.cues.histograms import ColourHistograms
from wnetcli.segmentation.cues.network import (
    ArgmaxSplit,
    NetworkBoundaries,
    NetworkClassMix,
    NetworkEdges,
    NetworkLikeness,
)
from wnetcli.segmentation.cues.textons import Textons

#: Every cue by its recipe key.
CUES: dict[str, type[Cue]] = {
    cls.name: cls
    for cls in (
        LabGradient, ColourHistograms, Textons, NetworkEdges, NetworkClassMix, NetworkLikeness, ArgmaxSplit,
        NetworkBoundaries,
    )
}

__all__ = [
    "BOUNDARIES",
    "CUES",
    "IMAGE",
    "SMOOTHED_MAPS",
    "SOFT_MAPS",
    "ArgmaxSplit",
    "ColourHistograms",
    "Cue",
    "ImageContext",
    "LabGradient",
    "NetworkBoundaries",
    "NetworkClassMix",
    "NetworkEdges",
    "NetworkLikeness",
    "NetworkMaps",
    "Textons",
]

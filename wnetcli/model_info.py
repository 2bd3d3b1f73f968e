"""What an exported W-Net ONNX file says about itself (its ``metadata_props``).

``wnet export`` writes these keys and ``wnet segment`` reads them back, so the user never
repeats K, padding or preprocessing on the command line. This module is the single
definition of the contract; it imports neither torch nor onnx.

The graph itself: input ``image`` float32 (or float16 with ``fp16``) of shape
(N, 3, H, W), RGB on the 0..255 scale; output ``probs`` of shape (N, K, H, W), a softmax
over K, and, for a model with a boundary head, a second output ``boundaries`` of shape
(N, 1, H, W) in [0, 1] (``outputs`` lists them). H and W must be multiples of
``pad_multiple``: the runtime pads (reflect) and crops.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field

from wnetcli.errors import ModelError

#: Bumped when the meaning of the keys changes; readers refuse newer formats.
FORMAT_VERSION = 1
INPUT_NAME = "image"
OUTPUT_NAME = "probs"
BOUNDARIES_NAME = "boundaries"
#: The outputs a graph may have, in the order they come.
OUTPUT_NAMES = (OUTPUT_NAME, BOUNDARIES_NAME)
PREFIX = "wnet."


def min_padded_side(pad_multiple: int, padding_mode: str) -> int:
    """Smallest H and W a network with these settings accepts.

    Reflect padding needs at least 2 pixels to mirror, so the deepest level (1/pad_multiple
    of the input) must be 2 pixels wide: ``2 * pad_multiple``; zero padding works down to 1.
    """
    return 2 * pad_multiple if padding_mode == "reflect" else pad_multiple


@dataclass(frozen=True)
class ModelInfo:
    """Self-description of an exported encoder.

    Attributes:
        k: number of classes K (channels of ``probs``).
        pad_multiple: H and W fed to the graph must be multiples of this (2**depth).
        input_range: value range of the input, always ``"0..255"`` for now.
        input_layout: ``"NCHW RGB"``.
        fp16: True when the graph takes and returns float16.
        model_config: the training model config (``training.config.ModelConfig`` as a dict).
        package_version: the wnet version that exported it.
        checkpoint_sha256: SHA-256 of the checkpoint file it was exported from.
        training_data: free-text description of the training data.
        step: training step of the checkpoint.
        short_side: the scale the network was trained at: training images were shrunk so
            their shorter side was at most this many pixels, and the runtime shrinks larger
            images the same way before the network (the soft segmentation is then resized
            back; the post-processing runs at full size). 0: always at the input's own size.
        outputs: the graph's outputs, in order: ``("probs",)``, or ``("probs", "boundaries")``
            for a model with a boundary head. Stored as ``wnet.outputs`` = ``"probs,boundaries"``;
            files without the key (older exports) have ``probs`` only.
    """

    k: int
    pad_multiple: int
    input_range: str = "0..255"
    input_layout: str = "NCHW RGB"
    fp16: bool = False
    model_config: dict = field(default_factory=dict)
    package_version: str = ""
    checkpoint_sha256: str = ""
    training_data: str = ""
    step: int = 0
    short_side: int = 0
    outputs: tuple[str, ...] = (OUTPUT_NAME,)

    def __post_init__(self) -> None:
        if not self.outputs or self.outputs[0] != OUTPUT_NAME or not set(self.outputs) <= set(OUTPUT_NAMES) \
                or len(set(self.outputs)) != len(self.outputs):
            raise ValueError(f"outputs must be probs, optionally followed by boundaries; got {self.outputs!r}")

    @property
    def min_padded_side(self) -> int:
        """Smallest H and W the graph accepts (:func:`min_padded_side`); the runtime pads
        small images up to this."""
        return min_padded_side(self.pad_multiple, self.model_config.get("padding_mode", "zeros"))

    def to_metadata(self) -> dict[str, str]:
        """Return the ``metadata_props`` entries (all strings) for this description."""
        values = asdict(self)
        out = {f"{PREFIX}format_version": str(FORMAT_VERSION)}
        for key, value in values.items():
            if isinstance(value, dict):
                out[PREFIX + key] = json.dumps(value, sort_keys=True)
            elif isinstance(value, tuple):
                out[PREFIX + key] = ",".join(value)
            elif isinstance(value, bool):
                out[PREFIX + key] = "1" if value else "0"
            else:
                out[PREFIX + key] = str(value)
        return out

    @classmethod
    def from_metadata(cls, props: dict[str, str], *, source: str = "model") -> ModelInfo:
        """Parse ``metadata_props`` back; raise :class:`ModelError` naming ``source`` if invalid."""
        version = props.get(f"{PREFIX}format_version")
        if version is None:
            raise ModelError(f"{source} has no wnet metadata: was it made by `wnet export`?")
        try:
            if int(version) > FORMAT_VERSION:
                raise ModelError(
                    f"{source} uses wnet metadata format {version}; this wnet reads up to "
                    f"{FORMAT_VERSION}: upgrade wnet"
                )
            return cls(
                k=int(props[PREFIX + "k"]),
                pad_multiple=int(props[PREFIX + "pad_multiple"]),
                input_range=props.get(PREFIX + "input_range", "0..255"),
                input_layout=props.get(PREFIX + "input_layout", "NCHW RGB"),
                fp16=props.get(PREFIX + "fp16", "0") == "1",
                model_config=json.loads(props.get(PREFIX + "model_config", "{}")),
                package_version=props.get(PREFIX + "package_version", ""),
                checkpoint_sha256=props.get(PREFIX + "checkpoint_sha256", ""),
                training_data=props.get(PREFIX + "training_data", ""),
                step=int(props.get(PREFIX + "step", "0")),
                short_side=int(props.get(PREFIX + "short_side", "0")),
                outputs=tuple(props.get(PREFIX + "outputs", OUTPUT_NAME).split(",")),
            )
        except (KeyError, ValueError) as exc:
            raise ModelError(f"{source} has malformed wnet metadata ({exc})") from exc


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file: what ties an exported model to its checkpoint, and a run's
    records to the model that made them."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

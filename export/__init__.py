"""ONNX export of the trained W-Net encoder (needs the ``train`` extra: torch, onnx).

``export_onnx(checkpoint)`` writes the self-describing ``.onnx`` file that ``wnet segment``
runs, after checking it against PyTorch; see :mod:`export.onnx_export`.
"""

from export.onnx_export import ExportOptions, ExportResult, export_model, export_onnx

__all__ = ["ExportOptions", "ExportResult", "export_model", "export_onnx"]

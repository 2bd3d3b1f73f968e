"""wnet: fully unsupervised image segmentation with W-Net (Xia & Kulis 2017).

The ``wnetcli`` package holds everything that runs without PyTorch: the command-line
interface, segmentation through onnxruntime, hierarchical merging and the BSDS500
benchmark. Training (``training``) and ONNX export (``export``) need the ``train`` extra.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

"""Trained PNNs out of PyTorch: ONNX (:func:`export_onnx`, checked in onnxruntime), AOTInductor
packages (:func:`export_aoti`, checked by loading them back) and the ``pnn-export`` command
(:mod:`pnn_ext.export.cli`). docs/export.md has the whole story (torch.func, TorchScript)."""
from .aoti import AotiReport, export_aoti
from .checks import ExportError
from .onnx import OnnxReport, export_onnx, poly_act_onnx, translation_table

__all__ = ["AotiReport", "ExportError", "OnnxReport", "export_aoti", "export_onnx", "poly_act_onnx",
           "translation_table"]

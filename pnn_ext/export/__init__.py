"""Trained PNNs out of PyTorch: ONNX (:func:`export_onnx`, checked in onnxruntime), AOTInductor
packages (:func:`export_aoti`, checked by loading them) and the ``pnn-export`` command (cli)."""
from .onnx import ExportError, OnnxReport, export_onnx, poly_act_onnx, translation_table

__all__ = ["ExportError", "OnnxReport", "export_onnx", "poly_act_onnx", "translation_table"]

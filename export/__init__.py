"""ONNX, TensorRT and AOTInductor exporters and runners, installed as cmrvsr_fast.export."""

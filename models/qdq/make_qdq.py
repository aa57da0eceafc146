"""Quantizes edgetune's small MobileNet-style test model into ONNX Runtime's QDQ form
(DequantizeLinear -> Conv -> QuantizeLinear, per-channel int8 weights, u8 activations):
the kind of already-quantized model a user brings to `finetune-head convert`.

    cargo run -p finetune-head --example testmodel -- mobilenet /tmp/mobilenet-32.onnx 32
    python3 -m pip install onnxruntime==1.32.0 onnx numpy
    python3 models/qdq/make_qdq.py /tmp/mobilenet-32.onnx models/qdq/mobilenet-32-qdq.onnx

The model is first pre-processed as ONNX Runtime recommends (BatchNormalization folded
into Conv). Calibration uses 16 seeded random images (pixels 0-255, ImageNet mean/std), so the
output is reproducible for a given onnxruntime version.
"""
import sys
import tempfile

import numpy as np
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process


class Images(CalibrationDataReader):
    def __init__(self, n=16, seed=0):
        rng = np.random.default_rng(seed)
        mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
        std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
        self.items = iter([
            {"input": ((rng.integers(0, 256, (1, 3, 32, 32)) / 255.0 - mean) / std).astype(np.float32)}
            for _ in range(n)
        ])

    def get_next(self):
        return next(self.items, None)


src, dst = sys.argv[1], sys.argv[2]
# ONNX Runtime's recommended pre-processing: shape inference and graph optimization,
# which folds each BatchNormalization into its Conv.
pre = tempfile.NamedTemporaryFile(suffix=".onnx").name
quant_pre_process(src, pre, skip_symbolic_shape=True)
quantize_static(pre, dst, Images(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
print("wrote", dst)

"""torchvision's MobileNetV2 and ResNet18 at full width and 224x224, the size issue #14's
table counts, for `scripts/icount.sh` (not committed: 14 MB and 47 MB). Random
weights (full_width_sizes.random_models): an instruction count does not depend on the
values. Writes OUT/{mobilenet_v2,resnet18}-224.onnx (torch.onnx.export, as make_models.py exports),
their ONNX Runtime QDQ models OUT/<name>-224-qdq.onnx (quantize_static per channel,
as make_models.py quantizes), and OUT/calib224/, this folder's calib/ images scaled to
224x224 (bilinear) for `finetune-head convert --calib`.

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install -r models/torchvision/requirements.txt
    /tmp/torchvenv/bin/python3 models/torchvision/full_width_224.py target/icount-224
    bash scripts/icount.sh -k 1 -c target/icount-224/calib224 \\
        target/icount-224/mobilenet_v2-224 target/icount-224/resnet18-224
"""
import os
import sys
import tempfile

import numpy as np
import torch
from full_width_sizes import random_models  # this folder's: same models, same seed
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


class Images(CalibrationDataReader):
    def __init__(self, x):
        self.items = iter([{"image": x[i:i + 1]} for i in range(len(x))])

    def get_next(self):
        return next(self.items, None)


def calibration(out):
    """The calib/ images at 224x224: written to OUT/calib224, returned preprocessed."""
    folder = os.path.join(out, "calib224")
    os.makedirs(folder, exist_ok=True)
    pixels = []
    for name in sorted(os.listdir(os.path.join(HERE, "calib"))):
        if name.endswith(".png"):
            img = Image.open(os.path.join(HERE, "calib", name)).convert("RGB")
            img = img.resize((SIZE, SIZE), Image.BILINEAR)
            img.save(os.path.join(folder, name))
            pixels.append(np.asarray(img))
    x = np.stack(pixels).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    return ((x - MEAN) / STD).astype(np.float32)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "target/icount-224"
    os.makedirs(out, exist_ok=True)
    x_calib = calibration(out)
    for name, model in random_models():
        onnx = os.path.join(out, f"{name}-{SIZE}.onnx")
        torch.onnx.export(model, (torch.zeros(1, 3, SIZE, SIZE),), onnx, input_names=["image"],
                          output_names=["logits"], opset_version=17, dynamo=False,
                          do_constant_folding=True)
        with tempfile.TemporaryDirectory() as tmp:
            pre = os.path.join(tmp, "pre.onnx")
            quant_pre_process(onnx, pre, skip_symbolic_shape=True)
            quantize_static(pre, os.path.join(out, f"{name}-{SIZE}-qdq.onnx"), Images(x_calib),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        print(f"wrote {onnx} and its QDQ model")


if __name__ == "__main__":
    main()

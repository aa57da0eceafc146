"""Bundle sizes of torchvision's MobileNetV2 and ResNet18 at full width, f32 against int8
(issue #14's "int8 bundles <= 0.3x the f32 size"). The committed models are reduced in
width, where per-channel f32 scales and biases weigh more; this measures the full ones
without committing them (14 MB and 47 MB): random weights (weights=None, nothing is
downloaded; batch-norm statistics given some spread), exported by torch.onnx.export at
64x64 into a temporary folder, converted by finetune-head with and without
`--quantize int8` (calibrated on this folder's calib/ images), and the backbone sections
compared.

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install -r models/torchvision/requirements.txt
    cargo build --release -p finetune-head
    /tmp/torchvenv/bin/python3 models/torchvision/full_width_sizes.py target/release/finetune-head

Measured 2026-12-05 (finetune-head at 53aefc9): MobileNetV2 2.18 MB / 8.21 MB = 0.27x,
ResNet18 9.78 MB / 41.46 MB = 0.24x; the converter's cosine to f32 on 6 held-out images,
min 0.9999 and 0.9996.
"""
import os
import struct
import subprocess
import sys
import tempfile

import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
PREPROCESS = ["--scale", "0.00392157", "--mean", "0.485,0.456,0.406",
              "--std", "0.229,0.224,0.225"]


def backbone_bytes(bundle):
    """Length of a bundle's backbone section (the second entry of its section table)."""
    with open(bundle, "rb") as f:
        head = f.read(10 + 3 * 16)
    _offset, length = struct.unpack_from("<QQ", head, 10 + 16)
    return length


def random_models():
    """(name, model) of torchvision's MobileNetV2 and ResNet18 at full width, random
    weights (seed 0, nothing downloaded), batch-norm statistics given some spread, in
    eval mode."""
    torch.manual_seed(0)
    for name, model in [("mobilenet_v2", torchvision.models.mobilenet_v2(weights=None)),
                        ("resnet18", torchvision.models.resnet18(weights=None))]:
        model.eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 2.0)
        yield name, model


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "target/release/finetune-head"
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in random_models():
            onnx = os.path.join(tmp, f"{name}.onnx")
            torch.onnx.export(model, torch.randn(1, 3, 64, 64), onnx, input_names=["image"],
                              output_names=["logits"], opset_version=17, dynamo=False)
            sizes = {}
            for kind, extra in [("f32", []),
                                ("int8", ["--quantize", "int8", "--calib",
                                          os.path.join(HERE, "calib")])]:
                out = os.path.join(tmp, f"{name}-{kind}.bundle")
                subprocess.run([tool, "convert", onnx, *PREPROCESS, *extra, "-o", out],
                               check=True, stdout=subprocess.DEVNULL)
                sizes[kind] = backbone_bytes(out)
            print(f"{name}: int8 {sizes['int8']:,} / f32 {sizes['f32']:,} bytes = "
                  f"{sizes['int8'] / sizes['f32']:.2f}x")


if __name__ == "__main__":
    main()

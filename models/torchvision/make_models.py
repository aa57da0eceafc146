"""Makes small models from a real exporter for edgetune's quantizer tests (issue #14):
torchvision's MobileNetV2 (width 0.25) and ResNet18 (BasicBlock, [2, 2, 2, 2], channel widths
scaled down), briefly trained with PyTorch on a procedurally generated 10-class image task,
written by PyTorch's own exporter (torch.onnx.export, the TorchScript exporter,
dynamo=False), then quantized by ONNX Runtime's quantize_static (QDQ, per-channel int8
weights, u8 activations) as models/qdq/make_qdq.py does.

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install -r models/torchvision/requirements.txt
    /tmp/torchvenv/bin/python3 models/torchvision/make_models.py     # from the repository root

Writes, next to this script:
    mobilenet_v2-w025-64.onnx, mobilenet_v2-w025-64-qdq.onnx
    resnet18-w<W>-64.onnx, resnet18-w<W>-64-qdq.onnx   (W = --resnet-width, default 8)
    resnet18-w<W>-64-nofold.onnx      the trained ResNet exported with do_constant_folding=False
                                      (BatchNormalization kept; Identity nodes share equal biases)
    resnet18-w<W>-64-untrained.onnx   the ResNet as initialized, default export (Identity nodes
                                      share the all-zero folded conv biases)
    calib/NN-<class>.png     32 calibration images (the ones the QDQ models were calibrated on)
    heldout/NN-<class>.png   32 held-out images (used neither for training nor calibration)

Input (both models): a 64x64 RGB image, pixels p in 0..255 (uint8), as
(p / 255 - mean) / std with torchvision's ImageNet mean (0.485, 0.456, 0.406) and std
(0.229, 0.224, 0.225), NCHW float32, name `image`, shape [1, 3, 64, 64]. Output `logits`
[1, 10]. The PNGs hold the raw pixels; for edgetune's converter the preprocessing is
`--scale 0.00392157 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225`.

Nothing is downloaded (weights=None). Seeds are fixed, one thread, deterministic
algorithms. --probe-identity also exports untrained/other-setting variants to a temporary
folder (not kept) and prints their op-type counts, to show which settings make the
exporter emit Identity nodes.
"""
import argparse
import collections
import hashlib
import os
import sys
import tempfile
import time

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,  # noqa: E402
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: E402
from torchvision.models.resnet import BasicBlock, ResNet  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = 64
CLASSES = 10
CLASS_NAMES = ["hstripes", "vstripes", "dstripes", "disk", "square", "triangle", "ring",
               "gradient", "checker", "cross"]
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
OPSET = 17
STEPS, BATCH, LR, WEIGHT_DECAY = 600, 64, 5e-3, 1e-4
SEED_TORCH = 0
SEED_TRAIN, SEED_VAL, SEED_CALIB, SEED_HELDOUT = 1, 2, 3, 4  # numpy image streams
N_VAL, N_CALIB, N_HELDOUT = 512, 32, 32


# ---------------------------------------------------------------- data

def shape_mask(rng, c):
    """[64, 64] float mask in [0, 1] of class c, random size, position, period, angle."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    cy, cx = rng.uniform(20, 44, 2)
    if c in (0, 1, 2):
        period, phase = rng.uniform(6, 14), rng.uniform(0, 2 * np.pi)
        t = {0: y, 1: x, 2: (x + y if rng.random() < 0.5 else x - y) / np.sqrt(2)}[c]
        return (np.sin(2 * np.pi * t / period + phase) > 0).astype(np.float32)
    if c == 3:
        r = rng.uniform(8, 18)
        return ((y - cy) ** 2 + (x - cx) ** 2 < r * r).astype(np.float32)
    if c == 4:
        h = rng.uniform(8, 16)
        return ((np.abs(y - cy) < h) & (np.abs(x - cx) < h)).astype(np.float32)
    if c == 5:
        h = rng.uniform(10, 18)  # upward triangle: apex at cy - h, base at cy + h
        dy = (y - (cy - h)) / (2 * h)
        return ((dy >= 0) & (dy <= 1) & (np.abs(x - cx) <= dy * h)).astype(np.float32)
    if c == 6:
        r, w = rng.uniform(10, 20), rng.uniform(3, 6)
        d = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
        return (np.abs(d - r) < w / 2).astype(np.float32)
    if c == 7:
        a = rng.uniform(0, 2 * np.pi)
        t = (np.cos(a) * (x - 32) + np.sin(a) * (y - 32)) / 45 + 0.5
        return np.clip(t, 0, 1).astype(np.float32)
    if c == 8:
        cell = rng.uniform(6, 12)
        oy, ox = rng.uniform(0, cell, 2)
        return ((np.floor((y + oy) / cell) + np.floor((x + ox) / cell)) % 2).astype(np.float32)
    if c == 9:
        w, arm = rng.uniform(4, 8), rng.uniform(12, 20)
        bar = lambda a, b: (np.abs(a) < w / 2) & (np.abs(b) < arm)  # noqa: E731
        return (bar(y - cy, x - cx) | bar(x - cx, y - cy)).astype(np.float32)
    raise ValueError(c)


def make_images(rng, n):
    """n images of balanced random classes: uint8 [n, 64, 64, 3] and int64 labels [n].
    Random background and foreground colours (mean channel difference >= 0.3), Gaussian
    pixel noise of sd 0.03-0.10, then rounded to 0..255."""
    labels = rng.permutation(np.arange(n) % CLASSES).astype(np.int64)
    out = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i, c in enumerate(labels):
        while True:
            bg, fg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
            if np.abs(bg - fg).mean() >= 0.3:
                break
        m = shape_mask(rng, int(c))[..., None]
        img = bg * (1 - m) + fg * m + rng.normal(0, rng.uniform(0.03, 0.10), (SIZE, SIZE, 3))
        out[i] = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return out, labels


def save_pngs(folder, pixels, labels):
    """Writes each image as folder/NN-<class>.png (8-bit RGB, lossless)."""
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    for old in os.listdir(folder):
        if old.endswith(".png"):
            os.remove(os.path.join(folder, old))
    for i, (p, c) in enumerate(zip(pixels, labels)):
        Image.fromarray(p, "RGB").save(os.path.join(folder, f"{i:02d}-{int(c)}.png"), optimize=True)


def preprocess(pixels):
    """uint8 [n, 64, 64, 3] -> float32 [n, 3, 64, 64]: (p / 255 - mean) / std."""
    x = pixels.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    return ((x - MEAN) / STD).astype(np.float32)


# ---------------------------------------------------------------- models

class ResNetNarrow(ResNet):
    """torchvision's ResNet (its forward, module names and init) with every width scaled
    by width/64: stem and layer1 `width`, then 2x, 4x, 8x. torchvision hard-codes 64 for
    the stem and 512 for the classifier's input, so those three modules are rebuilt at the
    narrow width and initialized as torchvision initializes them."""

    def __init__(self, width, layers=(2, 2, 2, 2), num_classes=CLASSES):
        self.width = width
        super().__init__(BasicBlock, list(layers), num_classes=num_classes)
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(width)
        self.fc = nn.Linear(8 * width * BasicBlock.expansion, num_classes)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if planes == 64:  # layer1: its input is the (narrow) stem
            self.inplanes = self.width
        return super()._make_layer(block, planes * self.width // 64, blocks, stride, dilate)


def make_mobilenet():
    return torchvision.models.mobilenet_v2(weights=None, width_mult=0.25, num_classes=CLASSES)


def make_resnet(width):
    return ResNetNarrow(width)


def embed_hook(model):
    """Returns (model's final Linear, list that receives its inputs when the model runs)."""
    lin = model.fc if isinstance(model, ResNet) else model.classifier[-1]
    got = []
    lin.register_forward_hook(lambda mod, inp, out: got.append(inp[0].detach()))
    return lin, got


def predict(model, x, batch=256):
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[s:s + batch])).numpy()
                               for s in range(0, len(x), batch)])


def train(model, name, x_val, y_val):
    rng = np.random.default_rng(SEED_TRAIN)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS)
    t0, run_loss, run_acc = time.time(), 0.0, 0.0
    for step in range(1, STEPS + 1):
        model.train()
        pixels, labels = make_images(rng, BATCH)  # a fresh batch every step
        xb, yb = torch.from_numpy(preprocess(pixels)), torch.from_numpy(labels)
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        run_loss += loss.item()
        run_acc += (logits.argmax(1) == yb).float().mean().item()
        if step % 50 == 0:
            print(f"  {name} step {step:4d}  loss {run_loss / 50:.4f}  batch acc {run_acc / 50:.4f}"
                  f"  ({time.time() - t0:.0f} s)")
            run_loss = run_acc = 0.0
    val_acc = float((predict(model, x_val).argmax(1) == y_val).mean())
    print(f"  {name}: {STEPS} steps of {BATCH} fresh images ({STEPS * BATCH} images), "
          f"{time.time() - t0:.0f} s; accuracy on {len(y_val)} validation images {val_acc:.4f}")
    return val_acc


# ---------------------------------------------------------------- ONNX

def export(model, path, **kw):
    model.eval()
    args = dict(dynamo=False, opset_version=OPSET, input_names=["image"],
                output_names=["logits"], do_constant_folding=True)
    args.update(kw)
    torch.onnx.export(model, (torch.zeros(1, 3, SIZE, SIZE),), path, **args)
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    return m


def op_counts(m):
    return dict(sorted(collections.Counter(n.op_type for n in m.graph.node).items()))


def shared_initializers(m):
    """Initializers read by more than one node input, with how often."""
    inits = {i.name for i in m.graph.initializer}
    uses = collections.Counter(i for n in m.graph.node for i in n.input if i in inits)
    return {k: v for k, v in uses.items() if v > 1}


def identity_nodes(m):
    return [(n.name, list(n.input), list(n.output)) for n in m.graph.node if n.op_type == "Identity"]


def embedding_tensor(m):
    """Name of the tensor feeding the trailing Gemm (what edgetune's converter finds).
    In a QDQ graph the Gemm's output passes QuantizeLinear/DequantizeLinear first, and its
    input is a DequantizeLinear output (the dequantized embedding)."""
    prod = {o: n for n in m.graph.node for o in n.output}
    node = prod[m.graph.output[0].name]
    while node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        node = prod[node.input[0]]
    assert node.op_type == "Gemm", node.op_type
    return node.input[0]


def session(m, extra_output=None, dim=None):
    c = onnx.ModelProto()
    c.CopyFrom(m)
    if extra_output:
        c.graph.output.append(helper.make_tensor_value_info(extra_output, TensorProto.FLOAT, [1, dim]))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(c.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run_ort(sess, x, names):
    outs = [sess.run(names, {"image": x[i:i + 1]}) for i in range(len(x))]
    return [np.concatenate([o[k] for o in outs]) for k in range(len(names))]


class Images(CalibrationDataReader):
    def __init__(self, x):
        self.items = iter([{"image": x[i:i + 1]} for i in range(len(x))])

    def get_next(self):
        return next(self.items, None)


def quantize(src, dst, x_calib):
    """As models/qdq/make_qdq.py: ONNX Runtime's pre-processing, then QDQ per channel."""
    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        quantize_static(pre, dst, Images(x_calib), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return onnx.load(dst)


def file_line(path):
    data = open(path, "rb").read()
    return f"{os.path.basename(path)}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}"


def cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def report(m, path, emb_dim, torch_model, x_held, y_held, qdq=None, qdq_path=None):
    n_values = sum(int(np.prod(i.dims)) for i in m.graph.initializer)
    print(file_line(path))
    print(f"  opset {m.opset_import[0].version}, IR {m.ir_version}, producer {m.producer_name} "
          f"{m.producer_version}, {len(m.graph.node)} nodes, {len(m.graph.initializer)} initializers "
          f"({n_values} values)")
    print(f"  op types: {op_counts(m)}")
    print(f"  Identity nodes: {identity_nodes(m)}")
    print(f"  initializers read by more than one node: {shared_initializers(m)}")
    emb = embedding_tensor(m)
    print(f"  embedding tensor (input of the trailing Gemm): {emb!r}, {emb_dim} values")
    sess = session(m, emb, emb_dim)
    lg, em = run_ort(sess, x_held, ["logits", emb])
    ref = predict(torch_model, x_held)
    print(f"  onnxruntime vs torch on held-out: logits max abs diff {np.abs(lg - ref).max():.2e}; "
          f"held-out accuracy {float((lg.argmax(1) == y_held).mean()):.4f}")
    if qdq is not None:
        print(file_line(qdq_path))
        print(f"  {len(qdq.graph.node)} nodes; op types: {op_counts(qdq)}")
        qemb = embedding_tensor(qdq)
        qlg, qem = run_ort(session(qdq, qemb, emb_dim), x_held, ["logits", qemb])
        cos = cosine(em, qem)
        print(f"  QDQ in onnxruntime vs float on held-out: embedding {qemb!r} cosine mean "
              f"{cos.mean():.4f} min {cos.min():.4f}; top-1 agreement "
              f"{float((qlg.argmax(1) == lg.argmax(1)).mean()):.4f}; accuracy "
              f"{float((qlg.argmax(1) == y_held).mean()):.4f}")


def probe_identity(models):
    """Which export settings make the TorchScript exporter write Identity nodes."""
    with tempfile.TemporaryDirectory() as tmp:
        for label, model in models:
            for setting, kw in [("default (do_constant_folding=True)", {}),
                                ("do_constant_folding=False", dict(do_constant_folding=False)),
                                ("keep_initializers_as_inputs=True", dict(keep_initializers_as_inputs=True)),
                                ("training=PRESERVE", dict(training=torch.onnx.TrainingMode.PRESERVE)),
                                ("training=TRAINING", dict(training=torch.onnx.TrainingMode.TRAINING,
                                                           do_constant_folding=False))]:
                p = os.path.join(tmp, "probe.onnx")
                try:
                    m = export(model, p, **kw)
                except Exception as e:  # noqa: BLE001
                    print(f"  probe {label}, {setting}: export failed: {type(e).__name__}: {e}")
                    continue
                ids = identity_nodes(m)
                print(f"  probe {label}, {setting}: {len(m.graph.node)} nodes, "
                      f"{len(ids)} Identity, {len(shared_initializers(m))} shared initializers, "
                      f"ops {op_counts(m)}")
                for name, ins, outs in ids[:6]:
                    print(f"      {name}: {ins} -> {outs}")
                if len(ids) > 6:
                    print(f"      ... {len(ids) - 6} more")


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--resnet-width", type=int, default=8,
                    help="stem/layer1 width of the ResNet18 (torchvision's is 64); default 8")
    ap.add_argument("--no-identity-variants", dest="identity_variants", action="store_false",
                    help="skip resnet18-*-nofold.onnx and resnet18-*-untrained.onnx")
    ap.add_argument("--probe-identity", action="store_true",
                    help="also print what other export settings make (nothing written)")
    ap.add_argument("--images-only", action="store_true",
                    help="write only calib/ and heldout/ (no training, no models)")
    ap.add_argument("--only", choices=["mobilenet", "resnet"], help="make only this model")
    a = ap.parse_args()

    t0 = time.time()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, torchvision "
          f"{torchvision.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}, "
          f"numpy {np.__version__}")

    pv, y_val = make_images(np.random.default_rng(SEED_VAL), N_VAL)
    pc, y_calib = make_images(np.random.default_rng(SEED_CALIB), N_CALIB)
    ph, y_held = make_images(np.random.default_rng(SEED_HELDOUT), N_HELDOUT)
    x_val, x_calib, x_held = preprocess(pv), preprocess(pc), preprocess(ph)
    save_pngs(os.path.join(HERE, "calib"), pc, y_calib)
    save_pngs(os.path.join(HERE, "heldout"), ph, y_held)
    print("calib/, heldout/:", len(pc), len(ph), "PNGs; held-out classes",
          np.bincount(y_held, minlength=CLASSES))
    if a.images_only:
        return 0

    specs = [("mobilenet", "mobilenet_v2-w025-64", make_mobilenet),
             ("resnet", f"resnet18-w{a.resnet_width}-64", lambda: make_resnet(a.resnet_width))]
    probes = []
    for key, stem, make in specs:
        if a.only and a.only != key:
            continue
        torch.manual_seed(SEED_TORCH)
        model = make()
        if a.probe_identity:
            torch.manual_seed(SEED_TORCH)
            probes.append((f"{stem} untrained", make().eval()))
        n_par = sum(p.numel() for p in model.parameters())
        n_bn = sum(b.numel() for n, b in model.named_buffers() if "running" in n)
        print(f"{stem}: {n_par} trainable parameters (+ {n_bn} BN running statistics)")
        train(model, stem, x_val, y_val)
        model.eval()
        lin, _ = embed_hook(model)
        path = os.path.join(HERE, stem + ".onnx")
        m = export(model, path)
        qpath = os.path.join(HERE, stem + "-qdq.onnx")
        q = quantize(path, qpath, x_calib)
        report(m, path, lin.in_features, model, x_held, y_held, q, qpath)
        if key == "resnet" and a.identity_variants:
            # The same trained model exported without constant folding: BatchNormalization
            # kept, and the exporter shares equal-valued initializers through Identity nodes
            # (each first block's bn2.bias and downsample.1.bias get identical gradients from
            # the residual Add, so training leaves them bit-equal).
            p = os.path.join(HERE, stem + "-nofold.onnx")
            report(export(model, p, do_constant_folding=False), p, lin.in_features, model,
                   x_held, y_held)
            # The model as initialized (seed 0, never trained), exported as above: BatchNorm
            # at its initial statistics, so the folded conv biases are zeros, equal for
            # equal widths, shared through Identity nodes.
            torch.manual_seed(SEED_TORCH)
            fresh = make().eval()
            p = os.path.join(HERE, stem + "-untrained.onnx")
            report(export(fresh, p), p, lin.in_features, fresh, x_held, y_held)
        if a.probe_identity:
            probes.append((f"{stem} trained", model))
    if probes:
        probe_identity(probes)
    print(f"total time {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

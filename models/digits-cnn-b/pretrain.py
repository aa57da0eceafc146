"""Pre-trains edgetune's second digits backbone ("b") with PyTorch on the UCI handwritten
digits 5-9 only and exports it with PyTorch's own ONNX exporter (torch.onnx.export, the
TorchScript exporter, dynamo=False). A head trained later for the digits 0-4, digits it
never saw, is a real transfer. It differs from models/digits-cnn (numpy, digits 0-4, 8x8
input, hand-written ONNX) in framework, exporter, classes, input size and architecture.

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install -r models/digits-cnn-b/requirements.txt
    /tmp/torchvenv/bin/python3 models/digits-cnn-b/pretrain.py      # from the repository root

Input: the 8x8 digit (CSV values 0-16) divided by 16, then upsampled to 16x16 by
torch.nn.functional.interpolate(size=(16, 16), mode="bilinear", align_corners=False)
(`upsample16` below; `upsample16_numpy` is the same thing written out, and is checked
against it). The model takes that [1,1,16,16] float image in [0,1] as `image`.

    image [1,1,16,16] -> conv1 (1->16, 3x3, pad 1) + BN + ReLU        16x16
    -> conv2 (16->32, 3x3, stride 2, pad 1) + BN + ReLU                 8x8
    -> conv3 (32->48, 3x3, pad 1) + BN + ReLU                           8x8
    -> conv4 (48->96, 3x3, stride 2, pad 1) + BN + ReLU                 4x4
    -> pool (AdaptiveAvgPool2d 1: GlobalAveragePool) -> flatten [1,96] (the embedding)
    -> dropout (p 0.2, gone in eval mode) -> classifier (Linear 96->5: Gemm) -> logits [1,5]

Training: AdamW, cosine learning rate, random shifts and small rotations, fixed seeds,
one thread, deterministic algorithms. Whatever the exporter writes is kept as it is (in
eval mode it folds the batch norms into the convolutions). The script then checks the
ONNX file with onnx.checker and ONNX Runtime against torch, and fits a logistic regression
on the embeddings of the digits 0-4 (transfer check).
"""
import gzip
import hashlib
import os
import sys
import time

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import sklearn  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "digits", "digits.csv.gz")
OUT = os.path.join(HERE, "digits-cnn-b-5to9.onnx")
SEED = 0
EPOCHS, BATCH, LR, WEIGHT_DECAY = 60, 32, 3e-3, 1e-4
MAX_ROT_DEG, MAX_SHIFT_PX = 12.0, 2.0  # augmentation, in 16x16 pixels
OPSET = 13


# ---------------------------------------------------------------- data

def load_digits():
    """x [N,1,8,8] float32 in [0,1] (pixel/16), y [N] int64."""
    with gzip.open(DATA, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
    return (rows[:, :64].reshape(-1, 1, 8, 8) / 16.0).astype(np.float32), rows[:, 64]


def upsample16(x8):
    """[N,1,8,8] -> [N,1,16,16]: PyTorch's bilinear resize, half-pixel centres."""
    return F.interpolate(torch.from_numpy(x8), size=(16, 16), mode="bilinear",
                         align_corners=False).numpy()


def upsample16_numpy(x8):
    """The same resize written out. Output pixel o (0..15, per axis) samples the input at
    s = (o + 0.5) / 2 - 0.5, clamped below at 0; i0 = floor(s), i1 = min(i0 + 1, 7),
    w = s - i0, value = (1 - w) * in[i0] + w * in[i1]. That is: out[0] = in[0],
    out[15] = in[7], out[2k] = 0.25 in[k-1] + 0.75 in[k] (k 1..7),
    out[2k+1] = 0.75 in[k] + 0.25 in[k+1] (k 0..6); rows first or columns first alike."""
    s = np.maximum((np.arange(16) + 0.5) / 2 - 0.5, 0.0)
    i0 = np.floor(s).astype(int)
    i1 = np.minimum(i0 + 1, 7)
    w = (s - i0).astype(np.float32)
    a = np.zeros((16, 8), np.float32)  # the resize as a matrix: out = A @ in @ A.T
    a[np.arange(16), i0] += 1 - w
    a[np.arange(16), i1] += w
    return np.einsum("oi,ncij,pj->ncop", a, x8, a).astype(np.float32)


def augment(x, gen):
    """Random rotation (+-MAX_ROT_DEG) and shift (+-MAX_SHIFT_PX) of each 16x16 image,
    bilinear, zero fill."""
    n = x.shape[0]
    ang = (torch.rand(n, generator=gen) * 2 - 1) * (MAX_ROT_DEG * np.pi / 180)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (MAX_SHIFT_PX * 2 / 16)  # normalized
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ---------------------------------------------------------------- model

def conv_bn(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class DigitsCnnB(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.conv1 = conv_bn(1, 16, 1)    # 16x16
        self.conv2 = conv_bn(16, 32, 2)   # 8x8
        self.conv3 = conv_bn(32, 48, 1)   # 8x8
        self.conv4 = conv_bn(48, 96, 2)   # 4x4
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(96, classes)

    def embed(self, x):
        return self.flatten(self.pool(self.conv4(self.conv3(self.conv2(self.conv1(x))))))

    def forward(self, x):
        return self.classifier(self.dropout(self.embed(x)))


def predict(model, x, what="logits", batch=256):
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            xb = torch.from_numpy(x[s:s + batch])
            out.append((model(xb) if what == "logits" else model.embed(xb)).numpy())
    return np.concatenate(out)


def train(model, x, y, gen):
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps = EPOCHS * int(np.ceil(len(x) / BATCH))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for s in range(0, len(x), BATCH):
            idx = order[s:s + BATCH]
            xb = augment(xt[idx], gen)
            loss = F.cross_entropy(model(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if epoch % 10 == 9:
            print(f"  epoch {epoch + 1:3d}  loss {total / len(x):.4f}")


# ---------------------------------------------------------------- ONNX

def export(model, path):
    model.eval()
    torch.onnx.export(model, (torch.zeros(1, 1, 16, 16),), path, dynamo=False,
                      opset_version=OPSET, input_names=["image"], output_names=["logits"],
                      do_constant_folding=True)
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    return m


def embedding_tensor(m):
    """Name of the tensor feeding the trailing Gemm (what edgetune's converter finds)."""
    prod = {o: n for n in m.graph.node for o in n.output}
    gemm = prod[m.graph.output[0].name]
    assert gemm.op_type == "Gemm", gemm.op_type
    return gemm.input[0]


def with_output(m, name, dim):
    c = onnx.ModelProto()
    c.CopyFrom(m)
    c.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, dim]))
    return c


def session(m):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def describe(m):
    shapes = {}
    inferred = onnx.shape_inference.infer_shapes(m)
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    inits = {i.name: list(i.dims) for i in m.graph.initializer}
    print(f"graph: opset {m.opset_import[0].version}, IR {m.ir_version}, producer "
          f"{m.producer_name} {m.producer_version}, {len(m.graph.node)} nodes")
    for n in m.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        ins = [f"{i}{inits[i]}" if i in inits else i for i in n.input]
        print(f"  {n.op_type:18s} {n.name:24s} {ins} -> {[(o, shapes.get(o)) for o in n.output]} {attrs}")


# ---------------------------------------------------------------- main

def main():
    t0 = time.time()
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(SEED)
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, onnx {onnx.__version__}, "
          f"onnxruntime {ort.__version__}, numpy {np.__version__}, scikit-learn {sklearn.__version__}")

    x8, y = load_digits()
    x = upsample16(x8)
    up_diff = float(np.abs(x - upsample16_numpy(x8)).max())
    print(f"upsample 8x8 -> 16x16: torch vs written-out numpy max abs diff {up_diff:.1e}; "
          f"range [{x.min():.3f}, {x.max():.3f}]")
    assert up_diff < 1e-6, up_diff

    src = np.flatnonzero(y >= 5)
    tr, te = train_test_split(src, test_size=0.2, stratify=y[src], random_state=SEED)
    tr, te = np.sort(tr), np.sort(te)
    ys = y - 5  # classes 0..4 of the pretraining head stand for the digits 5..9
    print(f"pretraining on digits 5-9: {len(tr)} train, {len(te)} held out")
    model = DigitsCnnB()
    print(f"{sum(p.numel() for p in model.parameters())} trainable parameters "
          f"(+ {sum(b.numel() for n, b in model.named_buffers() if 'running' in n)} BN running statistics)")
    train(model, x[tr], ys[tr], gen)
    acc = lambda idx: float((predict(model, x[idx]).argmax(1) == ys[idx]).mean())  # noqa: E731
    print(f"pretraining accuracy 5-9: train {acc(tr):.4f}  held-out {acc(te):.4f} "
          f"({int(round((1 - acc(te)) * len(te)))} errors of {len(te)})")

    m = export(model, OUT)
    data = open(OUT, "rb").read()
    n_params = sum(int(np.prod(i.dims)) for i in m.graph.initializer)
    print(f"wrote {os.path.relpath(OUT)}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}, "
          f"{n_params} values in initializers")
    describe(m)
    emb_name = embedding_tensor(m)
    print(f"embedding tensor (input of the trailing Gemm): {emb_name!r}, 96 values")

    # ONNX Runtime against torch on every image, all ten digits, one at a time (batch 1).
    sess = session(with_output(m, emb_name, 96))
    got_l, got_e = [], []
    for i in range(len(x)):
        lg, em = sess.run(["logits", emb_name], {"image": x[i:i + 1]})
        got_l.append(lg)
        got_e.append(em)
    got_l, got_e = np.concatenate(got_l), np.concatenate(got_e)
    ref_l, ref_e = predict(model, x), predict(model, x, "embedding")
    dl, de = float(np.abs(got_l - ref_l).max()), float(np.abs(got_e - ref_e).max())
    print(f"onnxruntime vs torch, all {len(x)} images: logits max abs diff {dl:.2e}, "
          f"embedding max abs diff {de:.2e}")
    assert dl < 1e-4 and de < 1e-4, (dl, de)

    # Transfer: ONNX Runtime embeddings of the digits 0-4 (never seen), logistic regression.
    tgt = np.flatnonzero(y <= 4)
    emb, yt = got_e[tgt].astype(np.float64), y[tgt]
    print(f"embeddings of 0-4: min {emb.min():.3f} max {emb.max():.3f} mean {emb.mean():.3f}, "
          f"{int((emb.max(0) == 0).sum())} of 96 always zero")
    e_tr, e_te, y_tr, y_te = train_test_split(emb, yt, test_size=0.3, stratify=yt, random_state=SEED)
    f_tr, f_va, g_tr, g_va = train_test_split(e_tr, y_tr, test_size=0.25, stratify=y_tr,
                                              random_state=SEED)

    grid = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]
    for scaled in (True, False):
        def fit(c, xs, ys_):
            lr = LogisticRegression(C=c, max_iter=10000)
            return (make_pipeline(StandardScaler(), lr) if scaled else lr).fit(xs, ys_)

        val = {c: fit(c, f_tr, g_tr).score(f_va, g_va) for c in grid}
        best = max(grid, key=lambda c: (val[c], -c))  # ties: the stronger regularization
        how = "standardized" if scaled else "raw"
        print(f"{how}: validation accuracy by C: " + ", ".join(f"{c:g}: {v:.4f}" for c, v in val.items()))
        clf = fit(best, e_tr, y_tr)
        print(f"transfer accuracy 0-4 ({how} embedding, logistic regression, C={best:g} chosen on a "
              f"{len(f_tr)}/{len(f_va)} validation split, refit on {len(e_tr)}, test {len(e_te)}): "
              f"train {clf.score(e_tr, y_tr):.4f}  test {clf.score(e_te, y_te):.4f}")
    print(f"total time {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

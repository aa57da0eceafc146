"""Pre-trains edgetune's small digits CNN backbone on the UCI handwritten digits 0-4 only,
so that a head trained later for the digits 5-9 (`finetune-head demo`) is a real transfer.

    python3 -m venv /tmp/pvenv
    /tmp/pvenv/bin/pip install -r models/digits-cnn/requirements.txt
    /tmp/pvenv/bin/python3 models/digits-cnn/pretrain.py      # from the repository root

Training is plain numpy (im2col convolutions, hand-written backprop, Adam), seeded, with
BLAS on one thread: re-running it writes the same file bit for bit (on the same machine
and library versions). The ONNX graph (opset 13, IR 8, batch fixed at 1):

    image [1,1,8,8] -> conv1 (1->16, 3x3, pad 1) -> relu1 -> conv2 (16->32) -> relu2
    -> pool (MaxPool 2x2/2, 4x4) -> conv3 (32->64) -> relu3 -> gap (GlobalAveragePool)
    -> embedding (Flatten) [1,64] -> classifier (Gemm, transB=1) -> logits [1,5]

The script then checks the ONNX model against the numpy forward with ONNX Runtime, and
fits a logistic regression on the 64-value embeddings of the digits 5-9 (transfer check).
"""
import gzip
import os
import sys

# One BLAS thread: the summation order, hence every bit of the weights, does not depend
# on the machine's core count. Must be set before numpy is imported.
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "digits", "digits.csv.gz")
OUT = os.path.join(HERE, "digits-cnn-0to4.onnx")
SEED = 0
EPOCHS, BATCH, LR = 40, 32, 2e-3
F32 = np.float32


# ---------------------------------------------------------------- data

def load_digits():
    with gzip.open(DATA, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
    x = (rows[:, :64].reshape(-1, 1, 8, 8) / 16.0).astype(F32)  # pixels 0..16 -> [0, 1]
    return x, rows[:, 64]


def stratified_split(y, test_fraction, rng):
    """Indices (train, test), `test_fraction` of every class in test."""
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = int(round(len(idx) * test_fraction))
        test.append(idx[:n])
        train.append(idx[n:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def random_shift(x, rng):
    """Shifts each image by dy, dx in {-1, 0, 1} pixels, zero fill."""
    out = np.zeros_like(x)
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    shifts = rng.integers(-1, 2, size=(len(x), 2))
    for i, (dy, dx) in enumerate(shifts):
        out[i] = p[i, :, 1 - dy:9 - dy, 1 - dx:9 - dx]
    return out


# ---------------------------------------------------------------- layers (numpy)

def im2col(x):
    """x [N,C,H,W] -> columns [N*H*W, C*9] for a 3x3 kernel, stride 1, pad 1.
    Column order (c, ky, kx) matches a weight [O,C,3,3] reshaped to [O, C*9]."""
    n, c, h, w = x.shape
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.stack([p[:, :, ky:ky + h, kx:kx + w] for ky in range(3) for kx in range(3)], 2)
    return patches.transpose(0, 3, 4, 1, 2).reshape(n * h * w, c * 9)  # [N,H,W,C,9]


def col2im(cols, shape):
    """Adjoint of im2col: columns [N*H*W, C*9] -> gradient [N,C,H,W]."""
    n, c, h, w = shape
    cols = cols.reshape(n, h, w, c, 3, 3).transpose(0, 3, 4, 5, 1, 2)  # [N,C,3,3,H,W]
    p = np.zeros((n, c, h + 2, w + 2), cols.dtype)
    for ky in range(3):
        for kx in range(3):
            p[:, :, ky:ky + h, kx:kx + w] += cols[:, :, ky, kx]
    return p[:, :, 1:-1, 1:-1]


def conv_forward(x, w, b):
    n, _, h, wd = x.shape
    cols = im2col(x)
    y = cols @ w.reshape(len(w), -1).T + b
    return y.reshape(n, h, wd, -1).transpose(0, 3, 1, 2), cols


def conv_backward(dy, cols, w, x_shape, need_dx=True):
    o = len(w)
    dy2 = dy.transpose(0, 2, 3, 1).reshape(-1, o)
    dw = (dy2.T @ cols).reshape(w.shape)
    db = dy2.sum(0)
    dx = col2im(dy2 @ w.reshape(o, -1), x_shape) if need_dx else None
    return dx, dw, db


def maxpool_forward(x):
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    arg = blocks.argmax(-1)
    return np.take_along_axis(blocks, arg[..., None], -1)[..., 0], arg


def maxpool_backward(dy, arg, x_shape):
    n, c, h, w = x_shape
    d = np.zeros((n, c, h // 2, w // 2, 4), dy.dtype)
    np.put_along_axis(d, arg[..., None], dy[..., None], -1)  # gradient to the first max only
    return d.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(x_shape)


# ---------------------------------------------------------------- model

SHAPES = {  # name -> shape, in ONNX layout (Gemm weight [out, in], transB=1)
    "conv1.weight": (16, 1, 3, 3), "conv1.bias": (16,),
    "conv2.weight": (32, 16, 3, 3), "conv2.bias": (32,),
    "conv3.weight": (64, 32, 3, 3), "conv3.bias": (64,),
    "classifier.weight": (5, 64), "classifier.bias": (5,),
}


def init_params(rng):
    params = {}
    for name, shape in SHAPES.items():
        if name.endswith("bias"):
            params[name] = np.zeros(shape, F32)
        else:
            fan_in = int(np.prod(shape[1:]))
            gain = 2.0 if name.startswith("conv") else 1.0  # He before ReLU, LeCun at the end
            params[name] = (rng.standard_normal(shape) * np.sqrt(gain / fan_in)).astype(F32)
    return params


def forward(p, x, keep=False):
    """Logits [N,5] and embedding [N,64]; with keep, also the cache for backward."""
    a1, c1 = conv_forward(x, p["conv1.weight"], p["conv1.bias"])
    r1 = np.maximum(a1, 0)
    a2, c2 = conv_forward(r1, p["conv2.weight"], p["conv2.bias"])
    r2 = np.maximum(a2, 0)
    m, arg = maxpool_forward(r2)
    a3, c3 = conv_forward(m, p["conv3.weight"], p["conv3.bias"])
    r3 = np.maximum(a3, 0)
    emb = r3.mean((2, 3))
    logits = emb @ p["classifier.weight"].T + p["classifier.bias"]
    cache = (x, a1, c1, r1, a2, c2, r2, m, arg, a3, c3, emb) if keep else None
    return logits, emb, cache


def backward(p, cache, dlogits):
    x, a1, c1, r1, a2, c2, r2, m, arg, a3, c3, emb = cache
    g = {"classifier.weight": dlogits.T @ emb, "classifier.bias": dlogits.sum(0)}
    demb = dlogits @ p["classifier.weight"]
    da3 = np.broadcast_to(demb[:, :, None, None] / 16.0, a3.shape) * (a3 > 0)
    dm, g["conv3.weight"], g["conv3.bias"] = conv_backward(da3, c3, p["conv3.weight"], m.shape)
    da2 = maxpool_backward(dm, arg, r2.shape) * (a2 > 0)
    dr1, g["conv2.weight"], g["conv2.bias"] = conv_backward(da2, c2, p["conv2.weight"], r1.shape)
    da1 = dr1 * (a1 > 0)
    _, g["conv1.weight"], g["conv1.bias"] = conv_backward(da1, c1, p["conv1.weight"], x.shape, need_dx=False)
    return g


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def accuracy(p, x, y):
    return float((forward(p, x)[0].argmax(1) == y).mean())


def train(x, y, rng):
    p = init_params(rng)
    mom = {k: np.zeros_like(v) for k, v in p.items()}
    var = {k: np.zeros_like(v) for k, v in p.items()}
    b1, b2, eps, step = 0.9, 0.999, 1e-8, 0
    steps_total = EPOCHS * int(np.ceil(len(x) / BATCH))
    for epoch in range(EPOCHS):
        order = rng.permutation(len(x))
        xa = random_shift(x[order], rng)
        ya = y[order]
        loss = 0.0
        for s in range(0, len(x), BATCH):
            xb, yb = xa[s:s + BATCH], ya[s:s + BATCH]
            logits, _, cache = forward(p, xb, keep=True)
            prob = softmax(logits)
            loss += -np.log(prob[np.arange(len(yb)), yb] + 1e-12).sum()
            prob[np.arange(len(yb)), yb] -= 1
            grads = backward(p, cache, (prob / len(yb)).astype(F32))
            step += 1
            lr = LR * 0.5 * (1 + np.cos(np.pi * step / steps_total))  # cosine decay to 0
            for k in p:
                mom[k] = b1 * mom[k] + (1 - b1) * grads[k]
                var[k] = b2 * var[k] + (1 - b2) * grads[k] ** 2
                mhat = mom[k] / (1 - b1 ** step)
                vhat = var[k] / (1 - b2 ** step)
                p[k] = (p[k] - lr * mhat / (np.sqrt(vhat) + eps)).astype(F32)
        if epoch % 10 == 9 or epoch == EPOCHS - 1:
            print(f"  epoch {epoch + 1:3d}  loss {loss / len(x):.4f}")
    return p


# ---------------------------------------------------------------- ONNX

def export(p, path):
    def conv(name, x):
        return helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [name], name=name,
                                kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])

    nodes = [
        conv("conv1", "image"), helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        conv("conv2", "relu1"), helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        helper.make_node("MaxPool", ["relu2"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        conv("conv3", "pool"), helper.make_node("Relu", ["conv3"], ["relu3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["relu3"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["embedding"], name="embedding", axis=1),
        helper.make_node("Gemm", ["embedding", "classifier.weight", "classifier.bias"], ["logits"],
                         name="classifier", transB=1),
    ]
    inits = [numpy_helper.from_array(np.ascontiguousarray(p[k], F32), k) for k in SHAPES]
    graph = helper.make_graph(
        nodes, "digits-cnn-0to4",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])],
        initializer=inits)
    graph.doc_string = ("CNN pre-trained on UCI handwritten digits 0-4 (8x8, pixels/16 in [0,1]); "
                        "embedding [1,64] feeds the classifier Gemm. Made by models/digits-cnn/pretrain.py.")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="edgetune models/digits-cnn/pretrain.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return model


def with_embedding_output(model):
    """A copy of `model` that also outputs `embedding` (for reading it in ONNX Runtime)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 64]))
    return m


def session(model):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- transfer check

def logistic_regression(x, y, classes, l2=1e-3, iters=50):
    """Multinomial logistic regression, full batch, fitted by Newton's method:
    minimizes mean cross-entropy + l2/2 * |W|^2 (bias not penalized). Float64."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    onehot = np.eye(classes)[y]
    w = np.zeros((d + 1, classes))
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    for it in range(iters):
        pr = softmax(xb @ w)
        grad = xb.T @ (pr - onehot) / n + reg[:, None] * w
        # Hessian of the mean cross-entropy, [(d+1)*k, (d+1)*k], parameters ordered (feature, class).
        h = np.einsum("ni,nj,nab->iajb", xb, xb,
                      pr[:, :, None] * np.eye(classes) - pr[:, :, None] * pr[:, None, :]) / n
        h = h.reshape((d + 1) * classes, -1) + np.diag(np.repeat(reg, classes) + 1e-9)
        w -= np.linalg.solve(h, grad.ravel()).reshape(w.shape)
        if np.abs(grad).max() < 1e-10:
            break
    return w, it + 1, float(np.abs(grad).max())


def main():
    rng = np.random.default_rng(SEED)
    x, y = load_digits()
    src = np.flatnonzero(y <= 4)
    tr, te = stratified_split(y[src], 0.2, rng)
    tr, te = src[tr], src[te]
    print(f"pretraining on digits 0-4: {len(tr)} train, {len(te)} test "
          f"(numpy {np.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__})")
    p = train(x[tr], y[tr], rng)
    print(f"pretraining accuracy 0-4: train {accuracy(p, x[tr], y[tr]):.4f}  test {accuracy(p, x[te], y[te]):.4f}")

    model = export(p, OUT)
    size = os.path.getsize(OUT)
    print(f"wrote {os.path.relpath(OUT)} ({size} bytes, {sum(v.size for v in p.values())} parameters)")

    # ONNX Runtime against the numpy forward, on 50 samples of all ten digits.
    sess = session(with_embedding_output(onnx.load(OUT)))
    check = rng.choice(len(x), 50, replace=False)
    ref = forward(p, x[check])[0]
    got = np.concatenate([sess.run(["logits"], {"image": x[i:i + 1]})[0] for i in check])
    diff = float(np.abs(got - ref).max())
    print(f"onnxruntime vs numpy logits, 50 samples: max abs diff {diff:.2e}")
    assert diff < 1e-4, diff

    # Transfer: embeddings of the digits 5-9 from ONNX Runtime, logistic regression head.
    tgt = np.flatnonzero(y >= 5)
    emb = np.concatenate([sess.run(["embedding"], {"image": x[i:i + 1]})[0] for i in tgt]).astype(np.float64)
    yt = y[tgt] - 5
    ttr, tte = stratified_split(yt, 0.3, rng)
    w, iters, gmax = logistic_regression(emb[ttr], yt[ttr], 5)
    pred = lambda e: (np.hstack([e, np.ones((len(e), 1))]) @ w).argmax(1)  # noqa: E731
    print(f"embeddings of 5-9: min {emb.min():.3f} max {emb.max():.3f} mean {emb.mean():.3f}, "
          f"{int((emb.max(0) == 0).sum())} of 64 always zero")
    print(f"transfer accuracy 5-9 (logistic regression on the embedding, {len(ttr)} train / {len(tte)} test, "
          f"Newton {iters} iterations, |grad| {gmax:.1e}): train {(pred(emb[ttr]) == yt[ttr]).mean():.4f}  "
          f"test {(pred(emb[tte]) == yt[tte]).mean():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fleet states as the device writes them (runtime/device/src/fleet.rs has the byte
layout), and their exact sum; gradient heads (flag HEAD) and their weighted average.

A state holds, per class, a label count and a mean, and the pooled within-class scatter,
in the bundle's standardized units. Sums are kept as raw moments (per class the count
and the sum of samples, and the sum of x xᵀ over all samples), in float64, so adding
and removing a device's labels is exact up to rounding: the "others" of each device is
the total minus its own, in O(devices) work.

A device whose head learns by gradient steps sends its head and its labels per class
instead (`HeadState`); `HeadSum` keeps Σ labels × parameters per class name (the
hidden layer weighted by all labels), so the others' average of each device is again
the total minus its own (FedAvg weighted by labels per class).
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

MAGIC = b"ETFLEET\0"
VERSION = 1
SIGNED = 1
# Flag: the body is a gradient head's parameters (HeadState), not statistics.
HEAD = 2
# The signature block: the signer's Ed25519 public key (32 bytes), then the signature (64).
SIGNATURE_LEN = 96
# Longest class name in bytes (the device's fleet::MAX_NAME_BYTES; a longer one is refused).
MAX_NAME_BYTES = 256
HEADER = struct.Struct("<8sHHIII")


class InvalidState(ValueError):
    """Bytes that are not a fleet state this version reads."""


@dataclass
class FleetState:
    """One decoded fleet state."""

    backbone: int
    dim: int
    classes: list[str]
    center: np.ndarray
    scale: np.ndarray
    counts: np.ndarray
    means: np.ndarray  # classes x dim
    scatter: np.ndarray  # dim x dim

    @property
    def labels(self) -> int:
        return int(self.counts.sum())


@dataclass
class HeadState:
    """One decoded gradient head's state (flag HEAD)."""

    backbone: int
    dim: int
    classes: list[str]
    hidden: int  # hidden units, 0 for a linear head
    origin: int  # CRC-32 of the bundle's head parameters
    counts: np.ndarray
    hidden_params: np.ndarray  # hidden x dim weights, then hidden biases (flat)
    weights: np.ndarray  # classes x (hidden, or dim when linear)
    biases: np.ndarray  # classes
    means: np.ndarray  # classes x dim: the mean of the device's samples of each class

    @property
    def labels(self) -> int:
        return int(self.counts.sum())


def decode(data: bytes) -> FleetState | HeadState:
    """Decodes and checks a fleet state of either kind; `InvalidState` says what is wrong."""
    if len(data) < HEADER.size + 4:
        raise InvalidState(f"truncated: {len(data)} bytes")
    magic, version, flags, backbone, dim, k = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise InvalidState("not an edgetune fleet state (bad magic)")
    if version != VERSION:
        raise InvalidState(f"fleet state format version {version}, this app reads version {VERSION}")
    if flags & ~(SIGNED | HEAD):
        raise InvalidState(f"unknown flags {flags:#06x}")
    body = data[:-SIGNATURE_LEN] if flags & SIGNED else data
    if len(body) < HEADER.size + 4:
        raise InvalidState("truncated")
    crc = struct.unpack_from("<I", body, len(body) - 4)[0]
    if zlib.crc32(body[:-4]) != crc:
        raise InvalidState("its checksum does not match (damaged or truncated)")
    at = HEADER.size
    end = len(body) - 4
    if dim == 0 or k * 6 > end:
        raise InvalidState("impossible sizes")
    classes = []
    for c in range(k):
        if at + 2 > end:
            raise InvalidState("truncated class names")
        (n,) = struct.unpack_from("<H", body, at)
        at += 2
        if n > MAX_NAME_BYTES:
            raise InvalidState(f"class {c}'s name is {n} bytes long, more than {MAX_NAME_BYTES}")
        try:
            classes.append(body[at : at + n].decode())
        except UnicodeDecodeError as e:
            raise InvalidState(f"class {c}'s name is not UTF-8") from e
        at += n
    if flags & HEAD:
        return _decode_head(body, at, end, backbone, dim, classes)
    tri = dim * (dim + 1) // 2
    need = 4 * (2 * dim + k + k * dim + tri)
    if end - at != need:
        raise InvalidState(f"{end - at} bytes of values, {need} expected")
    v = np.frombuffer(body, dtype="<f4", count=need // 4, offset=at).astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise InvalidState("a non-finite value")
    center, scale = v[:dim], v[dim : 2 * dim]
    counts = v[2 * dim : 2 * dim + k]
    means = v[2 * dim + k : 2 * dim + k + k * dim].reshape(k, dim)
    scatter = np.zeros((dim, dim))
    scatter[np.triu_indices(dim)] = v[2 * dim + k + k * dim :]
    scatter = scatter + np.triu(scatter, 1).T
    if np.any(scale <= 0) or np.any(counts < 0) or np.any(counts != np.round(counts)):
        raise InvalidState("impossible scales or counts")
    return FleetState(backbone, dim, classes, center, scale, counts, means, scatter)


def _decode_head(body: bytes, at: int, end: int, backbone: int, dim: int, classes: list[str]) -> HeadState:
    if end - at < 8:
        raise InvalidState("truncated head")
    hidden, origin = struct.unpack_from("<II", body, at)
    at += 8
    k, f = len(classes), hidden or dim
    n = k + hidden * dim + hidden + k * f + k + k * dim
    if end - at != 4 * n:
        raise InvalidState(f"{end - at} bytes of values, {4 * n} expected")
    v = np.frombuffer(body, dtype="<f4", count=n, offset=at).astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise InvalidState("a non-finite value")
    counts = v[:k]
    if np.any(counts < 0) or np.any(counts != np.round(counts)):
        raise InvalidState("impossible counts")
    h = k + hidden * dim + hidden
    weights = v[h : h + k * f].reshape(k, f)
    b = h + k * f
    means = v[b + k :].reshape(k, dim)
    return HeadState(backbone, dim, classes, hidden, origin, counts, v[k:h], weights, v[b : b + k], means)


def encode(s: FleetState | HeadState, key: Ed25519PrivateKey | None = None) -> bytes:
    """The bytes of a fleet state, signed by `key` when one is given: the signature covers
    every byte before its block, the SIGNED flag included (the device's `fleet::verify`)."""
    head = isinstance(s, HeadState)
    flags = (SIGNED if key is not None else 0) | (HEAD if head else 0)
    out = bytearray(HEADER.pack(MAGIC, VERSION, flags, s.backbone, s.dim, len(s.classes)))
    for name in s.classes:
        b = name.encode()
        if len(b) > MAX_NAME_BYTES:
            raise ValueError(f"class name {name!r} is longer than {MAX_NAME_BYTES} bytes")
        out += struct.pack("<H", len(b)) + b
    if head:
        out += struct.pack("<II", s.hidden, s.origin)
        parts = [s.counts, s.hidden_params, s.weights.reshape(-1), s.biases, s.means.reshape(-1)]
    else:
        parts = [s.center, s.scale, s.counts, s.means.reshape(-1), s.scatter[np.triu_indices(s.dim)]]
    out += np.concatenate(parts).astype("<f4").tobytes()
    out += struct.pack("<I", zlib.crc32(out))
    if key is not None:
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        out += public + key.sign(bytes(out))
    return bytes(out)


class BadKey(ValueError):
    """A signing key that cannot be used (named: the file and why)."""


def load_signing_key(path: str) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM (PKCS#8) file at `path`, as `finetune-head keygen`
    or `openssl genpkey -algorithm ed25519` write it; refused when its group or others have
    any access to it (like ssh, and like the device's own key reader)."""
    try:
        mode = os.stat(path).st_mode
        if mode & 0o077:
            raise BadKey(
                f"private key {path} is open to its group or others (mode {stat.S_IMODE(mode):04o}); "
                f"refusing to use it: `chmod 600 {path}`"
            )
        with open(path, "rb") as f:
            data = f.read(16 * 1024)
    except OSError as e:
        raise BadKey(f"cannot read the signing key {path}: {e}") from e
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise BadKey(f"signing key {path} is not an unencrypted PEM private key: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise BadKey(f"signing key {path} is not an Ed25519 key")
    return key


class Moments:
    """Raw moments of labels by class name: count, sum of samples, and Σ x xᵀ."""

    def __init__(self, like: FleetState):
        self.backbone, self.dim = like.backbone, like.dim
        self.center, self.scale = like.center, like.scale
        self.n: dict[str, float] = {}
        self.sum: dict[str, np.ndarray] = {}
        self.sq = np.zeros((like.dim, like.dim))

    def fits(self, s: FleetState) -> str | None:
        """Why `s` cannot be added, or None."""
        if s.backbone != self.backbone:
            return f"another backbone ({s.backbone:#010x}, the fleet's is {self.backbone:#010x})"
        if s.dim != self.dim:
            return f"{s.dim}-value embeddings, the fleet's have {self.dim}"
        if not (np.array_equal(s.center, self.center) and np.array_equal(s.scale, self.scale)):
            return "standardized differently (another bundle's statistics)"
        return None

    def add(self, s: FleetState, sign: float = 1.0) -> None:
        """Adds (or with sign -1, removes) the labels of `s`."""
        sq = s.scatter.copy()
        for name, n, m in zip(s.classes, s.counts, s.means):
            if n == 0:
                continue
            self.n[name] = self.n.get(name, 0.0) + sign * n
            self.sum[name] = self.sum.get(name, np.zeros(self.dim)) + sign * n * m
            sq += n * np.outer(m, m)
        self.sq += sign * sq

    def minus(self, s: FleetState) -> "Moments":
        out = Moments.__new__(Moments)
        out.backbone, out.dim, out.center, out.scale = self.backbone, self.dim, self.center, self.scale
        out.n, out.sum, out.sq = dict(self.n), {k: v.copy() for k, v in self.sum.items()}, self.sq.copy()
        out.add(s, -1.0)
        return out

    def state(self, order: list[str]) -> FleetState | None:
        """The fleet state of these labels (classes in `order` first), or None without any."""
        names = [c for c in order if round(self.n.get(c, 0)) > 0]
        names += sorted(c for c in self.n if c not in names and round(self.n[c]) > 0)
        if not names:
            return None
        counts = np.array([round(self.n[c]) for c in names], dtype=np.float64)
        means = np.stack([self.sum[c] / n for c, n in zip(names, counts)])
        scatter = self.sq - np.einsum("c,ci,cj->ij", counts, means, means)
        scatter = (scatter + scatter.T) / 2
        return FleetState(self.backbone, self.dim, names, self.center, self.scale, counts, means, scatter)


class HeadSum:
    """Gradient heads summed for their weighted average (FedAvg): per class name the labels
    and Σ labels × output row, bias and samples' mean; the hidden layer's Σ all labels ×
    parameters."""

    def __init__(self, like: HeadState):
        self.backbone, self.dim, self.hidden, self.origin = like.backbone, like.dim, like.hidden, like.origin
        self.labels = 0.0
        self.hidden_sum = np.zeros(like.hidden_params.shape)
        self.n: dict[str, float] = {}
        self.rows: dict[str, np.ndarray] = {}
        self.bias: dict[str, float] = {}
        self.means: dict[str, np.ndarray] = {}

    def fits(self, s: FleetState | HeadState) -> str | None:
        """Why `s` cannot be added, or None."""
        if not isinstance(s, HeadState):
            return "closed-form statistics, the fleet's devices average gradient heads"
        if s.backbone != self.backbone:
            return f"another backbone ({s.backbone:#010x}, the fleet's is {self.backbone:#010x})"
        if (s.dim, s.hidden) != (self.dim, self.hidden):
            return f"a head of {s.dim} inputs and {s.hidden} hidden units, the fleet's has {self.dim} and {self.hidden}"
        if s.origin != self.origin:
            return "a head that started from another bundle's"
        return None

    def add(self, s: HeadState, sign: float = 1.0) -> None:
        """Adds (or with sign -1, removes) the head `s`, weighted by its labels."""
        self.labels += sign * s.counts.sum()
        self.hidden_sum += sign * s.counts.sum() * s.hidden_params
        for name, n, w, b, m in zip(s.classes, s.counts, s.weights, s.biases, s.means):
            if n == 0:
                continue
            self.n[name] = self.n.get(name, 0.0) + sign * n
            self.rows[name] = self.rows.get(name, np.zeros(w.shape)) + sign * n * w
            self.bias[name] = self.bias.get(name, 0.0) + sign * n * b
            self.means[name] = self.means.get(name, np.zeros(m.shape)) + sign * n * m

    def minus(self, s: HeadState) -> "HeadSum":
        out = HeadSum.__new__(HeadSum)
        out.backbone, out.dim, out.hidden, out.origin = self.backbone, self.dim, self.hidden, self.origin
        out.labels, out.hidden_sum = self.labels, self.hidden_sum.copy()
        out.n, out.bias = dict(self.n), dict(self.bias)
        out.rows = {k: v.copy() for k, v in self.rows.items()}
        out.means = {k: v.copy() for k, v in self.means.items()}
        out.add(s, -1.0)
        return out

    def state(self, order: list[str]) -> HeadState | None:
        """The weighted average of these heads (classes in `order` first), or None without labels."""
        names = [c for c in order if round(self.n.get(c, 0)) > 0]
        names += sorted(c for c in self.n if c not in names and round(self.n[c]) > 0)
        if not names or round(self.labels) <= 0:
            return None
        counts = np.array([round(self.n[c]) for c in names], dtype=np.float64)
        weights = np.stack([self.rows[c] / self.n[c] for c in names])
        biases = np.array([self.bias[c] / self.n[c] for c in names])
        means = np.stack([self.means[c] / self.n[c] for c in names])
        hidden = self.hidden_sum / self.labels
        return HeadState(self.backbone, self.dim, names, self.hidden, self.origin, counts, hidden, weights, biases, means)

#!/usr/bin/env python3
"""Makes models/text/bert-mlm-64.onnx: a BERT from Hugging Face `transformers`, pre-trained
briefly with PyTorch by masked-language modelling, written by PyTorch's own exporter. It is
the text side's "real exporter" test model: the graph is what `torch.onnx.export` makes of
`transformers.BertModel` (shape arithmetic, the extended attention mask, erf GELU,
decomposed LayerNorm), not one edgetune's test kit writes.

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install -r models/text/requirements-export.txt
    /tmp/torchvenv/bin/python3 models/text/export_bert.py        # from the repository root

The model: `BertForMaskedLM`'s encoder, 2 layers, hidden 64, 4 heads, intermediate 128,
vocabulary 411 (this folder's tokenizer.json), 64 positions. Pre-training: masked-language
modelling (15 % of the tokens: 80 % [MASK], 10 % a random token, 10 % kept) on the texts of
intents.csv, without their labels (a user adapting an encoder to their own unlabeled text);
heldout.jsonl is not read. Exported with the TorchScript exporter (dynamo=False, opset 17,
constant folding on): inputs `input_ids` and `attention_mask`, int64 [1, 64]; output
`last_hidden_state`, float32 [1, 64, 64]. Then checked: ONNX Runtime's output equals
PyTorch's on a few sentences.

Nothing is downloaded but the packages: the weights start from the seed below.

`--shape minilm --steps 0 --out FILE` writes an untrained encoder of all-MiniLM-L6-v2's
shape instead (6 layers, hidden 384, 12 heads, intermediate 1536; this vocabulary, 64
positions): the size whose int8 and f32 cost on ARM the closing notes of issue #17 count.
It is not shipped (91 MB).
"""

import argparse
import csv
import hashlib
import random
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tokenizers import Tokenizer
from transformers import BertConfig, BertForMaskedLM

HERE = Path(__file__).resolve().parent
OUT = HERE / "bert-mlm-64.onnx"
SEQ = 64
STEPS = 600
BATCH = 32
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4


def masked(batch_ids, vocab, rng):
    """A masked-language-modelling batch: inputs, attention mask, labels (-100 unscored)."""
    width = max(len(ids) for ids in batch_ids)
    inputs = torch.full((len(batch_ids), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(batch_ids), width), dtype=torch.long)
    labels = torch.full((len(batch_ids), width), -100, dtype=torch.long)
    for row, ids in enumerate(batch_ids):
        inputs[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        candidates = [p for p, t in enumerate(ids) if t not in (CLS, SEP)]
        chosen = [p for p in candidates if rng.random() < 0.15] or [rng.choice(candidates)]
        for p in chosen:
            labels[row, p] = ids[p]
            r = rng.random()
            if r < 0.8:
                inputs[row, p] = MASK
            elif r < 0.9:
                inputs[row, p] = rng.randrange(5, vocab)
    return inputs, mask, labels


class Encoder(torch.nn.Module):
    """What is exported: the sequence output of the pre-trained encoder."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


SHAPES = {
    # layers, hidden, heads, intermediate
    "small": (2, 64, 4, 128),
    "minilm": (6, 384, 12, 1536),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    layers, hidden, heads, intermediate = SHAPES[args.shape]
    torch.manual_seed(5)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rng = random.Random(5)
    tokenizer = Tokenizer.from_file(str(HERE / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(SEQ)
    vocab = tokenizer.get_vocab_size()
    with open(HERE / "intents.csv", newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    corpus = [tokenizer.encode(t).ids for t in texts]

    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=SEQ,
        type_vocab_size=2,
        pad_token_id=PAD,
    )
    model = BertForMaskedLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    model.train()
    first = last = None
    for step in range(args.steps):
        inputs, mask, labels = masked(rng.sample(corpus, BATCH), vocab, rng)
        loss = model(input_ids=inputs, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
        last = loss.item() if last is None else 0.95 * last + 0.05 * loss.item()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step}: masked-LM loss {loss.item():.3f} (running {last:.3f})")
    if first is not None:
        print(f"masked-LM loss: first batch {first:.3f}, running mean at the end {last:.3f}")

    model.eval()
    encoder = Encoder(model.bert).eval()
    ids = torch.zeros((1, SEQ), dtype=torch.long)
    ids[0, :3] = torch.tensor([CLS, 7, SEP])
    attention = (ids != PAD).long()
    torch.onnx.export(
        encoder,
        (ids, attention),
        str(args.out),
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
        opset_version=17,
        do_constant_folding=True,
        dynamo=False,
    )

    session = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    worst = 0.0
    for text in ["set a timer for ten minutes", "play some jazz music", texts[0], ""]:
        tokens = tokenizer.encode(text).ids
        ids = np.zeros((1, SEQ), dtype=np.int64)
        ids[0, : len(tokens)] = tokens
        attention = (np.arange(SEQ) < len(tokens)).astype(np.int64)[None, :]
        (got,) = session.run(None, {"input_ids": ids, "attention_mask": attention})
        with torch.no_grad():
            want = encoder(torch.from_numpy(ids), torch.from_numpy(attention)).numpy()
        worst = max(worst, float(np.abs(got - want)[0, : len(tokens)].max()))
    print(f"ONNX Runtime against PyTorch, max abs difference over real tokens: {worst:.2e}")
    if worst > 1e-4:
        sys.exit("the exported model does not compute what PyTorch does")
    data = args.out.read_bytes()
    print(f"{args.out.name}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Makes models/text: a small labeled intent data set, a WordPiece tokenizer.json trained
on it with Hugging Face `tokenizers`, and that library's token ids for tricky strings.

    python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install tokenizers==0.22.2
    /tmp/tokvenv/bin/python models/text/make.py

Deterministic: the same tokenizers version gives the same files. Nothing is downloaded
but the `tokenizers` package itself; the sentences come from the templates below.
"""

import json
import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = Path(__file__).resolve().parent
SEQ_LEN = 64
VOCAB = 800

# Intent classes for a kiosk/home assistant: templates with slots.
INTENTS = {
    "weather": [
        "what is the weather in {city}",
        "will it rain in {city} {when}",
        "how cold is it in {city} {when}",
        "is it sunny {when}",
        "do i need an umbrella {when}",
        "what is the forecast for {city}",
        "how warm will it be {when}",
        "is there snow expected in {city}",
    ],
    "music": [
        "play some {genre} music",
        "put on a {genre} playlist",
        "play the latest album by {artist}",
        "skip this song",
        "turn the music up",
        "play {artist} in the {room}",
        "shuffle my {genre} songs",
        "i want to listen to {artist}",
    ],
    "lights": [
        "turn off the lights in the {room}",
        "switch on the {room} lamp",
        "dim the lights in the {room}",
        "make the {room} brighter",
        "set the {room} lights to {color}",
        "turn the {color} light on",
        "lights off please",
        "is the light in the {room} still on",
    ],
    "timer": [
        "set a timer for {n} minutes",
        "start a {n} minute timer",
        "how much time is left on my timer",
        "cancel the timer",
        "wake me up in {n} minutes",
        "remind me in {n} hours",
        "set an alarm for {n} o clock",
        "stop the alarm",
    ],
}
SLOTS = {
    "city": ["paris", "berlin", "tokyo", "lisbon", "oslo", "madrid", "rome", "dublin", "zürich", "são paulo"],
    "when": ["today", "tomorrow", "tonight", "this weekend", "on monday", "later", "this morning"],
    "genre": ["jazz", "rock", "classical", "pop", "folk", "techno", "blues"],
    "artist": ["miles davis", "the beatles", "björk", "nina simone", "daft punk", "adele"],
    "room": ["kitchen", "bedroom", "living room", "bathroom", "hall", "office", "garage"],
    "color": ["red", "blue", "warm white", "green", "orange"],
    "n": ["five", "ten", "twenty", "three", "two", "fifteen", "forty"],
}

# Strings whose ids the Rust side must reproduce exactly (tests/tests/tokenize.rs).
TRICKY = [
    "",
    "Hello, world!",
    "Crème brûlée à la française, naïve café",
    "Ça va? Où est l'hôtel?",
    "東京の天気は晴れです",
    "今天天气很好 and then some English",
    "Play jazz 🎷🎶 in the kitchen 😀",
    "UPPER lower MiXeD 123 4.56",
    "tabs\tand\nnewlines   and   spaces",
    "zürich weather tomorrow",
    "unknownwordsthatarenotinthevocabulary antidisestablishmentarianism",
    "ümlaut Ångström ﬁligature",
    " ".join(["set a timer for five minutes"] * 20),
    "a" * 300,
]


def fill(template, rng):
    out = template
    for slot, values in SLOTS.items():
        while "{" + slot + "}" in out:
            out = out.replace("{" + slot + "}", rng.choice(values), 1)
    return out


def sentences(rng, per_class):
    rows = []
    for label, templates in INTENTS.items():
        seen = set()
        tries = 0
        while len(seen) < per_class and tries < 10000:
            tries += 1
            s = fill(rng.choice(templates), rng)
            if rng.random() < 0.3:
                s = s.capitalize()
            if rng.random() < 0.2:
                s += rng.choice(["?", " please", "!", " now"])
            if s not in seen:
                seen.add(s)
                rows.append((s, label))
    return rows


def csv_field(s):
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s


def main():
    rng = random.Random(17)
    rows = sentences(rng, 60)
    rng.shuffle(rows)
    # Held-out sentences from other draws of the same templates, none seen in training.
    train_set = {s for s, _ in rows}
    held = [(s, l) for s, l in sentences(random.Random(1717), 40) if s not in train_set]
    with open(HERE / "intents.csv", "w", encoding="utf-8", newline="\n") as f:
        f.write("text,label\n")
        for s, l in rows:
            f.write(f"{csv_field(s)},{l}\n")
    with open(HERE / "heldout.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for s, l in held:
            f.write(json.dumps({"text": s, "label": l}, ensure_ascii=False) + "\n")

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=special, min_frequency=1)
    # Training text: the intents plus a few lines in other scripts, so that accents and
    # CJK characters have pieces of their own.
    extra = [
        "crème brûlée café naïve hôtel où français",
        "東京 天気 晴れ 今天 天气 很好",
        "ümlaut ångström straße",
    ]
    corpus = [s for s, _ in rows] + extra
    tok.train_from_iterator(corpus, trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    # As many hub tokenizers ship: padding and truncation set (the device replaces both).
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]", length=128)
    tok.enable_truncation(max_length=512)
    tok.save(str(HERE / "tokenizer.json"), pretty=False)

    ref = Tokenizer.from_file(str(HERE / "tokenizer.json"))
    ref.no_padding()
    ref.enable_truncation(max_length=SEQ_LEN)
    expected = []
    for s in TRICKY:
        e = ref.encode(s)
        expected.append({"text": s, "ids": e.ids, "truncated": len(e.overflowing) > 0})
    with open(HERE / "expected_ids.json", "w", encoding="utf-8") as f:
        json.dump({"seq_len": SEQ_LEN, "cases": expected}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{len(rows)} training rows, {len(held)} held out, vocab {ref.get_vocab_size()}")


if __name__ == "__main__":
    main()

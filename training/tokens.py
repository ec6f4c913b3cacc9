"""CLIP token ids for the world's captions, as the product's tokenizer makes them (WebUI's SD1.x layout: BOS, the
tokens, EOS, padded with EOS to 77). The captions' words are each one BPE token of the real CLIP vocabulary, so a
word lookup in vocab.json gives the same ids as the full byte-pair encoder; a word that is not one token is an error
(checked against the product's tokenizer by tests/python/test_embedded_model.py through the daemon's images)."""

import json
import os
import re

BOS, EOS, LENGTH = 49406, 49407, 77
_VOCAB = None


def _vocab():
    global _VOCAB
    if _VOCAB is None:
        here = os.path.dirname(os.path.abspath(__file__))
        for path in (os.path.join(here, "..", "..", "shared", "data", "clip", "vocab.json"),
                     os.path.join(here, "..", "assets", "clip", "vocab.json")):
            if os.path.exists(path):
                _VOCAB = json.load(open(path))
                break
        else:
            raise FileNotFoundError("CLIP vocab.json not found (../shared/data/clip or assets/clip)")
    return _VOCAB


def _words(text):
    ids = []
    for word in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", text.lower()):
        token = word + "</w>"
        if token not in _vocab():
            raise ValueError(f"{word!r} is not a single CLIP token")
        ids.append(_vocab()[token])
    return ids


def encode(text):
    return encode_weighted([(text, 1.0)])[0]


def encode_weighted(segments):
    """[(text, weight), ...] -> (77 ids, 77 multipliers): WebUI's emphasis, e.g. "a (red:1.3) circle" is
    [("a", 1), ("red", 1.3), ("circle", 1)]; BOS, EOS and padding weigh 1."""
    ids, weights = [], []
    for text, weight in segments:
        words = _words(text)
        ids += words
        weights += [weight] * len(words)
    ids = [BOS] + ids[:LENGTH - 2] + [EOS]
    weights = [1.0] + weights[:LENGTH - 2] + [1.0]
    return ids + [EOS] * (LENGTH - len(ids)), weights + [1.0] * (LENGTH - len(weights))

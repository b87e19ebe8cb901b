"""The Python peer for `ar bench tokenizer`: the original's trainer (rustbpe, called as
prepare.py calls it) and encoder (tiktoken's encode_ordinary_batch), timed on the same text
split the same way as our side (raw `text.split("\n\n")`, 10,000-char cap, 1e9-char budget).

  python3 tokenizer_peer.py train INPUT VOCAB_NO_SPECIALS OUT.tiktoken
  python3 tokenizer_peer.py encode RANKS.tiktoken INPUT [--threads 8]

Each prints one JSON line. Needs `python3 -m pip install rustbpe tiktoken`.
"""

import argparse
import base64
import json
import time

SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
SPECIAL_TOKENS = [f"<|reserved_{i}|>" for i in range(4)]


def read_docs(path):
    with open(path, encoding="utf-8", newline="") as f:  # keep \r\n, as Rust reads it
        return f.read().split("\n\n")


def capped(docs, max_chars=1_000_000_000, doc_cap=10_000):
    """prepare.py's text_iterator over an in-memory list."""
    n = 0
    for text in docs:
        doc = text[:doc_cap]
        n += len(doc)
        yield doc
        if n >= max_chars:
            return


def train(args):
    import rustbpe

    docs = read_docs(args.input)
    t0 = time.perf_counter()
    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(capped(docs), args.vocab, pattern=SPLIT_PATTERN)
    ranks = {bytes(k): v for k, v in tok.get_mergeable_ranks()}
    seconds = time.perf_counter() - t0
    with open(args.out, "w", encoding="ascii", newline="\n") as f:
        for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(f"{base64.b64encode(token).decode('ascii')} {rank}\n")
    print(json.dumps({"seconds": seconds, "documents": len(docs), "ranks": len(ranks)}))


def encode(args):
    import tiktoken

    ranks = {}
    with open(args.ranks, encoding="ascii") as f:
        for line in f:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    enc = tiktoken.Encoding(name="peer", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks,
                            special_tokens={s: len(ranks) + i for i, s in enumerate(SPECIAL_TOKENS)})
    docs = read_docs(args.input)
    t0 = time.perf_counter()
    ids = enc.encode_ordinary_batch(docs, num_threads=args.threads)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "tokens": sum(len(x) for x in ids)}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("input")
    t.add_argument("vocab", type=int)
    t.add_argument("out")
    e = sub.add_parser("encode")
    e.add_argument("ranks")
    e.add_argument("input")
    e.add_argument("--threads", type=int, default=8)  # prepare.py's default
    args = ap.parse_args()
    train(args) if args.cmd == "train" else encode(args)

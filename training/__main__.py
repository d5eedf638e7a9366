"""Command line of the training package.

    python -m training tiny-model models/tiny           # the CPU demo / test model
    python -m training augment                          # 71 samples from 11 brands
"""

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tiny = sub.add_parser("tiny-model", help="build the tiny random Qwen2 model and tokenizer")
    tiny.add_argument("out_dir", help="folder to write the model into")
    tiny.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    aug = sub.add_parser("augment", help="write train_augmented.jsonl: 31 originals + 40 synthetic samples")
    aug.add_argument("--data-dir", type=Path, default=None, help="folder with train.jsonl and synthetic_pool.jsonl")
    aug.add_argument("--brands", type=Path, default=Path("brands/brands.json"), help="brands.json")
    aug.add_argument("--out", type=Path, default=None, help="output file (default: DATA_DIR/train_augmented.jsonl)")
    aug.add_argument("--seed", type=int, default=42, help="seed of the synthetic draw")
    args = parser.parse_args(argv)

    if args.command == "tiny-model":
        from training.tiny_model import build_tiny_model

        path = build_tiny_model(args.out_dir, seed=args.seed)
        print(f"tiny model written to {path}")
    elif args.command == "augment":
        from training import augment

        augment.main(args.data_dir or augment.DATA_DIR, args.brands, args.out, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())

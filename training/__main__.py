"""Command line of the training package.

    python -m training tiny-model models/tiny           # the CPU demo / test model
    python -m training augment                          # 71 samples from 11 brands
    python -m training train                            # the spec's QLoRA run: training/config.py
    python -m training evaluate --adapter outputs/adapter
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
    train = sub.add_parser("train", help="QLoRA fine-tune; writes the adapter folder")
    train.add_argument("--config", type=Path, default=None,
                       help="YAML of only the fields that differ from the defaults in training/config.py")
    train.add_argument("--base-model", default=None, help="hub name or local folder")
    train.add_argument("--data", type=Path, default=None, help="training JSONL")
    train.add_argument("--output", type=Path, default=None, help="adapter folder to write")
    train.add_argument("--epochs", type=float, default=None, help="number of epochs")
    train.add_argument("--drop-long", action="store_true", default=None, help="skip samples over max_seq_length")
    train.add_argument("--resume", action="store_true", help="continue from OUTPUT.partial's last checkpoint")
    from training import evaluate  # light at import: the model loads inside run()

    ev = sub.add_parser("evaluate", help="base+RAG vs adapter alone vs adapter+RAG; writes report.{md,json,png}")
    evaluate.add_arguments(ev)
    args = parser.parse_args(argv)

    try:
        return _dispatch(args)
    except (ValueError, OSError) as exc:  # DatasetError, BrandFileError and config errors are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _dispatch(args) -> int:
    if args.command == "tiny-model":
        from training.tiny_model import build_tiny_model

        path = build_tiny_model(args.out_dir, seed=args.seed)
        print(f"tiny model written to {path}")
    elif args.command == "augment":
        from training import augment

        augment.main(args.data_dir or augment.DATA_DIR, args.brands, args.out, args.seed)
    elif args.command == "train":
        from training.config import load_config
        from training.train import run

        overrides = {"base_model": args.base_model, "data": args.data, "output": args.output,
                     "epochs": args.epochs, "drop_long": args.drop_long}
        run(load_config(args.config, overrides), resume=args.resume)
    elif args.command == "evaluate":
        from training import evaluate

        return evaluate.main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

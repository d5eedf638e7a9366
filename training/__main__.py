"""Command line of the training package.

    python -m training tiny-model models/tiny           # the CPU demo / test model
"""

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tiny = sub.add_parser("tiny-model", help="build the tiny random Qwen2 model and tokenizer")
    tiny.add_argument("out_dir", help="folder to write the model into")
    tiny.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    args = parser.parse_args(argv)

    if args.command == "tiny-model":
        from training.tiny_model import build_tiny_model

        path = build_tiny_model(args.out_dir, seed=args.seed)
        print(f"tiny model written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

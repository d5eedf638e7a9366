"""`python -m training augment`: the 31 originals + 40 synthetic samples = train_augmented.jsonl.

The synthetic samples come from `synthetic_pool.jsonl` (8 brands of other industries, each
present in brands.json so retrieval works at training time). A seeded draw takes 5 per
brand, covering every task the brand has, after validation and de-duplication. No brand
of `test_unseen.jsonl` may appear: those brands measure generalisation.
"""

import random
from collections import Counter
from pathlib import Path

from app.brand_schema import normalize_key
from training.records import DatasetError, Record, load_records, write_records

DATA_DIR = Path(__file__).resolve().parent / "data"
PER_BRAND = 5  # 8 brands x 5 = 40 synthetic samples
SEED = 42


def _key(record: Record) -> tuple:
    fields = record.request_fields()
    text = fields.get("context") or fields.get("message") or fields.get("objectives") or record.input
    return (record.task, normalize_key(record.brand or ""), normalize_key(str(text)))


def augment(data_dir: Path, brand_names: set[str], seed: int = SEED, per_brand: int = PER_BRAND) -> list[Record]:
    originals = load_records(data_dir / "train.jsonl")
    pool = load_records(data_dir / "synthetic_pool.jsonl")
    unseen = {normalize_key(r.brand) for r in load_records(data_dir / "test_unseen.jsonl") if r.brand}
    known = {normalize_key(n) for n in brand_names}

    for source, records in (("train.jsonl", originals), ("synthetic_pool.jsonl", pool)):
        for i, record in enumerate(records, start=1):
            if record.brand and normalize_key(record.brand) not in known:
                raise DatasetError(f"{source} record {i}: brand {record.brand!r} is not in brands.json; add it there")
            if record.brand and normalize_key(record.brand) in unseen:
                raise DatasetError(
                    f"{source} record {i}: brand {record.brand!r} is held out in test_unseen.jsonl; "
                    "it must never appear in training data"
                )

    seen = {_key(r) for r in originals}
    by_brand: dict[str, list[Record]] = {}
    for record in pool:
        if _key(record) not in seen:  # de-duplicate against the originals and the pool itself
            seen.add(_key(record))
            by_brand.setdefault(record.brand, []).append(record)

    rng = random.Random(seed)
    chosen: list[Record] = []
    for brand in sorted(by_brand):
        candidates = by_brand[brand]
        if len(candidates) < per_brand:
            raise DatasetError(f"synthetic_pool.jsonl: brand {brand!r} has {len(candidates)} unique samples, needs {per_brand}")
        rng.shuffle(candidates)
        # One of each task first, so every brand teaches every task; then the rest of the draw.
        firsts = [next(r for r in candidates if r.task == t) for t in dict.fromkeys(r.task for r in candidates)]
        rest = [r for r in candidates if r not in firsts]
        chosen += (firsts + rest)[:per_brand]
    return originals + chosen


def main(data_dir: Path = DATA_DIR, brands_path: Path = Path("brands/brands.json"), out: Path | None = None,
         seed: int = SEED) -> Path:
    from app.brand_store import parse_brands, read_brands_file
    from app.tasks import TASKS

    brands = parse_brands(read_brands_file(brands_path), str(brands_path)).brands
    records = augment(data_dir, {n for b in brands for n in b.all_names}, seed)
    out = out or data_dir / "train_augmented.jsonl"
    write_records(out, records)
    counts = Counter((r.brand, r.task) for r in records)
    brands_in = sorted({r.brand for r in records}, key=lambda b: -sum(v for (bb, _), v in counts.items() if bb == b))
    print(f"wrote {out}: {len(records)} samples from {len(brands_in)} brands (seed {seed})")
    print(f"{'brand':<14}" + "".join(f"{name:>12}" for name in TASKS) + f"{'total':>7}")
    for brand in brands_in:
        row = [counts[(brand, name)] for name in TASKS]
        print(f"{brand:<14}" + "".join(f"{n:>12}" for n in row) + f"{sum(row):>7}")
    return out

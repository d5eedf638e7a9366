"""Brand knowledge at agency scale: reload, resolution, retrieval and checks over N brands.

    python bench/brands.py                      # 10,000 brands (the default)
    python bench/brands.py --brands 1000 --queries 500 --seed 1

One run generates N synthetic but realistic brands (deterministic for a seed: Latin
names "Brand1234 Glow", Thai aliases built from Thai syllables, tone words, hashtags,
3 products and 3 Thai example posts each), writes them to a temporary brands.json, and
measures the real code paths of the service: `build_snapshot` (what a hot reload runs),
`BrandResolver.resolve`, `BrandRetriever.context` and `check_text` with the LeakIndex.
Everything runs in this one process on the CPU; nothing is downloaded.
"""

import argparse
import gc
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

# Before anything imports pythainlp: keep its data folder out of $HOME.
os.environ.setdefault("PYTHAINLP_DATA_DIR", tempfile.mkdtemp(prefix="pythainlp-"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BRANDS = 10_000  # brands in the generated file
QUERIES = 1_000  # timed look-ups per resolution kind, retrieval mode and check_text
RELOADS = 3  # build_snapshot runs; the median is reported
BUSY_RELOADS = 2  # reloads while requests are timed
IDLE_S = 3.0  # each idle window between them, timed alike
SEED = 1234  # the same seed gives the same file, byte for byte
FUZZY_THRESHOLD = 80.0  # the service's default Settings.fuzzy_threshold
CONTEXT_BUDGET = 384  # the service's default Settings.context_token_budget
TARGET_RELOAD_S = 1.0  # parse + validate + every index, for a hot reload (median)
TARGET_BUSY_P99 = 2.0  # a request's brand work while a reload runs, against its idle p99
TARGET_EXACT_P99_MS = 1.0  # exact name and Thai alias look-ups
TARGET_FUZZY_P99_MS = 20.0  # typo'd names and aliases


def count_tokens(text: str) -> int:
    """Stand-in for the model's tokenizer: about 2 characters per token (Thai-heavy text)."""
    return len(text) // 2


# --- the synthetic agency file -------------------------------------------------------------

WORDS = [
    "Glow", "Lab", "Leaf", "Fit", "Stay", "Brew", "Bloom", "Zone", "Home", "Pet", "Kids", "Mart",
    "Studio", "Craft", "Garden", "Spa", "Bake", "Wear", "Tech", "Farm", "Care", "Fresh", "Nest",
    "Wave", "Peak", "Beauty", "Coffee", "Tea", "Noodle", "Ride", "Skin", "Herb", "Smile", "Sun",
    "Moon", "Star", "River", "Forest", "Cloud", "Spark",
]
# Thai syllables as brand names transliterate them; combining marks (่ ้ ์ ั ิ ี ...) included.
SYLLABLES = [
    "โกลว์", "แล็บ", "คอฟ", "ฟี่", "ฟิต", "โก้", "ลักซ์", "สเตย์", "กรีน", "ลีฟ", "บิว", "ตี้", "มา", "ลี",
    "นา", "ซี", "เท", "รา", "ไทย", "สยาม", "ดี", "ใจ", "สุข", "ทอง", "แก้ว", "ฟ้า", "ดาว", "ภู", "มิ",
    "พร", "ศรี", "เพชร", "มณี", "ชา", "น้ำ", "ผึ้ง", "ข้าว", "หอม", "สวน", "เมฆ", "คิ", "โตะ", "เบ", "รี่",
    "ปิ", "ยะ", "วิน", "เทค", "โซน", "พลัส", "แม็กซ์", "โปร", "ลิฟ", "สปา", "มิ้นท์", "ครีม", "เซ", "รั่ม",
    "ส้ม", "ลิ", "ชิ", "โน่", "ฮา", "คุ", "โระ", "บา", "ซา", "กิ", "เน็ต", "โฮม", "ทิ", "ชล", "วา", "เฟรช",
    "บลูม", "สตาร์", "ซัน", "มูน", "ริเวอร์", "ฟาร์ม",
]
INDUSTRIES = {
    "skincare": ["เซรั่ม", "ครีมกันแดด", "โทนเนอร์", "มาสก์หน้า", "โฟมล้างหน้า"],
    "coffee": ["ลาเต้", "อเมริกาโน่", "โคลด์บรูว์", "เมล็ดกาแฟคั่ว", "ดริปแบ็ก"],
    "fitness": ["คลาสโยคะ", "เวย์โปรตีน", "คลาสปั่นจักรยาน", "ชุดออกกำลังกาย", "เทรนเนอร์ส่วนตัว"],
    "hotel": ["พูลวิลล่า", "ห้องสวีท", "แพ็กเกจสปา", "ดินเนอร์ริมหาด", "บุฟเฟต์อาหารเช้า"],
    "pet": ["อาหารแมว", "ขนมสุนัข", "ทรายแมว", "แชมพูสัตว์เลี้ยง", "ของเล่นแมว"],
    "bakery": ["ครัวซองต์", "ขนมปังโฮลวีต", "เค้กช็อกโกแลต", "ชีสเค้ก", "คุกกี้เนยสด"],
    "fashion": ["เสื้อลินิน", "กางเกงยีนส์", "กระเป๋าผ้า", "รองเท้าผ้าใบ", "ชุดเดรส"],
    "gadget": ["หูฟังไร้สาย", "พาวเวอร์แบงก์", "สมาร์ตวอทช์", "ลำโพงบลูทูธ", "เคสมือถือ"],
}
TONES = ["เป็นกันเอง", "พรีเมียม", "ทันสมัย", "อบอุ่น", "สนุกสนาน", "หรูหรา", "จริงใจ", "มืออาชีพ", "สดใส", "สุภาพ"]
QUALITIES = ["หอมละมุน", "อ่อนโยนต่อผิว", "สดใหม่ทุกวัน", "คุณภาพพรีเมียม", "ราคาเป็นมิตร", "ดีไซน์เรียบหรู",
             "ใช้วัตถุดิบออร์แกนิก", "ผลิตในประเทศไทย", "ทนทานใช้ได้นาน", "เหมาะกับทุกวัน"]
OCCASIONS = ["สงกรานต์", "ลอยกระทง", "ปีใหม่", "วาเลนไทน์", "หน้าฝน", "เปิดเทอม", "วันแม่", "11.11", "ตรุษจีน",
             "หน้าร้อน"]
PROMOS = ["ลด 20% ทุกรายการ", "ซื้อ 1 แถม 1", "ส่งฟรีทั่วไทย", "รับของแถมพิเศษ", "สะสมแต้มx2", "ลดทันที 100 บาท"]
AUDIENCES = ["คนทำงานในเมือง อายุ 25-40 ปี", "นักศึกษาและวัยเริ่มทำงาน", "ครอบครัวรุ่นใหม่ที่มีลูกเล็ก",
             "คนรักสุขภาพ อายุ 30-50 ปี", "นักท่องเที่ยวกำลังซื้อสูง", "เจ้าของสัตว์เลี้ยงในคอนโด"]
AVOID = ["ถูกที่สุด", "เกรดต่ำ", "ของปลอม", "ลดกระหน่ำ", "คุ้มสุดๆ", "หายขาด", "ขาวใน 7 วัน", "อันดับหนึ่ง"]
EMOJI = ["✨", "☕", "🌿", "💪", "🌙", "🐾", "🍰", "👗", "🎧", "💚", "🔥", "🌸"]


def make_brands(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    used_thai: set[str] = set()
    brands = []
    for i in range(n):
        word = rng.choice(WORDS)
        name = f"Brand{i:04d} {word}"
        while True:  # every name and alias must point to one brand
            parts = rng.sample(SYLLABLES, rng.choice((3, 3, 4)))
            thai = "".join(parts)
            if thai not in used_thai:
                used_thai.add(thai)
                break
        industry = rng.choice(list(INDUSTRIES))
        nouns = rng.sample(INDUSTRIES[industry], 3)
        emoji = rng.sample(EMOJI, 3)
        tags = [f"#Brand{i:04d}{word}", f"#{thai}", f"#{nouns[0]}{word}"]
        products = [
            {
                "name": f"{noun} {word} {rng.choice(['Classic', 'Plus', 'Pro', 'Lite', 'Signature'])}",
                "description": f"{noun}{rng.choice(QUALITIES)} {rng.choice(QUALITIES)} "
                               f"ออกแบบมาเพื่อ{rng.choice(AUDIENCES)}",
                "price": f"฿{rng.randrange(59, 5000)}",
            }
            for noun in nouns
        ]
        posts = [
            f"{occ}นี้ {name} ชวนมาลอง {p['name']} {rng.choice(QUALITIES)} {emoji[k]}\n"
            f"{rng.choice(PROMOS)} เฉพาะช่วง{occ}เท่านั้น แวะมาที่ {thai} ได้ทุกสาขาเลยค่ะ\n{tags[0]} {tags[k % 2 + 1]}"
            for k, (occ, p) in enumerate(zip(rng.sample(OCCASIONS, 3), products))
        ]
        brands.append({
            "name": name,
            "aliases": [thai, f"{parts[0]} {''.join(parts[1:])}", f"{word} {i:04d}"],
            "industry": industry,
            "description": f"แบรนด์{industry}สัญชาติไทย {rng.choice(QUALITIES)} {rng.choice(QUALITIES)} "
                           f"ดูแลลูกค้าด้วยใจตั้งแต่วันแรก",
            "tone": rng.sample(TONES, 3),
            "target_audience": rng.choice(AUDIENCES),
            "core_values": rng.sample(QUALITIES, 2),
            "visual_style": f"ภาพโทน{rng.choice(['อบอุ่น', 'สดใส', 'มินิมอล', 'พาสเทล'])} แสงธรรมชาติ จัดวางเรียบง่าย",
            "hashtags": tags,
            "emoji": emoji,
            "products": products,
            "example_posts": posts,
            "words_to_avoid": rng.sample(AVOID, 3),
        })
    return brands


def typo(text: str, rng: random.Random, alphabet: str) -> str:
    """One character deleted or replaced (Thai combining marks count as characters)."""
    i = rng.randrange(len(text))
    if rng.random() < 0.5:
        return text[:i] + text[i + 1:]
    return text[:i] + rng.choice([c for c in alphabet if c != text[i]]) + text[i + 1:]


# --- measuring ---------------------------------------------------------------------------

def timed(fn, items) -> list[float]:
    """Per-call latency in ms."""
    out = []
    for item in items:
        t0 = time.perf_counter_ns()
        fn(item)
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def ms(value: float) -> str:
    return f"{value * 1000:.1f} µs" if value < 1 else f"{value:.2f} ms"


def latency_line(label: str, values: list[float], extra: str = "") -> str:
    return (f"  {label:<34} p50 {ms(pct(values, 50)):>10}   p99 {ms(pct(values, 99)):>10}   "
            f"max {ms(max(values)):>10}   n={len(values)}{extra}")


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(args) -> None:
    from app.brand_resolver import BrandResolver
    from app.brand_schema import normalize_key
    from app.brand_store import BrandStore, build_snapshot, parse_brands
    from app.checks import LeakIndex, check_text
    from app.service import WARM_BRANDS
    from app.thai import warm_up
    from rapidfuzz import fuzz

    rng = random.Random(args.seed + 1)
    print(f"# bench/brands.py --brands {args.brands} --queries {args.queries} --seed {args.seed}")
    print(f"# python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}")

    t0 = time.perf_counter()
    raw = json.dumps({"brands": make_brands(args.brands, args.seed)}, ensure_ascii=False, indent=1).encode()
    # The agency file with every brand rewritten (other seeds): the worst case for a reload.
    rewritten = [
        json.dumps({"brands": make_brands(args.brands, args.seed + 1000 + k)}, ensure_ascii=False, indent=1).encode()
        for k in range(args.reloads)
    ]
    with tempfile.TemporaryDirectory(prefix="bench-brands-") as folder:
        path = Path(folder) / "brands.json"
        path.write_bytes(raw)
        raw = path.read_bytes()
    print(f"\nfile: {args.brands:,} brands, {len(raw) / 1e6:.1f} MB of UTF-8 JSON "
          f"({len(raw) / args.brands / 1024:.1f} KiB per brand), generated in {time.perf_counter() - t0:.1f} s")

    # --- reload -----------------------------------------------------------------------
    gc_seconds = [0.0]
    gc_started = [0.0]

    def on_gc(phase, info):
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_seconds[0] += time.perf_counter() - gc_started[0]

    def reloads(payloads) -> tuple[list[float], list[float]]:
        nonlocal snapshot
        took, in_gc = [], []
        for payload in payloads:
            gc_seconds[0] = 0.0
            t0 = time.perf_counter()  # the old snapshot stays alive while the new one is built, as in BrandStore
            built = build_snapshot(payload, "brands.json")
            took.append(time.perf_counter() - t0)
            in_gc.append(gc_seconds[0])
            # The swap, and freeing the old snapshot (~0.1 s for 10,000 brands), come after the new
            # one is served: BrandStore's assignment stores the new snapshot first.
            snapshot = built
        return took, in_gc

    warm_up()  # as the service does at startup: newmm's own dictionary is loaded once per process
    rss0 = maxrss_mb()
    gc.callbacks.append(on_gc)
    t0 = time.perf_counter()
    snapshot = build_snapshot(raw, "brands.json")
    first = time.perf_counter() - t0
    rss1 = maxrss_mb()
    same, same_gc = reloads([raw] * args.reloads)
    flip, flip_gc = reloads(rewritten)
    gc.callbacks.remove(on_gc)
    reload_s = max(statistics.median(same), statistics.median(flip))
    print("\nreload = build_snapshot(raw bytes): JSON parsing + pydantic validation of every brand + sha256 +")
    print("  BrandResolver (name/alias dict, fuzzy first-pass arrays) + LeakIndex, as the service runs it")
    print("  (the collector paused, then the snapshot frozen: see build_snapshot). A brand's dictionary and")
    print("  BM25 index are built on its first use (see retrieval), not here.")
    print("  Not included: reading the file (the watcher does that) and the swap (one assignment).")
    print("  Each reload runs while the previous snapshot is still held, as in BrandStore.")
    print(f"  first load in the process (after warm_up):     {first:.3f} s")
    print(f"  reload, same content:                          {', '.join(f'{r:.3f}' for r in same)} s -> "
          f"median {statistics.median(same):.3f} s (garbage collection {statistics.median(same_gc):.3f} s)")
    print(f"  reload, every brand changed (new files):       {', '.join(f'{r:.3f}' for r in flip)} s -> "
          f"median {statistics.median(flip):.3f} s (garbage collection {statistics.median(flip_gc):.3f} s)")

    # stage breakdown, one run each with the collector paused, for finding the slow part
    snapshot = build_snapshot(raw, "brands.json")
    stages = {}
    gc.collect()
    gc.disable()
    t0 = time.perf_counter()
    brands = list(parse_brands(raw, "brands.json").brands)
    stages["parse_brands"] = time.perf_counter() - t0
    for label, cls in (("BrandResolver", BrandResolver), ("LeakIndex", LeakIndex)):
        t0 = time.perf_counter()
        cls(brands)
        stages[label] = time.perf_counter() - t0
    gc.enable()
    del brands
    print("  stages (the same file again, collector paused): " + ", ".join(f"{k} {v:.3f} s" for k, v in stages.items()))
    del rewritten

    # --- resolution ---------------------------------------------------------------------
    brands = snapshot.brands
    resolver = snapshot.resolver
    n = min(args.queries, len(brands))
    sample = rng.sample(range(len(brands)), n)
    exact_q = [(brands[i].name, i) for i in sample]
    alias_q = [(brands[i].aliases[0], i) for i in sample]  # the Thai alias
    keys = {normalize_key(label) for b in brands for label in b.all_names}
    latin = "abcdefghijklmnopqrstuvwxyz0123456789"
    thai_chars = "".join(sorted({c for s in SYLLABLES for c in s}))
    fuzzy_q, redrawn = [], 0
    for k, i in enumerate(sample):
        source, alphabet = (brands[i].name, latin) if k % 2 == 0 else (brands[i].aliases[0], thai_chars)
        while True:  # a typo that is another brand's exact name would measure the exact path
            query = typo(source, rng, alphabet)
            if normalize_key(query) not in keys and normalize_key(query):
                break
            redrawn += 1
        fuzzy_q.append((query, i, "name" if k % 2 == 0 else "thai alias"))

    def resolve(query):
        return resolver.resolve(query, FUZZY_THRESHOLD)

    for q, _ in exact_q[:50]:  # warm caches
        resolve(q)
    exact_ms = timed(resolve, [q for q, _ in exact_q])
    alias_ms = timed(resolve, [q for q, _ in alias_q])
    fuzzy_ms = timed(resolve, [q for q, _, _ in fuzzy_q])
    wrong = sum(
        not ((m := resolve(q)) and m.brand.name == brands[i].name and m.method == method)
        for queries, method in ((exact_q, "exact"), (alias_q, "alias"))
        for q, i in queries
    )
    hits: dict[str, list[int]] = {"name": [0, 0], "thai alias": [0, 0]}
    ties = 0  # misses where the intended brand scored exactly as high as the one returned
    for q, i, kind in fuzzy_q:
        m = resolve(q)
        hit = bool(m and m.brand.name == brands[i].name)
        hits[kind][0] += hit
        hits[kind][1] += 1
        if m and not hit:
            intended = max(fuzz.ratio(normalize_key(q), normalize_key(label)) for label in brands[i].all_names)
            ties += intended >= m.score - 0.05  # m.score is rounded to 0.1
    fuzzy_hit = sum(h for h, _ in hits.values()) / len(fuzzy_q)
    suggest_ms = timed(resolver.suggest, [q for q, _, _ in fuzzy_q[: n // 4]])
    print(f"\nresolution: resolver.resolve(query, threshold={FUZZY_THRESHOLD:g}) over {len(keys):,} names and aliases")
    print(latency_line("exact name", exact_ms))
    print(latency_line("Thai alias", alias_ms))
    print(latency_line("fuzzy (one char deleted/changed)", fuzzy_ms))
    print(latency_line("suggest (404 hint, cutoff 40)", suggest_ms))
    print(f"  exact/alias resolved to the wrong brand or method: {wrong} of {2 * n}")
    print(f"  fuzzy hit rate (typo resolved to the intended brand): {fuzzy_hit:.1%}  ("
          + ", ".join(f"{k} {h}/{t}" for k, (h, t) in hits.items())
          + f"; {redrawn} typos equal to an existing name/alias were redrawn)")
    print(f"  of the {len(fuzzy_q) - round(fuzzy_hit * len(fuzzy_q))} misses, {ties} are exact ties: another brand's "
          "name is just as close (Brand1234 vs Brand1284), and the first in file order wins")

    # --- retrieval ----------------------------------------------------------------------
    retriever = snapshot.retriever
    queries = [f"{rng.choice(OCCASIONS)} {rng.choice(PROMOS)} {rng.choice(QUALITIES)}" for _ in range(n)]
    cold_brands = [brands[i] for i in sample]
    cold_ms = [0.0] * n
    for k, (brand, query) in enumerate(zip(cold_brands, queries)):
        t0 = time.perf_counter_ns()
        retriever.context(brand, query, count_tokens, CONTEXT_BUDGET)
        cold_ms[k] = (time.perf_counter_ns() - t0) / 1e6
    used = {b.name for b in cold_brands}
    unused = [b for b in brands if b.name not in used][:200]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for brand in unused:
        retriever.context(brand, queries[0], count_tokens, CONTEXT_BUDGET)
    index_bytes = (tracemalloc.get_traced_memory()[0] - before) / max(len(unused), 1)
    tracemalloc.stop()
    warm_ms = [0.0] * n
    for k, (brand, query) in enumerate(zip(cold_brands, reversed(queries))):
        t0 = time.perf_counter_ns()
        retriever.context(brand, query, count_tokens, CONTEXT_BUDGET)
        warm_ms[k] = (time.perf_counter_ns() - t0) / 1e6
    print(f"\nretrieval: retriever.context(brand, query, count_tokens, budget={CONTEXT_BUDGET}); "
          "count_tokens = len(text) // 2, a stand-in for the model tokenizer")
    print(latency_line("cold (first use: its dictionary, BM25)", cold_ms))
    print(latency_line("warm (index cached)", warm_ms))
    print(f"  per-brand index memory: {index_bytes / 1024:.1f} KiB per brand used, tracemalloc over "
          f"{len(unused)} more brands (~{index_bytes * len(brands) / 1e6:.0f} MB if all {len(brands):,} are used)")

    # --- check_text -----------------------------------------------------------------------
    texts = []
    for k, i in enumerate(sample):
        text = brands[i].example_posts[k % 3]
        if k % 3 == 0:  # a third name another brand, so the leak path finds something
            other = brands[(i + 1) % len(brands)]
            text += f"\nเทียบกับ {other.aliases[0] if k % 2 else other.name} แล้วคุ้มกว่า"
        texts.append((text, brands[i]))
    check_ms = timed(lambda tb: check_text(tb[0], tb[1], platform="instagram", leaks=snapshot.leaks), texts)
    leaks_found = sum(bool(check_text(t, b, leaks=snapshot.leaks).other_brands) for t, b in texts)
    print("\ncheck_text(text, brand, platform='instagram', leaks=LeakIndex) on example posts "
          "(a third naming another brand)")
    print(latency_line("check_text", check_ms))
    print(f"  texts flagged as naming another brand: {leaks_found} of {n} (expected {len(range(0, n, 3))})")

    # --- serving while a reload runs ---------------------------------------------------------
    # The brand work of one request (resolve the alias, retrieve, check), as the service does it
    # on its event loop, inside the store's pacer, timed back to back (a saturating load) while
    # another thread takes turns: idle for IDLE_S, BrandStore.reload over the 10,000 brands (as
    # the watcher's thread runs it), idle, reload, idle, the warm-up of WARM_BRANDS brands that
    # follows a reload in the service, idle. Both threads share the GIL. Each request counts for
    # the phase it ran in: the idle windows spread over the same minute as the busy ones, so a
    # noisy neighbour on a shared machine weighs on both alike. A reload gives way to requests
    # (app/reload_pacing.py) and takes longer under this load, which is reported too.
    def brand_work(k):
        text, brand = texts[k % n]
        with store.pacer:
            resolver.resolve(brand.aliases[0], FUZZY_THRESHOLD)
            retriever.context(brand, queries[k % n], count_tokens, CONTEXT_BUDGET)
            check_text(text, brand, platform="instagram", leaks=snapshot.leaks)

    with tempfile.TemporaryDirectory(prefix="bench-brands-") as folder:
        path = Path(folder) / "brands.json"
        path.write_bytes(raw)
        store = BrandStore(path)
        store.load()
        timed(brand_work, range(200))  # warm: this thread's brands and code paths
        # The same brands, a new sha256: each reload does all the work and frees the last
        # snapshot. Made here: joining 36 MB in the reload's thread would hold the GIL itself.
        variants = [raw + b" " * (k + 1) for k in range(BUSY_RELOADS)]
        phase, took, warm_took = ["idle"], [], []

        def warm_brands():
            fresh, pacer = store.snapshot, store.pacer
            for brand in fresh.brands[:WARM_BRANDS]:
                with pacer.reloading():
                    fresh.retriever.warm(brand, count_tokens, pacer.pace)

        def other_thread():
            steps = [("reload", k) for k in range(BUSY_RELOADS)] + [("warm-up", None)]
            for kind, k in steps:
                time.sleep(IDLE_S)
                if kind == "reload":
                    path.write_bytes(variants[k])
                phase[0], t0 = kind, time.perf_counter()
                store.reload() if kind == "reload" else warm_brands()
                (took if kind == "reload" else warm_took).append(time.perf_counter() - t0)
                phase[0] = "idle"
            time.sleep(IDLE_S)
            phase[0] = "done"

        runs = {"idle": [], "reload": [], "warm-up": []}
        worker = threading.Thread(target=other_thread)
        worker.start()
        k = 0
        while phase[0] != "done":
            before = phase[0]
            took_ms = timed(brand_work, [k])[0]
            if phase[0] == before and before in runs:  # one that straddles a change counts for neither
                runs[before].append(took_ms)
            k += 1
        worker.join()
        naps = store.pacer.naps
        store = None  # its snapshots freed before the memory section below
    idle_ms, busy_ms, warm_ms = runs["idle"], runs["reload"], runs["warm-up"]
    busy_ratio = pct(busy_ms, 99) / pct(idle_ms, 99)
    warm_ratio = pct(warm_ms, 99) / pct(idle_ms, 99)
    print("\nserving while reloading: one request's brand work (resolve, retrieve, check) on this thread, back to")
    print(f"  back, while another thread is idle for {IDLE_S:g} s, runs BrandStore.reload, idle, reload, idle, warms up")
    print(f"  {WARM_BRANDS} brands, idle: each request counted for the phase it ran in")
    print(latency_line("idle", idle_ms))
    print(latency_line("during reloads", busy_ms, f"  (p99 {busy_ratio:.1f}x the idle p99)"))
    stalls = sorted(v for v in busy_ms if v > 20)
    if stalls:
        print(f"  requests over 20 ms: {len(stalls)} of {len(busy_ms)} ({', '.join(f'{v:.0f}' for v in stalls[-6:])} ms):")
        print("  pydantic's parse of the JSON, and its release of the parsed tree, are one C call that holds the GIL")
    print(latency_line(f"during the warm-up of {WARM_BRANDS} brands", warm_ms, f"  (p99 {warm_ratio:.1f}x the idle p99)"))
    print(f"  under this load: reloads {', '.join(f'{t:.1f}' for t in took)} s (idle, {reload_s:.2f} s), "
          f"the warm-up {warm_took[0]:.1f} s; {naps:,} naps giving way to requests")

    # --- memory ---------------------------------------------------------------------------
    del snapshot, resolver, retriever, brands
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    snapshot = build_snapshot(raw, "brands.json")
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    held_mb, peak_mb = (held - base) / 1e6, (peak - base) / 1e6
    print(f"\nmemory (tracemalloc, Python allocations): snapshot held {held_mb:.0f} MB, "
          f"peak while building {peak_mb:.0f} MB (raw file {len(raw) / 1e6:.0f} MB not counted)")
    print(f"  process maxrss: {rss0:.0f} MB before the first load, {rss1:.0f} MB after it "
          f"(+{rss1 - rss0:.0f} MB), {maxrss_mb():.0f} MB at the end; a reload holds two snapshots at once")

    # --- summary --------------------------------------------------------------------------
    rows = [
        ("reload (build_snapshot), worse median", f"<= {TARGET_RELOAD_S:g} s", f"{reload_s:.3f} s",
         reload_s <= TARGET_RELOAD_S),
        ("brand work p99 during a reload / idle", f"<= {TARGET_BUSY_P99:g}x", f"{busy_ratio:.1f}x",
         busy_ratio <= TARGET_BUSY_P99),
        ("... during the warm-up after it / idle", f"<= {TARGET_BUSY_P99:g}x", f"{warm_ratio:.1f}x",
         warm_ratio <= TARGET_BUSY_P99),
        ("exact name resolution p99", f"< {TARGET_EXACT_P99_MS:g} ms", ms(pct(exact_ms, 99)),
         pct(exact_ms, 99) < TARGET_EXACT_P99_MS),
        ("Thai alias resolution p99", f"< {TARGET_EXACT_P99_MS:g} ms", ms(pct(alias_ms, 99)),
         pct(alias_ms, 99) < TARGET_EXACT_P99_MS),
        ("fuzzy resolution p99", f"< {TARGET_FUZZY_P99_MS:g} ms", ms(pct(fuzzy_ms, 99)),
         pct(fuzzy_ms, 99) < TARGET_FUZZY_P99_MS),
    ]
    print(f"\n{'target':<38}{'wanted':>10}{'measured':>12}  result")
    for label, want, got, ok in rows:
        print(f"{label:<38}{want:>10}{got:>12}  {'PASS' if ok else 'FAIL'}")
    print(f"(correctness: {wrong} wrong exact/alias answers; fuzzy hit rate {fuzzy_hit:.1%})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brands", type=int, default=BRANDS, help="brands to generate")
    parser.add_argument("--queries", type=int, default=QUERIES, help="timed queries per measurement")
    parser.add_argument("--reloads", type=int, default=RELOADS, help="build_snapshot runs (median reported)")
    parser.add_argument("--seed", type=int, default=SEED, help="generator seed")
    main(parser.parse_args())

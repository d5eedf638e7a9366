"""brands.json under fault injection: 200 bad, good and odd writes while a client keeps asking.

A real uvicorn with the real folder watcher serves the file; a client thread requests an
existing brand the whole time. Every bad state must leave the last good version serving,
every good change must be served, and /health and /metrics must tell the file's state.
"""

import hashlib
import json
import os
import random
import re
import shutil
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import httpx

from app.brand_store import MAX_FILE_BYTES
from app.main import create_app
from app.settings import Settings
from conftest import REPO
from fakes import FakeEngine
from test_server import poll, serving_in_thread, write_atomically

SEED = 20261128  # the same seed gives the same sequence of writes
HANG_S = 30.0  # a guard against hangs only; nothing here asserts how fast anything is
KEPT = "TechZone"  # the brand the client asks for throughout; no write removes it
BIG_BYTES = 50 * 1024 * 1024  # over MAX_FILE_BYTES: refused unread
# 200 injections; the 50 MB file is written a few times only (each write is 50 MB of disk I/O).
PLAN = {"invalid_json": 28, "partial": 28, "empty": 18, "unknown_field": 24, "delete_restore": 20,
        "big": 3, "atomic_change": 45, "configmap_swap": 34}
BAD_MESSAGES = {  # what /health must say while each bad state is on disk
    "invalid_json": ("invalid JSON",), "partial": ("invalid JSON", "not UTF-8"), "empty": ("invalid JSON",),
    "unknown_field": ("unknown field",), "big": ("too large",), "delete_restore": ("not found",),
}
INVALID = [b'{"brands": [', b'{"brands": [{"name": "TechZone",}]}', b"brands: [TechZone]",
           b'{"brands": [{"name": "TechZone" "aliases": []}]}', '{"brands": [{"name": "เทคโซน'.encode()]


class Requester(threading.Thread):
    """Asks for KEPT in three ways, round after round, and records every answer."""

    def __init__(self, base_url: str):
        super().__init__(daemon=True)
        self.base_url = base_url
        self.stop = threading.Event()
        self.rounds = 0
        self.answers: list[tuple[str, int | None, str]] = []  # (request, status, brand_version or error)

    def run(self) -> None:
        requests = (
            ("dry_run", "POST", "/caption", {"brand": KEPT, "context": "เปิดตัวเมาส์เกมมิ่งรุ่นใหม่", "dry_run": True}),
            ("generate", "POST", "/caption", {"brand": KEPT, "context": "Gaming mouse launch", "max_new_tokens": 8}),
            ("get_brand", "GET", f"/brands/{KEPT}", None),
        )
        with httpx.Client(base_url=self.base_url, timeout=HANG_S) as http:
            while not self.stop.is_set():
                for name, method, url, body in requests:
                    try:
                        r = http.request(method, url, json=body)
                        detail = r.json().get("brand_version") if r.status_code == 200 else r.text[:300]
                        self.answers.append((name, r.status_code, detail))
                    except (httpx.HTTPError, ValueError) as exc:
                        self.answers.append((name, None, repr(exc)))
                self.rounds += 1

    def wait_rounds(self, n: int) -> None:
        """Until n more full rounds are answered: at least n - 1 of them began after this call."""
        target = self.rounds + n
        poll(lambda: self.rounds >= target, timeout=HANG_S, every=0.005)


class Site:
    """The watched folder, laid out as a ConfigMap volume: brands.json -> ..data/brands.json."""

    def __init__(self, folder: Path, rng: random.Random):
        self.folder = folder
        self.path = folder / "brands.json"
        self.rng = rng
        self.swaps = 0

    def configmap_swap(self, raw: bytes) -> None:
        """kubelet's AtomicWriter: a new timestamped folder, ..data_tmp renamed over ..data, old folder removed."""
        self.swaps += 1
        stamp = f"..2026_11_28_00_{self.swaps // 60:02d}_{self.swaps % 60:02d}.{self.rng.randrange(10**9):09d}"
        (self.folder / stamp).mkdir()
        (self.folder / stamp / "brands.json").write_bytes(raw)
        data = self.folder / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        os.symlink(stamp, self.folder / "..data_tmp")
        os.rename(self.folder / "..data_tmp", data)
        if not (self.path.is_symlink() and os.readlink(self.path) == "..data/brands.json"):
            # kubelet creates the visible link once; an editor's plain file left here is replaced the same way.
            os.symlink("..data/brands.json", self.folder / "brands.json.link")
            os.replace(self.folder / "brands.json.link", self.path)
        if old:
            shutil.rmtree(self.folder / old)

    def in_place(self, raw: bytes) -> None:
        """Truncate and write the file that is served (through the link, if it is one)."""
        with open(self.path, "wb") as file:
            file.write(raw)

    def big(self) -> None:
        """A 50 MB file, JSON-shaped, written in 1 MiB pieces so this test never holds it."""
        tmp = self.folder / "brands.json.big"
        piece = "ก".encode() * (1024 * 1024 // 3)
        with open(tmp, "wb") as file:
            file.write(b'{"brands": [{"name": "Huge", "description": "')
            while file.tell() < BIG_BYTES:
                file.write(piece)
            file.write(b'"}]}')
        os.replace(tmp, self.path)


def served(http: httpx.Client) -> dict:
    return http.get("/health").json()["brands"]


def stamp(at) -> float:
    """/health's time of an error as seconds since the epoch, whether sent as a number or ISO 8601."""
    if isinstance(at, (int, float)):
        return float(at)
    return datetime.fromisoformat(at).timestamp()


def gauges(http: httpx.Client) -> tuple[float, float]:
    text = http.get("/metrics").text
    error = re.search(r"^ai_director_brand_reload_error (\S+)$", text, re.MULTILINE)
    count = re.search(r"^ai_director_brands (\S+)$", text, re.MULTILINE)
    return float(error.group(1)), float(count.group(1))


def rss_bytes() -> int | None:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the memory check is skipped
        return None


def changed(doc: dict, step: int, rng: random.Random) -> tuple[dict, str, str]:
    """A valid new version: a brand added (old additions dropped) or a field of an existing one changed."""
    brands = [dict(b) for b in doc["brands"]]
    if rng.random() < 0.5:
        added = [b for b in brands if b["name"].startswith("FaultBrand")]
        if len(added) >= 4:
            brands.remove(added[0])
        name = f"FaultBrand{step}"
        brands.append({"name": name, "aliases": [f"ฟอลต์แบรนด์{step}"], "description": f"แบรนด์ทดสอบ {step}"})
        return {"brands": brands}, name, ""
    target = rng.choice(brands)
    marker = f"เวอร์ชัน {step}"
    target["description"] = f"{target.get('description', '')[:200]} {marker}".strip()
    return {"brands": brands}, target["name"], marker


def encode(doc: dict) -> bytes:
    return json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8")


def test_two_hundred_faults_never_fail_a_request(tmp_path, tiny_tokenizer):
    assert BIG_BYTES > MAX_FILE_BYTES
    rng = random.Random(SEED)
    site = Site(tmp_path / "brands", rng)
    site.folder.mkdir()
    good = json.loads((REPO / "brands" / "brands.json").read_text(encoding="utf-8"))
    good_raw = encode(good)
    site.configmap_swap(good_raw)
    good_versions = {hashlib.sha256(good_raw).hexdigest()[:12]}

    settings = Settings(brands_path=site.path, base_model=tiny_tokenizer.name_or_path, _env_file=None)
    app = create_app(settings, engine_factory=lambda s: FakeEngine(tiny_tokenizer))
    plan = [kind for kind, n in PLAN.items() for _ in range(n)]
    assert len(plan) == 200
    rng.shuffle(plan)

    with serving_in_thread(app) as (http, _):
        requester = Requester(str(http.base_url))
        requester.start()
        try:
            version = served(http)["version"]
            assert version in good_versions

            def expect_bad(kind: str, since: float) -> None:
                """The error of this write is shown, the last good version still serves, and requests see it."""
                def shown():
                    err = served(http)["last_reload_error"]
                    return err and stamp(err["at"]) >= since and any(m in err["message"] for m in BAD_MESSAGES[kind])
                poll(shown, timeout=HANG_S, every=0.01)
                assert served(http)["version"] == version
                requester.wait_rounds(2)

            def expect_good(doc: dict, raw: bytes, name: str, marker: str) -> str:
                """The new version is served, whole: its version, the changed brand, no error."""
                new = hashlib.sha256(raw).hexdigest()[:12]
                good_versions.add(new)
                poll(lambda: (b := served(http))["version"] == new and b["last_reload_error"] is None,
                     timeout=HANG_S, every=0.01)
                brand = http.get(f"/brands/{name}")
                assert brand.status_code == 200 and marker in brand.json()["brand"]["description"]
                assert served(http)["count"] == len(doc["brands"])
                return new

            for step, kind in enumerate(plan):
                since = time.time()  # the error this write causes is stamped after it
                if kind == "invalid_json":
                    site.in_place(rng.choice(INVALID))
                elif kind == "partial":  # a crashed writer: the good text cut anywhere before its end
                    site.in_place(good_raw[: rng.randrange(1, len(good_raw) - 1)])
                elif kind == "empty":
                    site.in_place(b"")
                elif kind == "unknown_field":
                    doc = {"brands": [dict(b) for b in good["brands"]]}
                    rng.choice(doc["brands"])[rng.choice(["hashtag", "promo_code", "tones"])] = ["#x"]
                    if rng.random() < 0.5:
                        site.in_place(encode(doc))
                    else:
                        write_atomically(site.path, encode(doc))
                elif kind == "big":
                    before = rss_bytes()  # no gc.collect(): bytes are freed by reference counting, and it costs seconds
                    site.big()
                elif kind == "delete_restore":
                    site.path.unlink()
                if kind in BAD_MESSAGES:
                    expect_bad(kind, since)
                if kind == "big" and before is not None:
                    assert rss_bytes() - before < BIG_BYTES // 4, "the refused file's bytes are still held"
                if kind == "delete_restore":
                    write_atomically(site.path, good_raw)  # the backup: the version still served
                    poll(lambda: served(http)["last_reload_error"] is None, timeout=HANG_S, every=0.01)
                    assert served(http)["version"] == version
                if kind in ("atomic_change", "configmap_swap"):
                    doc, name, marker = changed(good, step, rng)
                    raw = encode(doc)
                    if kind == "configmap_swap":
                        site.configmap_swap(raw)
                    else:
                        write_atomically(site.path, raw)
                    version = expect_good(doc, raw, name, marker)
                    good, good_raw = doc, raw

            # The end state, read by /health and /metrics as a dashboard would: first a bad write ...
            since = time.time()
            site.in_place(b'{"brands": [')
            expect_bad("invalid_json", since)
            brands = served(http)
            assert brands["last_reload_error"] and brands["version"] == version
            assert brands["count"] == len(good["brands"])
            assert gauges(http) == (1.0, len(good["brands"]))
            assert http.post("/caption", json={"brand": KEPT, "context": "launch"}).status_code == 200

            # ... then a good one.
            doc, name, marker = changed(good, len(plan), rng)
            raw = encode(doc)
            write_atomically(site.path, raw)
            new = expect_good(doc, raw, name, marker)
            brands = served(http)
            assert brands["last_reload_error"] is None and brands["version"] == new != version
            assert gauges(http) == (0.0, len(doc["brands"]))
        finally:
            requester.stop.set()
            requester.join(timeout=HANG_S)

    failed = [a for a in requester.answers if a[1] != 200]
    assert failed == [], f"{len(failed)} of {len(requester.answers)} requests failed, first: {failed[:3]}"
    kinds = Counter(name for name, _, _ in requester.answers)
    assert min(kinds.values()) >= 200 and len(kinds) == 3, kinds  # two rounds per bad state, at least
    # A request sees one whole version: never one that was not a complete, valid file.
    assert {v for _, _, v in requester.answers} <= good_versions

"""`brands.json` in memory: validated snapshots, swapped whole, reloaded live.

The watch follows the recipe measured for watchfiles on Linux: watch the parent folder
(editors and ConfigMaps replace the file, so a watch on the file itself goes stale), on
any event re-read the real path, skip if the sha256 is unchanged, validate everything,
build every index, then swap one reference. A bad file keeps the last good snapshot.
"""

import asyncio
import gc
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from app.brand_resolver import BrandResolver
from app.checks import LeakIndex
from app.brand_schema import Brand, BrandFile, BrandFileError, describe_validation_error
from app.reload_pacing import ReloadPacer, unpaced
from app.retrieval import BrandRetriever

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrandSnapshot:
    brands: tuple[Brand, ...]
    version: str  # first 12 hex digits of the file's sha256
    sha256: str
    loaded_at: float
    resolver: BrandResolver
    retriever: BrandRetriever
    leaks: LeakIndex


@dataclass(frozen=True)
class ReloadError:
    message: str
    at: float


_BARE_LIST = re.compile(rb"[ \t\n\r]*\[")  # JSON whitespace, then a top-level list


def parse_brands(raw: bytes, source: str, pace: Callable[[], None] = unpaced) -> BrandFile:
    """Validate a whole brands file; the error names the file, the brand and the field."""
    context = {"pace": pace}
    try:
        # Fast path for a good file: pydantic reads the JSON itself, skipping json.loads' dicts
        # and lists (~100k short-lived objects for 10k brands, which cost garbage-collector time
        # as well). Anything it rejects goes through the path below, which words the error.
        return BrandFile.model_validate_json(
            b'{"brands":' + raw + b"}" if _BARE_LIST.match(raw) else raw, context=context
        )
    except ValueError:  # ValidationError and UnicodeDecodeError included
        pass
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BrandFileError(f"{source}: not UTF-8 text ({exc}); save the file as UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise BrandFileError(
            f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; fix the syntax there"
        ) from exc
    if isinstance(data, list):  # a bare list of brands is accepted as well
        data = {"brands": data}
    _name_bare_products(data)
    try:
        return BrandFile.model_validate(data, context=context)
    except ValidationError as exc:
        raise BrandFileError(f"{source}: {describe_validation_error(exc, data)}") from exc
    except ValueError as exc:
        raise BrandFileError(f"{source}: {exc}") from exc


def _name_bare_products(data) -> None:
    """A bare product name is a product with no description. Read here, on the slow path: as a
    before-validator it made pydantic build Python lists for every brand's products and then
    validate those again, a tenth of a 10,000-brand reload."""
    brands = data.get("brands") if isinstance(data, dict) else None
    for brand in brands if isinstance(brands, list) else ():
        products = brand.get("products") if isinstance(brand, dict) else None
        if isinstance(products, list):
            brand["products"] = [{"name": item} if isinstance(item, str) else item for item in products]


def build_snapshot(
    raw: bytes, source: str, digest: str | None = None, pace: Callable[[], None] = unpaced
) -> BrandSnapshot:
    # A 10,000-brand file makes millions of objects, and the collector's passes over them (and
    # over the snapshot still served) took 40% of a reload. A snapshot holds no reference
    # cycles (a test keeps it so), so it is built with the collector paused and then frozen:
    # later passes skip it, and reference counting frees it once a newer snapshot replaces it.
    collecting = gc.isenabled()
    gc.disable()
    try:
        parsed = parse_brands(raw, source, pace)
        brands = parsed.brands
        digest = digest or hashlib.sha256(raw).hexdigest()
        return BrandSnapshot(
            brands=tuple(brands),
            version=digest[:12],
            sha256=digest,
            loaded_at=time.time(),
            resolver=BrandResolver(brands, parsed.name_keys),
            retriever=BrandRetriever(),
            leaks=LeakIndex(brands, pace, parsed.name_keys),
        )
    finally:
        if collecting:
            gc.freeze()
            gc.enable()


# A reload parses the whole file and holds two snapshots at once: the 10,000-brand benchmark
# file is 36 MB and reloads in about 0.9 s. Anything far past that is a mistake (a dump, a log
# written over the file), and reading it would hold the GIL and the memory for nothing.
MAX_FILE_BYTES = 40 * 1024 * 1024


def read_brands_file(path: Path) -> bytes:
    """The file's bytes, refused unread when over MAX_FILE_BYTES."""
    try:
        with open(os.path.realpath(path), "rb") as file:
            # stat first: an oversized file costs nothing; the bounded read covers a file still growing.
            size = os.fstat(file.fileno()).st_size
            raw = file.read(MAX_FILE_BYTES + 1) if size <= MAX_FILE_BYTES else b""
        if size > MAX_FILE_BYTES or len(raw) > MAX_FILE_BYTES:
            raise BrandFileError(
                f"{path}: file too large ({max(size, len(raw)):,} bytes, over the {MAX_FILE_BYTES:,}-byte limit "
                "for a brands file); check that it holds only brand records"
            )
        return raw
    except FileNotFoundError as exc:
        raise BrandFileError(
            f"{path}: file not found; create it (see brands/brands.json in the repository) "
            "or set AI_DIRECTOR_BRANDS_PATH"
        ) from exc
    except OSError as exc:
        raise BrandFileError(f"{path}: cannot be read ({exc.strerror})") from exc


RETIRE_WAIT_S = 1.0  # how long a replaced snapshot's last requests may hold it before it is let go whole
_RETIRE_CHUNK = 25  # brands freed at a time: ~0.3 ms


def _retire(holder: list, pace: Callable[[], None]) -> None:
    """Free a replaced snapshot a few brands at a time, pacing in between. Dropped whole, its
    millions of objects took 0.1-0.2 s to free in one C call that holds the GIL, wherever the
    last reference went: often the event loop, as the warm-up task a reload cancels unwinds."""
    snapshot = holder.pop()
    deadline = time.monotonic() + RETIRE_WAIT_S
    while sys.getrefcount(snapshot) > 2 and time.monotonic() < deadline:  # 2: this name, the call's argument
        time.sleep(0.01)  # requests started before the swap still use it
    if sys.getrefcount(snapshot) > 2:
        return  # still in use: freed whole when its last user lets go, as before
    brands = list(snapshot.brands)
    indexes = [snapshot.resolver, snapshot.leaks, snapshot.retriever]
    del snapshot  # its tuple goes, the brands stay held above
    for index in indexes:
        _empty(index, pace)
    del indexes
    while brands:
        del brands[-_RETIRE_CHUNK:]
        pace()


def _empty(index: object, pace: Callable[[], None], depth: int = 2) -> None:
    """Empty an index's tables (dicts and lists, and those of the objects it holds) a slice at a
    time: the leak index's alone took 20-30 ms to free at once. Only a retired snapshot's, and
    only what nothing else refers to."""
    for value in vars(index).values():
        if sys.getrefcount(value) > 3:  # 3: the index, this name, the call's argument
            continue  # shared with something still in use: not ours to take apart
        if isinstance(value, dict):
            while value:
                for _ in range(min(len(value), 20 * _RETIRE_CHUNK)):
                    value.popitem()
                pace()
        elif isinstance(value, list):
            while value:
                del value[-20 * _RETIRE_CHUNK:]
                pace()
        elif depth > 1 and hasattr(value, "__dict__") and not isinstance(value, type):
            _empty(value, pace, depth - 1)


class BrandStore:
    """Holds the current snapshot; `snapshot` is one attribute read, so a request never sees a mix."""

    def __init__(self, path: Path, on_reload: Callable[[bool], None] | None = None):
        self.path = Path(path)
        self.snapshot: BrandSnapshot | None = None
        self.last_error: ReloadError | None = None
        self._on_reload = on_reload or (lambda ok: None)
        self.pacer = ReloadPacer()  # requests enter it around brand work; reloads give way to them

    def load(self) -> BrandSnapshot:
        """First load; raises BrandFileError so a bad file stops startup."""
        self.snapshot = build_snapshot(read_brands_file(self.path), str(self.path))
        return self.snapshot

    def reload(self, count_failure: bool = True) -> bool:
        """Re-read the file; True if a new version is now served. Never raises."""
        try:
            raw = read_brands_file(self.path)
            digest = hashlib.sha256(raw).hexdigest()
            if self.snapshot is not None and digest == self.snapshot.sha256:
                self.last_error = None  # e.g. a bad write was reverted to the served content
                return False
            with self.pacer.reloading():
                snapshot = build_snapshot(raw, str(self.path), digest, self.pacer.pace)
        except BrandFileError as exc:
            if count_failure:
                log.error("brands reload failed, still serving version %s: %s", self.version, exc)
                self._on_reload(False)
            self.last_error = ReloadError(str(exc), time.time())
            return False
        replaced, self.snapshot = [self.snapshot], snapshot
        self.last_error = None
        log.info("brands reloaded: version %s, %d brands", snapshot.version, len(snapshot.brands))
        self._on_reload(True)  # first: it lets go of what warmed the old version
        if replaced[0] is not None:
            with self.pacer.reloading():
                _retire(replaced, self.pacer.pace)
        return True

    @property
    def version(self) -> str | None:
        return self.snapshot.version if self.snapshot else None

    async def watch(self, stop: asyncio.Event, retry_s: float = 1.0) -> None:
        """Reload on every change in the file's folder until `stop` is set."""
        from watchfiles import awatch

        # The configured folder, not the resolved one: a ConfigMap swaps the symlink's target.
        folder = self.path.absolute().parent
        while not stop.is_set():
            try:
                watched = os.stat(folder).st_ino
                async for changes in awatch(
                    folder, stop_event=stop, step=10, rust_timeout=int(retry_s * 1000), yield_on_timeout=True
                ):
                    # An empty batch is the timeout tick: retry quietly while the last reload failed.
                    if changes:
                        await asyncio.to_thread(self.reload)
                    elif self.last_error is not None:
                        await asyncio.to_thread(self.reload, False)
                    if not changes and os.stat(folder).st_ino != watched:
                        break  # the folder was replaced: the old watch sees nothing any more
            except Exception as exc:  # e.g. the folder itself was removed: keep serving, keep trying
                self.last_error = ReloadError(f"{folder}: cannot watch ({exc}); still serving version {self.version}", time.time())
                log.error("%s", self.last_error.message)
                try:
                    await asyncio.wait_for(stop.wait(), retry_s)
                except TimeoutError:
                    pass

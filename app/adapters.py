"""LoRA adapter folders: what the service serves, and the checks a folder passes before any weight is read.

An adapter has a name: `default` for AI_DIRECTOR_ADAPTER_PATH, and the names given in
AI_DIRECTOR_ADAPTERS. Its version is the first 12 hex digits of the sha256 of its weights,
so two replicas serving the same file report the same version. `inspect_adapter` checks
a folder (the config parses, the base matches, the prompt contract matches, the weights
file is whole) without touching the model; loading and probing the weights is
app/lora.py's part, on the generation thread.
"""

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from app.prompt_contract import CONTRACT_FILE, ContractError, compare, current_contract, describe, read_contract
from app.settings import Settings

log = logging.getLogger(__name__)

DEFAULT = "default"  # the adapter of AI_DIRECTOR_ADAPTER_PATH, used when a request names none
BASE = "none"  # a request's way to ask for the base model alone
WEIGHTS_FILE = "adapter_model.safetensors"


class AdapterError(RuntimeError):
    """An adapter folder cannot be served; the message names the folder, the problem and the fix."""


@dataclass(frozen=True)
class AdapterFiles:
    """A folder that passed the file checks: what loading it needs."""

    name: str
    path: Path  # as configured
    real: Path  # the folder it resolved to when checked: what is loaded, even if a symlink moves meanwhile
    config: dict
    version: str  # 12 hex digits of the weights' sha256
    digest: str  # sha256 of weights, config and contract together: any change to the three is a new rollout

    @property
    def base(self) -> str | None:
        """The base model it was trained on, as its config names it."""
        return self.config.get("base_model_name_or_path")


@dataclass(frozen=True)
class AdapterVersion:
    """An adapter as served: which folder, which weights, since when, under which key in the model."""

    name: str
    path: str
    version: str | None  # None for a vLLM module whose folder this process cannot read
    loaded_at: float  # time.time()
    key: str  # the adapter's name inside the PEFT model (or vLLM), unique per version
    digest: str  # AdapterFiles.digest of what was loaded
    base: str | None = None  # the base it was trained on, as its config names it; None when unknown


def replace_folder(staging: Path, target: Path) -> None:
    """Put a finished folder in place of `target` as training does: the old one stays until the
    new one is complete, and the watcher sees the swap (two renames) as one change."""
    old = target.with_name(target.name + ".old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def served_adapters(settings: Settings) -> dict[str, Path]:
    """Every adapter the settings name, the default first."""
    named = {DEFAULT: settings.adapter_path} if settings.adapter_path else {}
    return named | dict(settings.adapters)


def check_adapter_folder(settings: Settings) -> dict:
    """The default adapter's config, once its folder and prompt contract are checked against `settings`."""
    if settings.adapter_path is None:
        return {}
    return inspect_adapter(DEFAULT, settings.adapter_path, settings).config


def check_all(settings: Settings) -> list[AdapterFiles]:
    """Every served adapter's folder, checked: a bad one stops startup with its own message."""
    return [inspect_adapter(name, path, settings) for name, path in served_adapters(settings).items()]


def _setting(name: str) -> str:
    return "AI_DIRECTOR_ADAPTER_PATH" if name == DEFAULT else f"AI_DIRECTOR_ADAPTERS ({name}=...)"


def inspect_adapter(name: str, path: Path, settings: Settings, replacing: "AdapterVersion | None" = None) -> AdapterFiles:
    """The checks that need no model, in the order a rollout meets its failures; `replacing`
    is the version a rollout would replace, whose base the new one must share."""
    if not path.exists():
        raise AdapterError(
            f"adapter folder {path} does not exist: set {_setting(name)} to a folder written by "
            "`python -m training train`" + (", or leave it empty to serve the base model alone" if name == DEFAULT else "")
        )
    real = Path(os.path.realpath(path))  # one resolution for every read: a Kubernetes volume may swap it meanwhile
    config_file = real / "adapter_config.json"
    try:
        config_raw = config_file.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise AdapterError(
            f"{path} holds no adapter_config.json, so it is not a LoRA adapter folder: point "
            f"{_setting(name)} at the output folder of `python -m training train`"
        ) from None
    try:
        config = json.loads(config_raw)
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise AdapterError(f"{config_file} is not valid JSON ({exc}); re-export the adapter") from exc
    _check_base(path, config, settings.base_model, replacing)
    check_prompt_contract(real, settings)
    weights = real / WEIGHTS_FILE
    try:
        _check_whole(weights)
    except FileNotFoundError:
        raise AdapterError(
            f"{path} holds no {WEIGHTS_FILE}: the adapter's weights are missing (a copy still in progress, or an "
            "export without weights); copy the whole folder written by `python -m training train`"
        ) from None
    version, digest = fingerprint(real, config_raw)
    return AdapterFiles(name, path, real, config, version, digest)


def fingerprint(path: Path, config: bytes | None = None) -> tuple[str, str]:
    """(version, digest) of a folder: the weights' sha256, and one over weights, config and contract."""
    config = (path / "adapter_config.json").read_bytes() if config is None else config
    contract = path / CONTRACT_FILE
    stat = os.stat(path / WEIGHTS_FILE)
    weights_sha = _weights_sha256(path / WEIGHTS_FILE, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    digest = hashlib.sha256(weights_sha.encode() + config + (contract.read_bytes() if contract.is_file() else b""))
    return weights_sha[:12], digest.hexdigest()


def _check_base(path: Path, config: dict, base_model: str, replacing: "AdapterVersion | None") -> None:
    """The base the adapter was trained on, by name: a LoRA for another base may even load, and then
    writes nonsense. At startup another name is only a warning (a local copy of the base is often
    named otherwise; weights that do not fit fail as they load); a rollout must keep the base that
    the version it replaces was trained on, or the served one."""
    trained_on = config.get("base_model_name_or_path")
    if not trained_on:
        return
    known = {_base_name(base_model)} | ({_base_name(replacing.base)} if replacing and replacing.base else set())
    if _base_name(trained_on) in known:
        return
    if replacing is None:
        log.warning("adapter %s was trained on %s, serving it on %s", path, trained_on, base_model)
        return
    raise AdapterError(
        f"adapter {path} was trained on base model {trained_on!r}, but this service serves {base_model!r}"
        + (f" and the version it would replace was trained on {replacing.base!r}" if replacing.base else "")
        + ": serve it on the base it was trained on (AI_DIRECTOR_BASE_MODEL), or, when both names are the same "
        "model, set base_model_name_or_path in its adapter_config.json to the served name"
    )


def _base_name(name: str) -> str:
    return Path(str(name)).name.lower()


def _check_whole(weights: Path) -> None:
    """A safetensors file declares its own length in its header: a file cut short (a copy in
    progress) is caught by reading the header alone."""
    with open(weights, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        try:
            header_len = int.from_bytes(file.read(8), "little")
            if not 0 < header_len <= size - 8:
                raise ValueError(f"a header of {header_len:,} bytes in a file of {size:,}")
            header = json.loads(file.read(header_len))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise AdapterError(f"{weights} is not a readable safetensors file ({exc}); re-export the adapter") from exc
    if size < 8 + header_len + end:
        raise AdapterError(
            f"{weights} is cut short ({size:,} of {8 + header_len + end:,} bytes): it is still being written, "
            "or the copy failed; write the folder elsewhere and move it into place when it is complete"
        )


@lru_cache(maxsize=64)
def _weights_sha256(path: Path, device: int, inode: int, size: int, mtime_ns: int) -> str:
    """The weights' sha256, read once per file state: startup checks the folders more than once, and
    a poll every AI_DIRECTOR_ADAPTER_POLL_S would otherwise read every adapter's weights again.
    A replaced file has another inode (a folder or symlink swap), one written in place another
    size or mtime."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# What to change when a contract field differs; the adapter's value is the one to match.
_CONTRACT_FIXES = {
    "context_token_budget": "set AI_DIRECTOR_CONTEXT_TOKEN_BUDGET={trained} to match the adapter, or retrain",
    "max_seq_length": "set AI_DIRECTOR_MAX_SEQ_LENGTH={trained} to match the adapter, or retrain",
    "prompt_format_sha256": "serve the adapter with the code it was trained with, or retrain it with this code",
    "format_version": "retrain the adapter with this version",
}


def check_prompt_contract(path: Path, settings: Settings) -> None:
    """Stop unless the adapter was trained on the prompt these settings and this code build."""
    try:
        trained = read_contract(path)
    except ContractError as exc:
        raise AdapterError(str(exc)) from exc
    if trained is None:
        _warn_unchecked(path)
        return
    current = current_contract(settings.context_token_budget, settings.max_seq_length)
    differences = compare(trained, current)
    if differences:
        parts = [f"{describe(m)}: {_CONTRACT_FIXES[m.field].format(trained=m.trained)}" for m in differences]
        raise AdapterError(f"adapter {path} was trained on another prompt ({CONTRACT_FILE}): " + "; ".join(parts))


@lru_cache
def _warn_unchecked(path: Path) -> None:
    # Once per folder: `python -m app` checks before the server starts and again in the lifespan.
    log.warning("adapter folder %s has no %s (trained before prompt contracts): serving it unchecked, so its "
                "prompt settings may differ from training; retrain to add one", path, CONTRACT_FILE)

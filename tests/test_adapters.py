"""Adapters without restarts: hot rollout under load, bad adapters kept out, named adapters per
request sharing a batch. A real server on the tiny model, with tiny adapters made here."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import weakref

import httpx
import pytest

from app.adapters import AdapterError, AdapterVersion, fingerprint, inspect_adapter, replace_folder
from app.engine import GenerationRequest, HFEngine
from app.prompter import Prompter
from app.prompts import build_messages
from app.settings import Settings
from conftest import REPO
from test_server import poll, running_app, server_env
from training.tiny_model import build_tiny_adapter

CAPTION = {"brand": "CoffeeLab", "context": "เปิดตัวเมนูใหม่หน้าร้อน", "seed": 7, "temperature": 0.9}


def version_of(folder) -> str:
    return fingerprint(folder)[0]


def swap_folder(source, target) -> None:
    """As `python -m training train` finishes: write OUTPUT.partial, then put it in place."""
    staging = target.with_name(target.name + ".partial")
    shutil.copytree(source, staging)
    replace_folder(staging, target)


def swap_symlink(source, parent, stamp: str) -> None:
    """As Kubernetes updates a volume: a new timestamped folder, then `..data` swapped to it in one rename."""
    shutil.copytree(source, parent / f"..{stamp}" / "adapter")
    (parent / "..data_tmp").symlink_to(f"..{stamp}")
    os.replace(parent / "..data_tmp", parent / "..data")


@pytest.fixture(scope="module")
def kit(tiny_model_dir, tmp_path_factory):
    """Two good adapters, and one bad folder of each kind."""
    root = tmp_path_factory.mktemp("adapters")
    good = {name: build_tiny_adapter(tiny_model_dir, root / "store" / name, seed=seed)
            for name, seed in (("v1", 1), ("v2", 2))}
    bad = root / "bad"
    shutil.copytree(good["v2"], bad / "no-weights")
    (bad / "no-weights" / "adapter_model.safetensors").unlink()
    shutil.copytree(good["v2"], bad / "other-base")
    config = json.loads((bad / "other-base" / "adapter_config.json").read_text())
    (bad / "other-base" / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"}))
    shutil.copytree(good["v2"], bad / "other-rank")  # the config says 8, the weights have rank 4
    (bad / "other-rank" / "adapter_config.json").write_text(json.dumps(config | {"r": 8}))
    build_tiny_adapter(_wider_model(root / "wide-base"), bad / "other-shape", seed=3)  # the same name, wider layers
    config_wide = json.loads((bad / "other-shape" / "adapter_config.json").read_text())
    (bad / "other-shape" / "adapter_config.json").write_text(
        json.dumps(config_wide | {"base_model_name_or_path": str(tiny_model_dir)}))
    shutil.copytree(good["v2"], bad / "half-written")
    weights = bad / "half-written" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    shutil.copytree(good["v2"], bad / "nan-weights")
    _poison(bad / "nan-weights" / "adapter_model.safetensors")
    return {"root": root, "bad": bad, **good}


def _wider_model(folder):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from training.tiny_model import build_tokenizer, corpus_lines

    tokenizer = build_tokenizer(corpus_lines())
    config = Qwen2Config(vocab_size=-(-len(tokenizer) // 32) * 32, hidden_size=192, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=1)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _poison(weights) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    first = sorted(tensors)[0]
    tensors[first] = tensors[first].clone().fill_(float("nan"))
    save_file(tensors, weights)


@pytest.fixture(scope="module")
def served(kit, tiny_model_dir, tmp_path_factory):
    """A real server: `default` in a folder the tests swap, v1 and v2 fixed, `k8s` behind a `..data` link."""
    brands = tmp_path_factory.mktemp("brands") / "brands.json"
    shutil.copy(REPO / "brands" / "brands.json", brands)
    folder = tmp_path_factory.mktemp("served") / "adapter"
    shutil.copytree(kit["v1"], folder)
    k8s = tmp_path_factory.mktemp("volume")
    swap_symlink(kit["v1"], k8s, "2026_11_28_00_00_00.1")
    (k8s / "adapter").symlink_to("..data/adapter")
    adapters = f"v1={kit['v1']},v2={kit['v2']},k8s={k8s / 'adapter'}"
    with running_app(tiny_model_dir, brands, adapter_path=folder, adapters=adapters, max_new_tokens=12,
                     batch_timeout_ms=20) as (client, _):
        yield {"client": client, "folder": folder, "k8s": k8s}


def caption(client, **fields):
    r = client.post("/caption", json=CAPTION | fields)
    assert r.status_code == 200, r.text
    return r.json()


def adapter_state(client, name="default") -> dict:
    return next(a for a in client.get("/adapters").json()["adapters"] if a["name"] == name)


def test_adapters_are_listed_with_versions(served, kit):
    listed = served["client"].get("/adapters").json()
    assert [a["name"] for a in listed["adapters"]] == ["default", "v1", "v2", "k8s"]
    versions = {a["name"]: a["version"] for a in listed["adapters"]}
    assert versions["v1"] == versions["default"] == version_of(kit["v1"]) and versions["v2"] == version_of(kit["v2"])
    assert all(a["loaded_at"] and a["last_reload_error"] is None for a in listed["adapters"])
    health = served["client"].get("/health").json()
    assert health["model"]["adapters"] == listed["adapters"] and health["status"] == "ok"


def test_each_response_names_the_adapter_version_that_wrote_it(served, kit):
    client = served["client"]
    by_name = {name: caption(client, adapter=name) for name in ("v1", "v2", "none")}
    assert by_name["v1"]["model"]["adapter_version"] == version_of(kit["v1"])
    assert by_name["v2"]["model"] | {"adapter_loaded_at": None} == {
        "base": by_name["v2"]["model"]["base"], "adapter": str(kit["v2"]), "adapter_name": "v2",
        "adapter_version": version_of(kit["v2"]), "adapter_loaded_at": None}
    assert by_name["none"]["model"]["adapter"] is None and "adapter_version" not in by_name["none"]["model"]
    assert len({r["text"] for r in by_name.values()}) == 3  # three different models wrote them


def test_unknown_adapter_is_404_listing_the_names(served):
    r = served["client"].post("/caption", json=CAPTION | {"adapter": "agency-z"})
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "adapter_not_found" and error["param"] == "adapter"
    assert error["adapters"] == ["none", "default", "v1", "v2", "k8s"] and "AI_DIRECTOR_ADAPTERS" in error["message"]
    assert served["client"].post("/caption", json=CAPTION | {"adapter": "a.b"}).status_code == 422


def test_mixed_adapter_batch_gives_each_row_what_it_gets_alone_over_http(served):
    client = served["client"]
    names = ["v1", "v2", "none", "v1", "v2", "none"]
    alone = {name: caption(client, adapter=name)["text"] for name in set(names)}
    start = threading.Barrier(len(names))
    texts: list = [None] * len(names)

    def ask(i):
        start.wait()
        texts[i] = caption(client, adapter=names[i])["text"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(names))]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert texts == [alone[n] for n in names]


def test_mixed_adapter_batch_in_one_generate_call(kit, tiny_model_dir):
    """The engine itself: one batch holding three adapters gives each row its lone result, seed for seed."""
    from app.adapters import inspect_adapter

    settings = Settings(base_model=str(tiny_model_dir), device="cpu", load_in_4bit=False, _env_file=None,
                        adapter_path=kit["v1"], adapters={"v2": kit["v2"]})
    engine = HFEngine.load(settings)
    text = Prompter(engine.tokenizer).render(build_messages("caption", "CoffeeLab", {"context": "ลดราคา"}, None))
    rows = [GenerationRequest(text, 10, 1.0, 0.95, 50, seed=11, adapter=name) for name in (None, "v2", "none", "v2")]
    together = engine.generate(rows)
    alone = [engine.generate([row])[0] for row in rows]
    assert [r.text for r in together] == [r.text for r in alone]
    assert [r.adapter.name if r.adapter else None for r in together] == ["default", "v2", None, "v2"]
    assert together[0].text != together[1].text != together[2].text
    # a swap releases the old version: its tensors are freed, and only the versions served stay in the model
    key = engine.adapters["default"].key
    old_weight = weakref.ref(next(m for n, m in engine.model.named_modules() if n.endswith(f"lora_A.{key}")).weight)
    engine.install_adapter(inspect_adapter("default", kit["v2"], settings))
    assert old_weight() is None
    assert sorted(engine.model.peft_config) == sorted(v.key for v in engine.adapters.values())
    assert engine.generate([rows[0]])[0].text == together[1].text  # the default is v2 now


def test_swap_under_load_fails_nothing_and_never_serves_the_old_version_after(served, kit):
    client = served["client"]
    current = adapter_state(client)["version"]
    old, new = ("v1", "v2") if current == version_of(kit["v1"]) else ("v2", "v1")
    expected = {version_of(kit[name]): caption(client, adapter=name)["text"] for name in (old, new)}
    log: list[tuple[float, int, str | None, str | None]] = []
    stop = threading.Event()

    def load(stream: bool):
        with httpx.Client(base_url=client.base_url, timeout=60) as own:
            while not stop.is_set():
                started = time.perf_counter()
                body = CAPTION | {"stream": stream}
                if stream:
                    with own.stream("POST", "/caption", json=body) as r:
                        lines = [line for line in r.iter_lines() if line.startswith("data:")]
                    data = json.loads(lines[-1][5:]) if r.status_code == 200 else {}
                else:
                    r = own.post("/caption", json=body)
                    data = r.json() if r.status_code == 200 else {}
                model = data.get("model", {})
                log.append((started, r.status_code if "text" in data else 0, model.get("adapter_version"), data.get("text")))

    threads = [threading.Thread(target=load, args=(i % 2 == 0,)) for i in range(6)]
    [t.start() for t in threads]
    poll(lambda: len(log) >= 12, timeout=60)
    swap_folder(kit[new], served["folder"])
    _, took = poll(lambda: adapter_state(client)["version"] == version_of(kit[new]), timeout=30, every=0.02)
    swapped = time.perf_counter()
    poll(lambda: sum(1 for entry in log if entry[0] > swapped) >= 12, timeout=60)
    stop.set()
    [t.join(60) for t in threads]
    assert [entry for entry in log if entry[1] != 200] == []  # not one request failed
    assert {entry[2] for entry in log} == {version_of(kit[old]), version_of(kit[new])}
    assert all(text == expected[version] for _, _, version, text in log)  # each text is its version's
    after = [entry for entry in log if entry[0] > swapped]
    assert after and all(entry[2] == version_of(kit[new]) for entry in after)
    assert adapter_state(client)["last_reload_error"] is None
    metrics = client.get("/metrics").text
    assert f'ai_director_adapter_info{{adapter="default",version="{version_of(kit[new])}"}} 1.0' in metrics
    assert f'adapter="default",version="{version_of(kit[old])}"' not in metrics  # one series per adapter
    print(f"swap seen after {took:.2f} s; {len(log)} requests, {len(after)} after the swap")


@pytest.mark.parametrize("kind", ["no-weights", "other-base", "other-rank", "other-shape", "half-written",
                                  "nan-weights"])
def test_a_bad_adapter_keeps_the_old_one_serving(served, kit, kind):
    client = served["client"]
    before = adapter_state(client)
    good = "v2" if before["version"] == version_of(kit["v1"]) else "v1"
    expected_text = caption(client)["text"]
    swap_folder(kit["bad"] / kind, served["folder"])
    poll(lambda: adapter_state(client)["last_reload_error"], timeout=30)
    failure = adapter_state(client)["last_reload_error"]["message"]
    assert f"still serving version {before['version']}" in failure
    answer = caption(client)
    assert answer["model"]["adapter_version"] == before["version"] and answer["text"] == expected_text
    assert client.get("/health").json()["status"] == "degraded"
    assert 'ai_director_adapter_reload_error{adapter="default"} 1.0' in client.get("/metrics").text
    r = client.post("/admin/adapters/reload")
    assert r.status_code == 422 and r.json()["error"]["code"] == "adapter_invalid"
    assert adapter_state(client)["version"] == before["version"]
    # the next good write is served, and the error clears
    swap_folder(kit[good], served["folder"])
    poll(lambda: adapter_state(client)["version"] == version_of(kit[good]), timeout=30)
    assert adapter_state(client)["last_reload_error"] is None
    assert client.get("/health").json()["status"] == "ok"
    print(f"{kind}: {failure}")


def test_the_reasons_name_the_problem_and_the_fix(kit, tiny_model_dir):
    settings = Settings(base_model=str(tiny_model_dir), _env_file=None)
    served = AdapterVersion("default", str(kit["v1"]), version_of(kit["v1"]), 0.0, "k", "d", str(tiny_model_dir))
    reasons = {}
    for kind in ("no-weights", "other-base", "half-written"):
        with pytest.raises(AdapterError) as info:
            inspect_adapter("default", kit["bad"] / kind, settings, replacing=served)
        reasons[kind] = str(info.value)
    # at startup, with nothing to replace, another base's name is a warning: the shapes decide as it loads
    assert inspect_adapter("default", kit["bad"] / "other-base", settings).base == "Qwen/Qwen2.5-0.5B-Instruct"
    assert "holds no adapter_model.safetensors" in reasons["no-weights"] and "copy the whole folder" in reasons["no-weights"]
    assert "trained on base model 'Qwen/Qwen2.5-0.5B-Instruct'" in reasons["other-base"]
    assert "AI_DIRECTOR_BASE_MODEL" in reasons["other-base"]
    assert "cut short" in reasons["half-written"] and "move it into place" in reasons["half-written"]


def test_kubernetes_symlink_swap_rolls_out(served, kit):
    client = served["client"]
    swap_symlink(kit["v2"], served["k8s"], "2026_11_28_01_00_00.2")
    poll(lambda: adapter_state(client, "k8s")["version"] == version_of(kit["v2"]), timeout=30)
    assert caption(client, adapter="k8s")["text"] == caption(client, adapter="v2")["text"]


def test_admin_reload_serves_a_write_in_place(served, kit):
    """Files written in place, one by one, as a copy tool does: the version follows the last write."""
    client = served["client"]
    current = adapter_state(client)["version"]
    other = "v2" if current == version_of(kit["v1"]) else "v1"
    for name in ("adapter_config.json", "prompt_contract.json", "adapter_model.safetensors"):
        shutil.copy(kit[other] / name, served["folder"] / name)
    r = client.post("/admin/adapters/reload", params={"name": "default"})
    assert r.status_code == 200, r.text
    assert [a["version"] for a in r.json()["adapters"] if a["name"] == "default"] == [version_of(kit[other])]
    assert client.post("/admin/adapters/reload", params={"name": "nope"}).json()["error"]["code"] == "adapter_not_found"


def test_a_bad_named_adapter_stops_startup_with_its_name(tiny_model_dir, kit, brands_file):
    env = server_env(tiny_model_dir, brands_file, adapters=f"agency-a={kit['bad'] / 'no-weights'}")
    done = subprocess.run([sys.executable, "-m", "app"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "holds no adapter_model.safetensors" in done.stderr


@pytest.mark.parametrize("value, problem", [("a", "is not name=folder"), ("a=/x,a=/y", "given twice"),
                                            ("none=/x", "not 'default' or 'none'"), ("a.b=/x", "letters, digits")])
def test_adapters_setting_is_checked(value, problem, monkeypatch):
    from pydantic import ValidationError

    monkeypatch.setenv("AI_DIRECTOR_ADAPTERS", value)
    with pytest.raises(ValidationError, match=problem):
        Settings(_env_file=None)


async def test_a_vllm_listing_older_than_a_rollout_does_not_undo_it():
    """/v1/models asked before a module was loaded does not list it: the rollout stands. A listing
    asked after it that lacks the module means vLLM restarted: the version is loaded again."""
    from app.vllm_adapters import VLLMAdapters

    lora = VLLMAdapters(client=None, unload_grace_s=30)
    models = {"base": {"id": "base"}, "ai-director": {"id": "ai-director", "parent": "base", "root": "/nowhere"}}
    loaded_at = time.time()
    lora.loaded["default"] = AdapterVersion("default", "/adapters/v2", "abc", loaded_at, "default-abc", "d")
    await lora.update(models, "ai-director", asked_at=loaded_at - 1)
    assert lora.model_for(None) == ("default-abc", lora.loaded["default"])
    await lora.update(models, "ai-director", asked_at=loaded_at + 1)
    assert "default" not in lora.loaded and lora.model_for(None)[0] == "ai-director"
    assert lora.model_for("none") == ("base", None)


def test_the_admin_reload_needs_the_api_key(tiny_model_dir, tiny_tokenizer, brands_file):
    from app.main import create_app
    from fakes import FakeEngine
    from test_server import serving_in_thread

    settings = Settings(base_model=str(tiny_model_dir), brands_path=brands_file, api_key="admin-key", _env_file=None)
    with serving_in_thread(create_app(settings, engine_factory=lambda s: FakeEngine(tiny_tokenizer))) as (client, _):
        assert client.post("/admin/adapters/reload").status_code == 401
        assert client.get("/adapters").status_code == 401
        r = client.post("/admin/adapters/reload", headers={"Authorization": "Bearer admin-key"})
        assert r.status_code == 200 and r.json() == {"base": str(tiny_model_dir), "adapters": []}

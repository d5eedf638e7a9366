"""`python -m app`: start the service with the AI_DIRECTOR_* settings.

    AI_DIRECTOR_ADAPTER_PATH=outputs/adapter python -m app
    python -m app --help    # every AI_DIRECTOR_* setting, its default and meaning
"""

import argparse
import logging
import sys
import textwrap
import typing
from importlib.metadata import PackageNotFoundError, version

from pydantic import ValidationError
from pydantic_core import PydanticUndefined

DISTRIBUTION = "ai-director"


def package_version() -> str:
    """The installed distribution's version, for --version."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _shown(value) -> str:
    if value is None or value is PydanticUndefined:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def settings_help(width: int = 88) -> str:
    """Every setting as `NAME (default)` and its description, read from Settings so it cannot drift."""
    from app.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    lines = ["settings (environment variables, or a .env file in the working folder):"]
    for name, field in Settings.model_fields.items():
        about = field.description
        if not about and typing.get_origin(field.annotation) is typing.Literal:
            about = "One of: " + ", ".join(map(str, typing.get_args(field.annotation))) + "."
        lines.append(f"  {prefix}{name.upper()}  (default: {_shown(field.default)})")
        lines += textwrap.wrap(about or "", width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """`python -m app` takes no arguments besides --help and --version: settings come from the environment."""
    cli = argparse.ArgumentParser(
        prog="python -m app",
        description="Start the AI Director service: the HTTP API, configured by the settings below.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.add_argument("--version", action="version", version=f"{DISTRIBUTION} {package_version()}")
    return cli


def main(argv: list[str] | None = None) -> int:
    # --help / --version exit 0 and unknown arguments exit 2, before any setting is read.
    parser().parse_args(argv)
    return serve()


def serve() -> int:
    """Start the server as configured by AI_DIRECTOR_*; 2 on a bad setting, 1 if it cannot start."""
    from app.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            print(f"error: AI_DIRECTOR_{field.upper()}: {err['msg']}", file=sys.stderr)
        return 2

    from app.brand_schema import BrandFileError
    from app.engine import EngineLoadError
    from app.main import create_app
    from app.server import build_server

    from app.adapters import AdapterError, check_all
    from app.brand_store import parse_brands, read_brands_file

    try:  # the cheap checks first, for a one-line error instead of a traceback
        parse_brands(read_brands_file(settings.brands_path), str(settings.brands_path))
        check_all(settings)
    except (BrandFileError, EngineLoadError, AdapterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every per-brand index build at DEBUG
    reserve_cores(settings)
    app = create_app(settings)
    server = build_server(app, settings)
    app.state.request_shutdown = lambda: setattr(server, "should_exit", True)
    server.run()
    if app.state.load_error:
        print(f"error: {app.state.load_error}", file=sys.stderr)
        return 1
    if not server.started:
        return 1
    return 0


def reserve_cores(settings) -> None:
    """Generating on CPU, leave AI_DIRECTOR_CPU_RESERVED_CORES to the event loop (app/engine.py).
    Here, not in the engine: the thread count is the whole process's, and tests load engines too."""
    if settings.engine != "local":
        return
    from app.engine import EngineLoadError, generation_threads, resolve_device

    try:
        device = resolve_device(settings.device)
    except EngineLoadError:
        return  # the model load reports it
    threads = generation_threads(settings.cpu_reserved_cores)
    if device == "cpu" and threads is not None:
        import torch

        torch.set_num_threads(threads)
        logging.getLogger("app").info("generating on CPU with %d threads", threads)


if __name__ == "__main__":
    sys.exit(main())

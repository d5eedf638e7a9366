"""`python -m app`: start the service with the AI_DIRECTOR_* settings.

    AI_DIRECTOR_ADAPTER_PATH=outputs/adapter python -m app
"""

import logging
import sys

from pydantic import ValidationError


def main() -> int:
    from app.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            print(f"error: AI_DIRECTOR_{field.upper()}: {err['msg']}", file=sys.stderr)
        return 2

    import uvicorn

    from app.brand_schema import BrandFileError
    from app.engine import EngineLoadError
    from app.main import create_app

    from app.brand_store import parse_brands, read_brands_file
    from app.engine import check_adapter_folder

    try:  # the cheap checks first, for a one-line error instead of a traceback
        parse_brands(read_brands_file(settings.brands_path), str(settings.brands_path))
        if settings.adapter_path:
            check_adapter_folder(settings.adapter_path)
    except (BrandFileError, EngineLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every per-brand index build at DEBUG
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level)
    server = uvicorn.Server(config)
    app.state.request_shutdown = lambda: setattr(server, "should_exit", True)
    server.run()
    if app.state.load_error:
        print(f"error: {app.state.load_error}", file=sys.stderr)
        return 1
    if not server.started:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

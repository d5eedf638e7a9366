"""AI Director Studio: the web page for the marketing team, served by the app itself.

The page is static HTML and ES modules that call the JSON API as any client does, so it
needs no build step and no CDN: it works on a network without internet. The page and its
assets are open (no API key): they hold no data, and the page asks for the key itself
when the API answers 401. None of it is in the API document.
"""

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

PAGE_URL = "/studio"
NO_CACHE = {"Cache-Control": "no-cache"}  # the browser revalidates: an upgraded server never runs a stale page
ASSETS = files("app") / "static" / "studio"  # index.html, the ES modules, the stylesheet, a sample calendar


def install_studio(app: FastAPI) -> None:
    """Serve the page at /studio, its assets under /studio/, and redirect / there."""

    def page_url(request: Request) -> str:
        return request.scope.get("root_path", "") + PAGE_URL  # behind a proxy that strips a path prefix

    @app.get(PAGE_URL, include_in_schema=False)
    async def studio() -> FileResponse:
        return FileResponse(ASSETS / "index.html", headers=NO_CACHE)

    @app.get("/", include_in_schema=False)
    @app.get(PAGE_URL + "/", include_in_schema=False)  # the page's relative links need /studio, not /studio/
    async def to_studio(request: Request) -> RedirectResponse:
        return RedirectResponse(page_url(request))

    # Added after the routes above, so /studio and /studio/ reach them; the mount serves /studio/<file>.
    app.mount(PAGE_URL, _Revalidated(directory=str(ASSETS)), name="studio")


class _Revalidated(StaticFiles):
    """Static files the browser checks (ETag) before each use: the modules match the page."""

    async def get_response(self, path: str, scope):
        response = await super().get_response(path, scope)
        response.headers.update(NO_CACHE)
        return response

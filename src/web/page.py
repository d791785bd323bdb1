"""The chat page at ``/``: a small web client of this very API, so a newcomer
can try the service in a browser a minute after ``make run``.

Static files the package ships (``static/app``): an HTML page, a stylesheet,
the page's ES modules, and two libraries kept as pinned files with their
licences (a markdown renderer and an HTML sanitiser; see
``static/app/vendor/README.txt``). No build step: what is in the folder is
what the browser runs. The page talks to the API like any client, with the
Bearer token; it is left out of the OpenAPI document, and answered under its
own Content-Security-Policy (``PAGE_CSP`` in ``web.middleware``): scripts and
styles from this origin only, never inline.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from litestar import MediaType, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

__all__ = ["PAGE_ASSETS", "PAGE_PATH", "page_router"]

PAGE_PATH = "/"
PAGE_ASSETS = "/app"
# Modules import each other by relative names, so a changed file cannot get a
# new URL of its own: the browser asks again each time (a 304 when unchanged).
ASSETS_CACHE = CacheControlHeader(no_cache=True)
_ASSET_REFERENCE = re.compile(r'(href|src)="\{asset:([\w./-]+)\}"')


def page_router() -> Router:
    """``GET /`` and the files it loads from ``/app``."""
    assets = Path(__file__).with_name("static") / "app"

    def versioned(match: re.Match[str]) -> str:
        # The page's own files carry their content's hash, so a new release is
        # loaded at once even where an old copy was kept.
        name = match[2]
        digest = hashlib.sha256((assets / name).read_bytes()).hexdigest()[:16]
        return f'{match[1]}="{PAGE_ASSETS}/{name}?v={digest}"'

    html = _ASSET_REFERENCE.sub(versioned, (assets / "index.html").read_text()).encode()

    @get(PAGE_PATH, media_type=MediaType.HTML, sync_to_thread=False, cache_control=ASSETS_CACHE)
    def chat_page() -> bytes:
        return html

    files = create_static_files_router(
        PAGE_ASSETS, directories=[assets], name="page_assets", cache_control=ASSETS_CACHE
    )
    return Router(path="/", route_handlers=[chat_page, files], include_in_schema=False)

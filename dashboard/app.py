"""The learnviz dashboard's app factory: a small read-only Flask app over one run's archive folder.

`create_app(settings=None, test_config=None)` builds it (as Flask's tutorial app does): its
config comes from the learnviz settings (`load_settings`: defaults, YAML, LEARNVIZ_* variables,
flags), then `test_config`. Two blueprints: `pages` (HTML, and the figure files) and `api`
(JSON under /api/). Nothing is kept between requests (see dashboard.data); the archive folder is
only read. `learnviz serve` (dashboard.cli) runs it.

It answers only to the host names it was meant for (`host_config`): otherwise a web page the user
visits could point a name of its own at this machine (DNS rebinding) and read the dashboard.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from flask.json.provider import DefaultJSONProvider

from learnviz.common import clean_json
from learnviz.settings import Settings, load_settings

from .data import ARCHIVE_KEY
from .headers import CSP, PLOT_CSP  # noqa: F401  (PLOT_CSP: re-exported)

REFRESH_KEY = "LEARNVIZ_REFRESH_SECONDS"
REFRESH_SECONDS = 30
HOSTS_KEY = "LEARNVIZ_ALLOWED_HOSTS"          # host names accepted in the Host header; "*": any
ADDRESSES_KEY = "LEARNVIZ_ALLOW_ADDRESSES"    # True: any IP address too (bound to every interface)
LOOPBACK = ("localhost", "127.0.0.1", "::1")
EVERY_INTERFACE = ("0.0.0.0", "::", "")


def host_name(host: str) -> str:
    """The name in a Host header (or a setting): no port, no IPv6 brackets, lower case, no final
    dot; an IP address in its one spelling ("[::0:1]:5000" -> "::1")."""
    name = host.strip()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_config(settings: Settings) -> dict[str, Any]:
    """Which Host headers are answered: localhost, 127.0.0.1, ::1, the address the server listens
    on (`dashboard_host`) and `dashboard_allowed_hosts` ("*" there: any). Bound to every interface
    (0.0.0.0, ::), also any IP address and this machine's host names: a page that rebinds a name
    of its own to this machine sends that name, never an address, so addresses are safe to accept,
    and the names a user reaches it by keep working. Any other name must be listed."""
    bound = host_name(settings.dashboard_host)
    every = bound in EVERY_INTERFACE
    names = [*LOOPBACK, *settings.dashboard_allowed_hosts]
    names += [socket.gethostname(), socket.getfqdn()] if every else [bound]
    return {HOSTS_KEY: sorted({host_name(n) for n in names if n.strip()}), ADDRESSES_KEY: every}


def flask_config(settings: Settings) -> dict[str, Any]:
    """Flask's config, built from the learnviz settings (never read on its own)."""
    return {ARCHIVE_KEY: str(settings.archive_dir()), REFRESH_KEY: REFRESH_SECONDS, "DEBUG": False,
            **host_config(settings)}


def _refuse_host(name: str) -> Response:
    shown = name if re.fullmatch(r"[a-z0-9._:%-]{1,253}", name) else "NAME"
    text = (f"learnviz dashboard: host {shown!r} is not allowed (a guard against DNS rebinding). To open the "
            f"dashboard under this name, start it with `learnviz serve --allow-host {shown}`, or add the name "
            "to the dashboard_allowed_hosts setting (LEARNVIZ_DASHBOARD_ALLOWED_HOSTS).\n")
    return Response(text, status=400, mimetype="text/plain")


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, never with NaN or Infinity: Python writes them, but they are not JSON, and a
    browser's JSON.parse (and so `fetch(...).json()`) refuses the whole answer. A value that holds
    one (an archive's layout or score written elsewhere, a hand-edited history) is written again
    with them as null, as the serializers' `clean_json` does; other answers cost nothing more."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs["allow_nan"] = False
        try:
            return super().dumps(obj, **kwargs)
        except ValueError:
            return super().dumps(clean_json(obj), **kwargs)


def _printable(value: Any) -> Any:
    """Every value a template writes, as UTF-8 can write it: a path or file name whose bytes are
    not UTF-8 (the archive folder's, an unreadable archive's named in its reason) with U+FFFD
    for them, where it made the whole page a 500 (UnicodeEncodeError)."""
    if isinstance(value, str):
        from .runs import printable
        shown = printable(value)
        return value if shown is value else type(value)(shown)
    return value


def create_app(settings: Settings | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """The dashboard app. `settings`: learnviz settings (default: `load_settings()`), which must
    name the archive folder (`archive` or `checkpoints`) unless `test_config` sets
    LEARNVIZ_ARCHIVE. Debug stays off whatever the environment says."""
    app = Flask(__name__)
    app.json = JSONProvider(app)
    test_config = dict(test_config or {})
    if ARCHIVE_KEY in test_config and settings is None:
        app.config.update({REFRESH_KEY: REFRESH_SECONDS, "DEBUG": False, **host_config(Settings())})
    else:
        app.config.from_mapping(flask_config(settings if settings is not None else load_settings()))
    app.config.from_mapping(test_config)
    app.config[ARCHIVE_KEY] = str(Path(app.config[ARCHIVE_KEY]).resolve())
    app.debug = False
    app.json.sort_keys = False
    app.jinja_env.autoescape = True   # on for .html already; on for every template, whatever its name
    app.jinja_env.finalize = _printable

    from . import api, pages
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)

    @app.before_request
    def _check_host():
        """400 for a Host header the server was not meant for (runs before routing's 404s too)."""
        allowed = app.config[HOSTS_KEY]
        name = host_name(request.host)      # "" when Werkzeug found invalid characters in it
        if "*" in allowed or name in allowed or (app.config[ADDRESSES_KEY] and _is_address(name)):
            return None
        return _refuse_host(name)

    @app.context_processor
    def _page_context() -> dict[str, Any]:
        from .data import run
        return {"archive_dir": app.config[ARCHIVE_KEY], "refresh_seconds": int(app.config[REFRESH_KEY]),
                "version": run().version}

    @app.after_request
    def _headers(response):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.errorhandler(404)
    def _not_found(error):
        message = getattr(error, "description", "not found")
        if request.path.startswith("/api/"):
            return jsonify({"error": message}), 404
        return render_template("error.html", message=message), 404

    return app

"""The learnviz dashboard: a small read-only Flask app over one run's archive folder.

`create_app(settings=None, test_config=None)` builds it (as Flask's tutorial app does): its
config comes from the learnviz settings (`load_settings`: defaults, YAML, LEARNVIZ_* variables,
flags), then `test_config`. Two blueprints: `pages` (HTML, and the figure files) and `api`
(JSON under /api/). Nothing is kept between requests (see dashboard.data); the archive folder is
only read. `learnviz serve` (dashboard.cli) runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, jsonify, render_template, request

from learnviz.settings import Settings, load_settings

from .data import ARCHIVE_KEY

REFRESH_KEY = "LEARNVIZ_REFRESH_SECONDS"
REFRESH_SECONDS = 30
# Everything from this server, nothing from elsewhere (users run it offline), and no inline
# script or style, so that a probe text could not run even if it escaped escaping.
CSP = ("default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def flask_config(settings: Settings) -> dict[str, Any]:
    """Flask's config, built from the learnviz settings (never read on its own)."""
    return {ARCHIVE_KEY: str(settings.archive_dir()), REFRESH_KEY: REFRESH_SECONDS, "DEBUG": False}


def create_app(settings: Settings | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """The dashboard app. `settings`: learnviz settings (default: `load_settings()`), which must
    name the archive folder (`archive` or `checkpoints`) unless `test_config` sets
    LEARNVIZ_ARCHIVE. Debug stays off whatever the environment says."""
    app = Flask(__name__)
    test_config = dict(test_config or {})
    if ARCHIVE_KEY in test_config and settings is None:
        app.config.update({REFRESH_KEY: REFRESH_SECONDS, "DEBUG": False})
    else:
        app.config.from_mapping(flask_config(settings if settings is not None else load_settings()))
    app.config.from_mapping(test_config)
    app.config[ARCHIVE_KEY] = str(Path(app.config[ARCHIVE_KEY]).resolve())
    app.debug = False
    app.json.sort_keys = False
    app.jinja_env.autoescape = True   # on for .html already; on for every template, whatever its name

    from . import api, pages
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)

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

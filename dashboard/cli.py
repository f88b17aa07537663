"""`learnviz serve`: the dashboard's command, and `serve(settings)`, the demo's last step.

Registered through the `learnviz.commands` entry point (`register`) and the `learnviz.serve`
entry point (`serve`). The server is Werkzeug's threaded WSGI server: enough for a read-only
dashboard that a few people look at; it binds 127.0.0.1 unless --host says otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import sys
from pathlib import Path

from learnviz.errors import LearnvizError
from learnviz.flags import FORMATTER, SETTING_FLAGS, add_paths, examples, missing_run_folder
from learnviz.settings import Settings, load_settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DESCRIPTION = """\
Serve the dashboard of a run's archive folder: the run at a glance (checkpoints, latest step,
accuracy, ECE, failed stages with their reasons) over the figures of <archive>/visualizations/,
a status table, the hard-example board, a page per checkpoint, and a JSON API under /api/.
It only reads the archive folder, and the page reloads itself when a checkpoint is archived.
It listens on 127.0.0.1 (this machine only) unless --host says otherwise, and answers only
to localhost, 127.0.0.1, ::1 and the address it listens on (listening on 0.0.0.0 or ::, also to
any IP address and this machine's host name): a request for another host name gets 400, so that
no web page can read it by pointing a name of its own at this machine (DNS rebinding). Allow
more names with --allow-host NAME or the dashboard_allowed_hosts setting."""


def register(sub) -> None:
    p = sub.add_parser("serve", help="the web dashboard over the archives (read-only)",
                       description=DESCRIPTION, formatter_class=FORMATTER,
                       epilog=examples("learnviz serve --checkpoints runs/gpt2-small",
                                       "learnviz serve --archive runs/run1/learnviz-archive --host 0.0.0.0 --port 80"))
    add_paths(p)
    p.add_argument("--host", dest="dashboard_host", metavar="ADDR",
                   help="address to listen on (default: the dashboard_host setting, 127.0.0.1: this machine "
                        "only; 0.0.0.0 for every interface, e.g. inside a container)")
    p.add_argument("--port", dest="dashboard_port", type=int, metavar="N",
                   help="port (default: the dashboard_port setting, 5000; 0: any free port)")
    p.add_argument("--allow-host", dest="dashboard_allowed_hosts", action="append", metavar="NAME",
                   help="also answer to requests for this host name, e.g. the name of a proxy in front "
                        "(repeatable; replaces the dashboard_allowed_hosts setting; '*': any name)")
    p.set_defaults(handler=cmd_serve)


def serve_settings(args) -> Settings:
    """learnviz.flags.settings_from, with --allow-host too (until SETTING_FLAGS lists it)."""
    overrides = {k: getattr(args, k) for k in (*SETTING_FLAGS, "dashboard_allowed_hosts") if hasattr(args, k)}
    return load_settings(getattr(args, "config", None), overrides)


def check_folder(settings: Settings) -> None:
    """A LearnvizError naming the path and its field when there is nothing to serve: the archive
    folder is missing and so is the checkpoint folder (a typo), as `learnviz status` says; or the
    folder is a file. A checkpoint folder whose archive folder is still to come is served (the
    page waits for the first checkpoint); so is an --archive folder that exists but is empty."""
    archive = settings.archive_dir()
    field, path = ("archive", archive) if settings.archive else ("checkpoints", Path(settings.checkpoints))
    if archive.exists() and not archive.is_dir():
        raise LearnvizError("not a folder", path=archive, field="archive",
                            hint="pass the archive folder (or --checkpoints DIR)")
    if archive.is_dir() or (settings.checkpoints and Path(settings.checkpoints).is_dir()):
        return
    if field == "archive":
        raise LearnvizError("no such folder", path=path, field=field,
                            hint="check the --archive path; to serve a run before its first checkpoint is "
                                 "archived, pass --checkpoints DIR or create the folder first")
    raise missing_run_folder(path)


def cmd_serve(args) -> int:
    settings = serve_settings(args)
    check_folder(settings)     # before binding the port: a typo is said at once, not served as an empty run
    return serve(settings, host=settings.dashboard_host, port=settings.dashboard_port, quiet=args.quiet)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, or a LearnvizError that says which address and what to do."""
    if not 0 <= port <= 65535:
        raise LearnvizError(f"port {port} is out of range", field="--port", hint="give a port from 1 to 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise LearnvizError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", field="--port",
                            hint="is another program using that port? pass --port N (or --host ADDR)") from None
    return sock


def make_dashboard_server(settings: Settings, *, host: str = DEFAULT_HOST, port: int | None = None):
    """A Werkzeug server for the dashboard over `settings.archive_dir()`, listening, not yet serving.

    `port=None` (the demo) tries 5000 and takes a free port when 5000 is taken; a port given
    explicitly that is taken is a LearnvizError. The server's `port` attribute is the real one.
    """
    from werkzeug.serving import make_server

    from . import create_app

    app = create_app(dataclasses.replace(settings, dashboard_host=host))   # the Host check knows the address
    if port is None:
        try:
            sock = _listen(host, DEFAULT_PORT)
        except LearnvizError:
            sock = _listen(host, 0)
    else:
        sock = _listen(host, port)
    try:
        return make_server(host, sock.getsockname()[1], app, threaded=True, fd=sock.fileno())
    finally:
        sock.close()   # the server holds its own duplicate of the descriptor


def hosts_text(config) -> str:
    """The Host names an app answers to, in words."""
    from . import ADDRESSES_KEY, HOSTS_KEY
    names = config[HOSTS_KEY]
    if "*" in names:
        return "every host name"
    return ", ".join(names) + (" and every IP address" if config[ADDRESSES_KEY] else "")


def serve(settings: Settings, *, host: str = DEFAULT_HOST, port: int | None = None, quiet: bool = False) -> int:
    """Serve the dashboard until Ctrl-C (then return 0). The demo's `learnviz.serve` hook."""
    server = make_dashboard_server(settings, host=host, port=port)
    if quiet:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)   # no line per request
    shown = f"[{host}]" if ":" in host else host
    print(f"learnviz dashboard: http://{shown}:{server.port}/  (archive: {server.app.config['LEARNVIZ_ARCHIVE']}; "
          "Ctrl-C stops it)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"  listening on {host}: anyone who can reach this machine can read the archive; "
              "put a proxy with authentication in front before you publish it", file=sys.stderr, flush=True)
        print(f"  it answers to {hosts_text(server.app.config)}; other host names get 400 "
              "(--allow-host NAME)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0

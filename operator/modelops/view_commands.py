"""`kubectl modelops get | list | history | status`: read ModelDeployments with kubectl, show them with `view`.

Objects are read with `kubectl get ... -o json`, so the current context, KUBECONFIG, `-n`,
`--context` and `--kubeconfig` mean what they mean to kubectl (and are taken before or after the
command, as kubectl takes them). `status` follows the object through the API server's watch
(`kubectl get --watch`) until the rollout to spec.version ends, for CI pipelines. On a terminal the output is drawn with rich
(`get --watch` redraws every second until Ctrl-C); otherwise it is plain text, or JSON with
`-o json` (`get --watch` then prints a new block, or JSON line, whenever what is shown changes).
Times ("for 41s", "next analysis in 3s") are computed against this machine's clock.
"""

from __future__ import annotations

import argparse
import codecs
import json
import math
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from .api.types import duration_seconds

COMMANDS = ("get", "list", "history", "status")
RESOURCE = "modeldeployments.modelops.io"
POLL_SECONDS = 1.0


class ReadError(Exception):
    """kubectl could not read what was asked (its own words)."""


class NotJSON(ReadError):
    """kubectl printed something that is not the JSON asked for (a warning, an error line, a cut-off object)."""


def _not_json(command: str, text: str) -> NotJSON:
    shown = text.strip().splitlines()[0][:200] if text.strip() else ""
    return NotJSON(f"{command} printed something that is not JSON: {shown!r}")


_LITERALS = ("true", "false", "null", "NaN", "Infinity", "-Infinity")
_NUMBER_END = re.compile(r"[-+.eE0-9]*$")
_NUMBER_START = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]*|(?:\.[0-9]+)?[eE][-+]?[0-9]*)")
"""What a JSON number cut short after its integer part reads as: the decoder stops before its dot or exponent."""
_ESCAPE_START = re.compile(r"u[0-9a-fA-F]{0,4}")  # the decoder wants a character after the four digits


def cut_short(text: str, error: json.JSONDecodeError) -> bool:
    """Whether `text`, which failed to decode with `error`, may yet be one JSON document whose rest is still to
    come; False when no continuation can make it one."""
    rest = text[error.pos:]
    if error.msg.startswith("Unterminated string") or not rest.strip():
        return True
    if error.msg.startswith("Invalid \\uXXXX escape"):
        return _ESCAPE_START.fullmatch(rest) is not None
    number = _NUMBER_END.search(text, 0, error.pos).group() + rest
    return any(literal.startswith(rest) for literal in _LITERALS) or _NUMBER_START.fullmatch(number) is not None


def add_target_flags(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """-n, --context and --kubeconfig, before the command (`top`) or after it, as kubectl takes them; after it,
    SUPPRESS keeps a value given before it."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument("-n", "--namespace", default=default, help="namespace (default: kubectl's)")
    parser.add_argument("--context", default=default, help="kubeconfig context (default: the current one)")
    parser.add_argument("--kubeconfig", default=default, help="kubeconfig file (default: kubectl's)")


def kubectl_flags(args: argparse.Namespace) -> list[str]:
    """kubectl's global flags that every kubectl call of the plugin carries: where to act, as the user said it
    (`--all-namespaces` is not one of them: it goes after `get`)."""
    flags = []
    for name in ("kubeconfig", "context", "namespace"):
        if getattr(args, name, None):
            flags += [f"--{name}", getattr(args, name)]
    return flags


def _timeout(text: str) -> float:
    try:
        return duration_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parsers(actions: argparse._SubParsersAction) -> None:
    """Add the read-only commands to the plugin's sub-command parsers."""
    get = actions.add_parser("get", help="show a ModelDeployment: phase, versions and weights, checks, step timing, "
                                         "recent history")
    get.add_argument("name")
    get.add_argument("-w", "--watch", action="store_true", help="keep showing it, redrawn every second, until Ctrl-C")
    get.add_argument("--history", type=int, default=5, metavar="N", help="history entries shown (default 5)")
    listing = actions.add_parser("list", help="one line per ModelDeployment")
    listing.add_argument("-A", "--all-namespaces", action="store_true", help="in every namespace")
    history = actions.add_parser("history", help="the whole status.history of a ModelDeployment")
    history.add_argument("name")
    status = actions.add_parser(
        "status", help="wait for the rollout to spec.version to end: exit 0 once stable on it and serving, 1 when "
                       "rolled back or failed, 2 at the timeout, 3 when it cannot be read, 4 when kubectl prints "
                       "something that is not JSON")
    status.add_argument("name")
    status.add_argument("--timeout", type=_timeout, default=0, metavar="DURATION",
                        help="give up after this long, e.g. 10m (default: wait as long as it takes)")
    for sub in (get, listing, history):
        sub.add_argument("-o", "--output", choices=["json", "plain"],
                         help="json, or plain text; default: coloured on a terminal, plain otherwise")


def kubectl_get(args: argparse.Namespace, *what: str) -> dict[str, Any]:
    try:
        every = ["--all-namespaces"] if getattr(args, "all_namespaces", False) else []
        done = subprocess.run(["kubectl", *kubectl_flags(args), "get", RESOURCE, *what, *every, "-o", "json"],
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise ReadError("kubectl get did not answer within 30s") from None
    except FileNotFoundError:
        raise ReadError("kubectl is not on PATH") from None
    if done.returncode != 0:
        raise ReadError(done.stderr.strip() or f"kubectl get exited with {done.returncode}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        raise _not_json("kubectl get", done.stdout) from None


def kubectl_watch(args: argparse.Namespace, name: str, deadline: float) -> Iterator[dict[str, Any] | None]:
    """The object, then each new state of it as the API server's watch delivers it (`kubectl get --watch -o json`);
    a last None once `deadline` (time.monotonic()) has passed. A watch the server ends is opened again. NotJSON as
    soon as kubectl prints what cannot begin or continue a JSON object, or ends its output inside one."""
    command = "kubectl get --watch"
    while True:
        # stderr goes to a file: a pipe nobody reads while the watch runs would stall kubectl once it filled up
        with tempfile.TemporaryFile() as stderr:
            try:
                process = subprocess.Popen(["kubectl", *kubectl_flags(args), "get", RESOURCE, name, "-o", "json",
                                            "--watch"], stdout=subprocess.PIPE, stderr=stderr)
            except FileNotFoundError:
                raise ReadError("kubectl is not on PATH") from None
            text, decoder, buffer = codecs.getincrementaldecoder("utf-8")(), json.JSONDecoder(), ""
            try:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        yield None
                        return
                    if not select.select([process.stdout], [], [], None if math.isinf(left) else left)[0]:
                        continue
                    chunk = os.read(process.stdout.fileno(), 1 << 16)
                    if not chunk:
                        break
                    try:
                        buffer += text.decode(chunk)
                    except UnicodeDecodeError:
                        raise NotJSON(f"{command} printed bytes that are not UTF-8") from None
                    while buffer := buffer.lstrip():
                        if not buffer.startswith("{"):
                            raise _not_json(command, buffer)
                        try:
                            obj, end = decoder.raw_decode(buffer)
                        except json.JSONDecodeError as error:
                            if cut_short(buffer, error):
                                break  # the rest of the object is still to come
                            raise _not_json(command, buffer) from None
                        buffer = buffer[end:]
                        yield obj
            finally:
                process.kill()
                process.wait()
                process.stdout.close()
                stderr.seek(0)
                errors = stderr.read().decode(errors="replace").strip()
        if process.returncode not in (0, -9):
            raise ReadError(errors or f"{command} exited with {process.returncode}")
        if buffer:
            raise NotJSON(f"{command} ended inside an object: {buffer[:200]!r}")
        time.sleep(1)  # the server closed the watch: open it again, unhurried


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _mode(args: argparse.Namespace) -> str:
    if args.output:
        return args.output
    return "rich" if sys.stdout.isatty() else "plain"


def run(args: argparse.Namespace, read: Callable[..., dict[str, Any]] = kubectl_get,
        clock: Callable[[], datetime] = utcnow, watch: Callable[..., Iterator[dict[str, Any] | None]] = kubectl_watch) -> int:
    """Carry out one read-only command; Ctrl-C ends it with status 0."""
    from .view import STATUS_NOT_JSON, STATUS_UNREADABLE

    try:
        if args.action == "status":
            return _status(args, watch)
        return {"get": _get, "list": _list, "history": _history}[args.action](args, read, clock)
    except ReadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.action != "status":
            return 1
        return STATUS_NOT_JSON if isinstance(exc, NotJSON) else STATUS_UNREADABLE
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        sys.stderr.close()
        return 0


def _status(args: argparse.Namespace, watch) -> int:
    """Print each new state of the rollout (with the time) until it ends or the timeout passes."""
    from . import view

    started = time.monotonic()
    last = None
    for obj in watch(args, args.name, started + args.timeout if args.timeout else math.inf):
        if obj is None:
            print(f"timed out after {view.duration(args.timeout)}: {last}", file=sys.stderr)
            return view.STATUS_TIMEOUT
        code, words = view.rollout_outcome(obj)
        if words != last:
            _print_lines([words])
            last = words
        if code is not None:
            return code
    raise ReadError("the watch ended")


def _console():
    from rich.console import Console

    return Console(highlight=False)


def _print_lines(lines: list[str]) -> None:
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def _get(args: argparse.Namespace, read, clock) -> int:
    from . import view

    mode = _mode(args)
    obj = read(args, args.name)
    if not args.watch:
        shown = view.view(obj, clock())
        if mode == "json":
            _print_lines([json.dumps(shown, indent=2)])
        elif mode == "plain":
            _print_lines(view.plain_lines(shown, history=args.history))
        else:
            _console().print(view.renderable(shown, history=args.history))
        return 0
    if mode == "rich":
        return _watch_live(args, read, clock, obj)
    return _watch_plain(args, read, clock, obj, mode)


def _next_read(read, args, obj: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The object anew, or the last one and why it could not be read."""
    try:
        return read(args, args.name), None
    except ReadError as exc:
        return obj, str(exc)


def _sleep_to_next_tick(started: float) -> None:
    time.sleep(max(0.05, POLL_SECONDS - (time.monotonic() - started)))


def _watch_live(args: argparse.Namespace, read, clock, obj: dict[str, Any]) -> int:
    from rich.live import Live

    from . import view

    error: str | None = None
    with Live(console=_console(), auto_refresh=False, redirect_stderr=False, transient=False) as live:
        while True:
            started = time.monotonic()
            live.update(view.renderable(view.view(obj, clock()), history=args.history, error=error), refresh=True)
            _sleep_to_next_tick(started)
            obj, error = _next_read(read, args, obj)


def _watch_plain(args: argparse.Namespace, read, clock, obj: dict[str, Any], mode: str) -> int:
    from . import view

    last_key = last_error = None
    while True:
        started = time.monotonic()
        shown = view.view(obj, clock())
        key = view.unchanging(shown)
        if key != last_key:
            last_key = key
            if mode == "json":
                _print_lines([json.dumps(shown)])  # one JSON document per line
            else:
                _print_lines([f"--- {shown['at']}", *view.plain_lines(shown, history=args.history), ""])
        _sleep_to_next_tick(started)
        obj, error = _next_read(read, args, obj)
        if error is not None and error != last_error:
            print(f"error: {error}", file=sys.stderr, flush=True)
        last_error = error


def _list(args: argparse.Namespace, read, clock) -> int:
    from . import view

    now = clock()
    items = read(args).get("items", [])
    views = sorted((view.view(obj, now) for obj in items), key=lambda v: (v["namespace"] or "", v["name"]))
    mode = _mode(args)
    if mode == "json":
        _print_lines([json.dumps(view.list_json(views), indent=2)])
    elif mode == "plain":
        _print_lines(view.plain_list(views, args.all_namespaces) if views else ["No ModelDeployments found."])
    else:
        _console().print(view.rich_list(views, args.all_namespaces) if views else "No ModelDeployments found.")
    return 0


def _history(args: argparse.Namespace, read, clock) -> int:
    from . import view

    shown = view.view(read(args, args.name), clock())
    mode = _mode(args)
    if mode == "json":
        _print_lines([json.dumps(view.history_json(shown), indent=2)])
    elif mode == "plain":
        _print_lines(view.plain_history(shown))
    else:
        _console().print(view.rich_history(shown))
    return 0

"""The operator's log lines: kopf's text format, or one JSON object per line for log collectors."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

FORMATS = ("text", "json")


class JsonLines(logging.Formatter):
    """One JSON object per record, on one line: `time` (UTC, ISO 8601, milliseconds), `level`,
    `logger`, `message`; `exception` (the traceback text) when the record carries one, `stack`
    when it carries a stack, and `object` (kind, namespace, name) when kopf logs about an object."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ref = getattr(record, "k8s_ref", None)  # what kopf's per-object loggers attach
        if isinstance(ref, dict):
            line["object"] = {key: ref[key] for key in ("kind", "namespace", "name") if ref.get(key)}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def configure(verbose: bool, log_format: str) -> None:
    """Root logging as `modelops run` uses it: kopf's handler on stderr, with JsonLines for "json"."""
    import kopf

    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r}: one of {', '.join(FORMATS)}")
    kopf.configure(verbose=verbose)
    if log_format == "json":
        for handler in logging.getLogger().handlers:  # the one stream handler kopf.configure installed
            handler.setFormatter(JsonLines())
    if not verbose:  # kopf logs each event handler's success at INFO: a line per watched change, at any scale
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # Its debug lines are whole response bodies: one per lease renewal.
    logging.getLogger("kubernetes_asyncio").setLevel(max(logging.INFO, logging.getLogger().level))

"""`modelops run --log-format json`: one JSON object per line that a log collector can parse."""

from __future__ import annotations

import json
import logging

import pytest

from modelops import logs
from modelops.cli import main


@pytest.fixture
def root_logging():
    """kopf.configure changes the root logger: put it back for the other tests."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("kopf.objects", "kubernetes_asyncio")}
    yield
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_json_lines_carry_time_level_logger_message_and_the_exception(root_logging, capsys):
    logs.configure(verbose=False, log_format="json")
    log = logging.getLogger("modelops.test")
    log.info("rollout of %s: step %d", "fraud", 2)
    try:
        raise RuntimeError("prometheus answered 503\nafter 3 tries")
    except RuntimeError:
        log.exception("analysis failed")
    log.warning("handler failed", extra={"k8s_ref": {"apiVersion": "modelops.io/v1alpha1", "kind": "ModelDeployment",
                                                     "name": "fraud", "namespace": "prod", "uid": "u-1"}})
    log.debug("not at the default level")
    logging.getLogger("kopf.objects").info("kopf's handler succeeded")  # quietened without --verbose
    info, error, warning = lines(capsys.readouterr().err)  # each record one line, newlines and all
    assert set(info) == {"time", "level", "logger", "message"}
    assert info["level"] == "INFO" and info["logger"] == "modelops.test" and info["message"] == "rollout of fraud: step 2"
    assert info["time"].endswith("+00:00") and len(info["time"]) == len("2025-01-01T00:00:00.000+00:00")
    assert error["level"] == "ERROR" and error["message"] == "analysis failed"
    assert error["exception"].startswith("Traceback") and error["exception"].endswith(
        "RuntimeError: prometheus answered 503\nafter 3 tries")
    assert warning["object"] == {"kind": "ModelDeployment", "namespace": "prod", "name": "fraud"}
    assert "exception" not in info and "object" not in info


def test_text_stays_kopfs_format(root_logging, capsys):
    logs.configure(verbose=True, log_format="text")
    logging.getLogger("modelops.test").debug("shown with --verbose")
    [line] = capsys.readouterr().err.splitlines()
    assert "modelops.test" in line and "[DEBUG" in line and line.endswith("shown with --verbose")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_the_flag_reaches_the_operator_and_a_bad_one_is_refused(monkeypatch, capsys):
    import modelops.cli as cli

    given = []
    monkeypatch.setattr(cli, "run_operator", lambda args: given.append(args.log_format) or 0)
    assert main(["run", "--log-format", "json"]) == 0 and main(["run"]) == 0
    assert given == ["json", "text"]
    with pytest.raises(SystemExit):
        main(["run", "--log-format", "xml"])
    assert "--log-format: invalid choice: 'xml'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="log format 'xml'"):
        logs.configure(verbose=False, log_format="xml")

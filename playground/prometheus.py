"""A real Prometheus server (Debian's package) scraping targets the tests provide: on loopback, or
ClusterIPs of the single-node cluster."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .processes import Process, SilentListener, free_port


class Prometheus:
    def __init__(self, work_dir: Path, scrape_interval: str = "1s", binary: str = "prometheus",
                 host: str = "127.0.0.1"):
        """`host`: the address it listens on (the node's bridge address, for pods to reach it)."""
        self.dir = work_dir
        self.scrape_interval = scrape_interval
        self.binary = binary
        self.targets: dict[str, dict[str, str]] = {}
        self.process: Process | None = None
        self.port = free_port()
        self.host = host
        self.url = f"http://{host}:{self.port}"

    def start(self, timeout: float = 30) -> Prometheus:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_targets()
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{
                "job_name": "test-targets",
                # File discovery is watched, so targets added mid-test are scraped within a second or so.
                # Stand-in controllers add their own files beside it (targets-*.json).
                "file_sd_configs": [{"files": [str(self.dir / "targets*.json")], "refresh_interval": "1s"}],
            }],
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process = Process("prometheus", [
            self.binary, f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address={self.host}:{self.port}",
            "--storage.tsdb.retention.time=1h", "--log.level=warn",
        ], self.dir)
        self.process.wait_until(lambda: urllib.request.urlopen(f"{self.url}/-/ready", timeout=1).status == 200,
                                timeout, "ready Prometheus")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def __enter__(self) -> Prometheus:
        """Started; stopped on leaving, and if it does not get ready."""
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- faults (the chaos tier) ---------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL: no clean shutdown of the TSDB (its WAL is replayed on restart)."""
        if self.process is not None:
            self.process.kill()

    def restart(self, timeout: float = 30) -> float:
        """Prometheus again, same command line: same port (so `url` stays valid), config and data.
        Whatever listened in its place (`hang`) is closed first. Returns the seconds until ready."""
        started = time.monotonic()
        silent = getattr(self, "silent", None)
        if silent is not None:
            silent.close()
            self.silent = None
        assert self.process is not None
        if self.process.alive():
            self.process.kill()
        self.process = Process("prometheus", list(self.process.proc.args), self.dir)
        self.process.wait_until(lambda: urllib.request.urlopen(f"{self.url}/-/ready", timeout=1).status == 200,
                                timeout, "ready Prometheus after a restart")
        return time.monotonic() - started

    def hang(self) -> SilentListener:
        """Kill Prometheus and put on its port a listener that accepts and never answers; `restart()` ends it."""
        self.kill()
        self.silent = SilentListener(self.port)
        return self.silent

    def targets_file(self, owner: str) -> Path:
        """A file_sd file of its own for a process that registers its own targets."""
        return self.dir / f"targets-{owner}.json"

    def add_target(self, address: str, **labels: str) -> None:
        self.targets[address] = labels
        self._write_targets()

    def remove_target(self, address: str) -> None:
        self.targets.pop(address, None)
        self._write_targets()

    def _write_targets(self) -> None:
        groups = [{"targets": [address], "labels": labels} for address, labels in self.targets.items()]
        tmp = self.dir / "targets.json.tmp"
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.dir / "targets.json")  # atomic: discovery never reads half a file

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        body = json.load(urllib.request.urlopen(url, timeout=5))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def query_range(self, promql: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"}
        body = json.load(urllib.request.urlopen(f"{self.url}/api/v1/query_range?" + urllib.parse.urlencode(params),
                                                timeout=10))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, promql: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Poll a query until it returns samples (the scrape has happened), then return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.2)
        raise TimeoutError(f"no samples for {promql} within {timeout}s")

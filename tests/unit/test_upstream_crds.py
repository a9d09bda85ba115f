"""The upstream CRDs: pins against the shared copies, the fetch path against a loopback HTTP server,
and a checkout with nothing beside it, where `python -m demo.run` says what to do instead of a traceback."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

from playground import upstream_crds as upstream
from playground.upstream_crds import PINS, Pin, UpstreamCRDMismatch, UpstreamCRDsUnavailable, upstream_crds

SHARED = upstream.shared_folder()
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared/upstream-crds beside the checkout")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in (upstream.ENV_FOLDER, upstream.ENV_MIRROR, "MODELOPS_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@contextmanager
def serving(folder: Path) -> Iterator[str]:
    """An HTTP server on loopback serving `folder`; yields its base address."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def closed_port() -> Iterator[str]:
    """A loopback address nothing listens on: the port is held (bound, not listening) meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{held.getsockname()[1]}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- (a) the pins are the copies we use ------------------------------------------------------------


@needs_shared
def test_one_pin_per_shared_file_and_its_sha256_is_the_shared_copys():
    assert sorted(PINS) == sorted(p.name for p in SHARED.iterdir() if p.is_file())
    assert {name: pin.sha256 for name, pin in PINS.items()} == {name: sha256(SHARED / name) for name in PINS}


def test_pins_are_tag_pinned_upstream_addresses():
    for pin in PINS.values():
        assert len(pin.sha256) == 64 and int(pin.sha256, 16) >= 0
        assert pin.sources
        for address in pin.sources:
            assert address.startswith("https://raw.githubusercontent.com/"), address
            tag = address.split("/")[5]
            assert tag[0] == "v" and tag[1].isdigit(), f"{address}: not pinned to a release tag"


# --- resolution order ------------------------------------------------------------------------------


@needs_shared
def test_the_shared_folder_comes_before_the_cache(tmp_path):
    assert upstream_crds([upstream.KSERVE], shared=SHARED, cache=tmp_path / "cache") == SHARED
    assert not (tmp_path / "cache").exists()


def test_an_explicit_folder_must_hold_the_files(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / upstream.SELDON_V2_MODELS).write_text("kind: CustomResourceDefinition\n")
    monkeypatch.setenv(upstream.ENV_FOLDER, str(folder))
    assert upstream_crds([upstream.SELDON_V2_MODELS]) == folder  # used as is: the user's choice
    with pytest.raises(UpstreamCRDsUnavailable) as raised:
        upstream_crds([upstream.SELDON_V2_MODELS, upstream.KSERVE])
    message = str(raised.value)
    assert f"{upstream.ENV_FOLDER}={folder} does not hold the upstream CRDs {upstream.KSERVE}" in message
    assert f"Set {upstream.ENV_FOLDER}=/path/to/a/folder holding {upstream.SELDON_V2_MODELS}, {upstream.KSERVE}" in message


def test_unknown_names_are_a_programming_error(tmp_path):
    with pytest.raises(ValueError, match="not pinned"):
        upstream_crds(["nginx-ingress.yaml"], shared=tmp_path, cache=tmp_path)


# --- (b) fetched from a mirror into the cache, verified -------------------------------------------------


@needs_shared
def test_fetched_files_land_in_the_cache_verified(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("MODELOPS_CACHE", str(tmp_path / "modelops-cache"))
    assert upstream.cache_folder() == tmp_path / "modelops-cache" / "upstream-crds"
    with serving(SHARED) as address:
        monkeypatch.setenv(upstream.ENV_MIRROR, address)
        assert upstream_crds(shared=tmp_path / "no-shared", cache=cache) == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(PINS)  # and no temporary file left
    for name, pin in PINS.items():
        assert sha256(cache / name) == pin.sha256
        assert (cache / name).read_bytes() == (SHARED / name).read_bytes()

    # Verified copies in the cache need no network; a damaged one is fetched again.
    with closed_port() as nowhere:
        assert upstream_crds([upstream.KSERVE], shared=tmp_path / "no-shared", cache=cache, mirror=nowhere) == cache
    (cache / upstream.SELDON_V2_MODELS).write_text("damaged\n")
    with serving(SHARED) as address:
        upstream_crds([upstream.SELDON_V2_MODELS], shared=tmp_path / "no-shared", cache=cache, mirror=address)
    assert sha256(cache / upstream.SELDON_V2_MODELS) == PINS[upstream.SELDON_V2_MODELS].sha256


def test_a_file_joined_from_several_upstream_files(tmp_path, monkeypatch):
    """Without a mirror each pinned address is fetched; several are joined, each after a `---` line."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "a.yaml").write_text("kind: A\n")
    (served / "b.yaml").write_text("---\nkind: B\n")
    joined = b"---\nkind: A\n---\n---\nkind: B\n"
    with serving(served) as address:
        monkeypatch.setitem(PINS, "joined.yaml", Pin("joined.yaml", hashlib.sha256(joined).hexdigest(),
                                                     (f"{address}/a.yaml", f"{address}/b.yaml")))
        cache = upstream_crds(["joined.yaml"], shared=tmp_path / "no-shared", cache=tmp_path / "cache")
    assert (cache / "joined.yaml").read_bytes() == joined


# --- (c) altered bytes are refused and not kept ------------------------------------------------------------


@needs_shared
def test_altered_bytes_are_a_sha256_error_and_nothing_is_cached(tmp_path):
    altered = tmp_path / "altered"
    altered.mkdir()
    name = upstream.SELDON_V2_EXPERIMENTS
    (altered / name).write_bytes((SHARED / name).read_bytes().replace(b"Experiment", b"Exper1ment", 1))
    cache = tmp_path / "cache"
    with serving(altered) as address, pytest.raises(UpstreamCRDMismatch) as raised:
        upstream_crds([name], shared=tmp_path / "no-shared", cache=cache, mirror=address)
    message = str(raised.value)
    assert name in message and f"{address}/{name}" in message
    assert f"expected {PINS[name].sha256}" in message
    assert f"actual {sha256(altered / name)}" in message
    assert not list(cache.glob("*")) and not list(cache.glob(".*"))


# --- (d) nothing works: one clear message ------------------------------------------------------------------


def test_an_unreachable_server_and_no_shared_folder_is_one_clear_message(tmp_path):
    names = [upstream.KSERVE, upstream.SELDON_V1]
    with closed_port() as nowhere, pytest.raises(UpstreamCRDsUnavailable) as raised:
        upstream_crds(names, shared=tmp_path / "no-shared", cache=tmp_path / "cache", mirror=nowhere)
    message = str(raised.value)
    assert type(raised.value) is UpstreamCRDsUnavailable
    assert 2 <= len(message.splitlines()) <= 4
    host = nowhere.removeprefix("http://")
    assert (f"Set MODELOPS_UPSTREAM_CRDS=/path/to/a/folder holding {upstream.KSERVE}, {upstream.SELDON_V1}, "
            f"or allow access to {host}.") in message
    assert f"{nowhere}/{upstream.KSERVE}" in message and f"{tmp_path / 'no-shared'} (absent)" in message
    assert not list((tmp_path / "cache").glob("*"))


def test_without_a_mirror_the_message_names_the_upstream_host(tmp_path, monkeypatch):
    def refuse(address, timeout):
        raise OSError("network is unreachable")  # no real address is ever contacted

    monkeypatch.setattr(upstream.urllib.request, "urlopen", refuse)
    with pytest.raises(UpstreamCRDsUnavailable) as raised:
        upstream_crds([upstream.KSERVE], shared=tmp_path / "no-shared", cache=tmp_path / "cache")
    assert "or allow access to raw.githubusercontent.com." in str(raised.value)
    assert PINS[upstream.KSERVE].sources[0] in str(raised.value)


# --- (e) a checkout with nothing beside it -------------------------------------------------------------------


def _copy_checkout(to: Path) -> None:
    """The repository's files (tracked, and new ones not ignored), as a clone would have them."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=upstream.REPO, check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for name in filter(None, listed.decode().split("\0")):
        source = upstream.REPO / name
        if source.is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, to / name)


def test_the_demo_without_upstream_crds_says_what_to_do(tmp_path):
    checkout = tmp_path / "modelops"
    _copy_checkout(checkout)
    assert not (checkout.parent / "shared").exists()
    environment = {k: v for k, v in os.environ.items()
                   if k not in (upstream.ENV_FOLDER, "MODELOPS_CACHE", "PYTHONPATH", "XDG_CACHE_HOME")}
    with closed_port() as nowhere:
        environment.update({upstream.ENV_MIRROR: nowhere, "MODELOPS_CACHE": str(tmp_path / "empty-cache")})
        result = subprocess.run([sys.executable, "-m", "demo.run", "--out", str(tmp_path / "out")],
                                cwd=checkout, env=environment, capture_output=True, text=True, timeout=180)
        # `make demo` and `make test` ask first, before installing or building anything.
        made = subprocess.run(["make", "-s", "demo", f"PYTHON={sys.executable}"], cwd=checkout, env=environment,
                              capture_output=True, text=True, timeout=180)
    assert made.returncode != 0 and "Traceback" not in made.stderr
    assert "or allow access to" in made.stderr and not (checkout / ".venv").exists(), made.stderr
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert (f"Set MODELOPS_UPSTREAM_CRDS=/path/to/a/folder holding {upstream.GATEWAY_STANDARD}, "
            f"or allow access to {nowhere.removeprefix('http://')}.") in result.stderr
    assert str(checkout.parent / "shared" / "upstream-crds") in result.stderr  # the copy's, not this checkout's
    assert not (tmp_path / "out").exists()  # it stopped before starting anything

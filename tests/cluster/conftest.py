"""Fixtures the cluster modules share."""

from __future__ import annotations

import pytest

from playground.image import model_server_image


@pytest.fixture(scope="module")
def model_server() -> str:
    """The demo's model server's image (demo/Dockerfile), built (or found in podman's layer cache) once per module."""
    try:
        return model_server_image()
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)

"""The real API server refuses every spec the operator refuses (generated in tests/refusals.py from the operator's
models, and checked against them in tests/unit/test_refusals.py), naming the field, and accepts the specs at the
edge of each rule: no spec the operator cannot use is ever stored. Server-side dry runs: nothing is created."""

from __future__ import annotations

import pytest

from ..refusals import ACCEPTANCES, REFUSALS

NAMESPACED = {"ModelDeployment"}


def dry_run(control_plane, manifest):
    where = ("-n", "default") if manifest["kind"] in NAMESPACED else ()
    return control_plane.apply(manifest, "--dry-run=server", *where, check=False)


@pytest.mark.parametrize("case", REFUSALS, ids=[c.what for c in REFUSALS])
def test_the_api_server_refuses_each_spec_the_operator_refuses(control_plane, case):
    done = dry_run(control_plane, case.manifest)
    assert done.returncode != 0, f"{case.what} was accepted"
    assert case.api_field in done.stderr, done.stderr
    if case.words:
        assert case.words in done.stderr, done.stderr


@pytest.mark.parametrize("case", ACCEPTANCES, ids=[c.what for c in ACCEPTANCES])
def test_the_api_server_accepts_each_spec_at_the_edge_of_a_rule(control_plane, case):
    done = dry_run(control_plane, case.manifest)
    assert done.returncode == 0, done.stderr

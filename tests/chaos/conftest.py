"""The chaos tier runs on the integration tier's session fixtures (a real control plane, a real
Prometheus, the operator process and the KServe stand-in), re-exported here by name. A name
imported into this module is a fixture of this directory: in a run of the whole `tests` tree
the chaos tier gets session objects of its own, which it may break and repair without the
integration tier ever noticing.

Figures go to FIGURES and are printed at the end of the run, like the integration tier's TIMINGS.
"""

from __future__ import annotations

from ..integration.conftest import (  # noqa: F401 - fixtures, by name
    control_plane,
    kserve,
    namespace,
    operator,
    operator_kubeconfig,
    prometheus,
    stand_ins,
)

FIGURES: list[tuple[str, str]] = []


def figure(what: str, value: str) -> None:
    FIGURES.append((what, value))
    print(f"{what}: {value}")


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("chaos tier figures")
        for what, value in FIGURES:
            terminalreporter.write_line(f"{what}: {value}")

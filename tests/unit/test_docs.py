"""The README stays a front page, the documentation's links resolve, and the CRD reference is the generator's output.

`make test` also builds the site with `mkdocs build --strict` (anchors, and pages left out of the nav).
"""

import re
from pathlib import Path

import pytest
import yaml

from modelops.api.crd import all_crds
from modelops.api.crd_docs import crd_reference
from modelops.api.modeldeployment import ModelDeploymentSpec
from modelops.api.modelversion import ModelVersionSpec

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").rglob("*.md"))
FRONT_PAGE_LIMIT = 12 * 1024

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(text: str) -> list[str]:
    """The targets of Markdown links outside code that are neither absolute URLs nor in-page anchors."""
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    text = re.sub(r"\\.", "", text)  # escaped brackets are text, not links
    return [target for target in LINK.findall(text)
            if not re.match(r"[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")]


def test_readme_is_a_front_page():
    size = len(README.read_bytes())
    assert size <= FRONT_PAGE_LIMIT, f"README.md is {size} bytes, over {FRONT_PAGE_LIMIT}: move detail into docs/"


def test_readme_keeps_the_quickstart():
    text = README.read_text()
    assert re.search(r"^make demo\b", text, re.MULTILINE) and re.search(r"^make test\b", text, re.MULTILINE)


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = [target for target in relative_links(page.read_text())
              if not (page.parent / target.split("#", 1)[0]).exists()]
    assert not broken, f"{page.relative_to(ROOT)} links to what does not exist: {broken}"


def test_link_finder_sees_broken_links():
    found = relative_links("[a](docs/x.md) [b](https://e.org) [c](#top) `[d](y.md)`\n```\n[e](z.md)\n```\n"
                           r"[f](g.md#h) \[a-z\](x)")
    assert found == ["docs/x.md", "g.md#h"]


def test_crd_reference_is_generated():
    committed = (ROOT / "docs" / "reference" / "crds.md").read_text()
    assert committed == crd_reference(all_crds()), "docs/reference/crds.md is stale: run `make docs-crd`"


def test_crd_reference_names_every_field():
    """Every property of every CRD schema has its own entry, with its limits."""
    page = crd_reference(all_crds())
    missing = []

    def walk(node, path):
        for name, child in node.get("properties", {}).items():
            if f"- `{path}.{name}` (" not in page:
                missing.append(f"{path}.{name}")
            walk(child, f"{path}.{name}")
        if "items" in node:
            walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}.*")

    for crd in all_crds().values():
        root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for part in ("spec", "status"):
            walk(root["properties"][part], part)
    assert not missing
    assert "`spec.strategy.steps[].weight` (integer): Percent of traffic the candidate gets during this step. " \
           "Limits: at least 1; at most 100." in page


def test_readme_example_is_valid():
    """The front page's example is what the operator accepts."""
    block = re.search(r"```yaml\n(.*?)```", README.read_text(), re.DOTALL).group(1)
    version, deployment = yaml.safe_load_all(block)
    assert (version["kind"], deployment["kind"]) == ("ModelVersion", "ModelDeployment")
    ModelVersionSpec.model_validate(version["spec"])
    ModelDeploymentSpec.model_validate(deployment["spec"])

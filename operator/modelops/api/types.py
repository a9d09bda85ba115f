"""Constrained scalar types shared by both resources.

Each type carries its JSON-schema pattern so the generated CRD rejects the same input
the pydantic model rejects; the model's own message says what was expected.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field

# semver.org's recommended pattern, without named groups (the API server's regex dialect lacks them).
SEMVER_PATTERN = (
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(-(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?"
    r"(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$"
)
DIGEST_PATTERN = r"^sha256:[a-f0-9]{64}$"
DURATION_PATTERN = r"^([0-9]+(ms|s|m|h))+$"
# A DNS-1123 label: what Kubernetes accepts as the name of most objects.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str) -> float:
    """Seconds in a duration such as `30s`, `5m`, `1h30m` or `250ms`."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration like 30s, 5m or 1h")
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def _matching(pattern: str, expected: str, **schema: Any) -> Any:
    """A string type checked against `pattern`, with an error message a person can act on."""

    def check(text: str) -> str:
        if not re.fullmatch(pattern, text):
            raise ValueError(f"{text!r} is not {expected}")
        return text

    return Annotated[str, AfterValidator(check), Field(json_schema_extra={"pattern": pattern, **schema})]


Duration = _matching(DURATION_PATTERN, "a duration like 30s, 5m or 1h")
SemVer = _matching(SEMVER_PATTERN, "a semantic version like 1.4.2 (MAJOR.MINOR.PATCH)", maxLength=128)
Digest = _matching(DIGEST_PATTERN, "a content digest: sha256: followed by 64 lowercase hex digits")
ObjectName = _matching(NAME_PATTERN, "a Kubernetes object name (lowercase letters, digits and '-')", maxLength=63)
Weight = Annotated[int, Field(ge=0, le=100)]



def Text(max_length: int, min_length: int = 0) -> Any:
    """Free text with a bound: no field lets a spec grow without limit (the API server checks the same)."""
    return Annotated[str, Field(min_length=min_length, max_length=max_length)]


Uri = Text(2048)
Label = Text(256)
Reason = Text(1024, min_length=1)

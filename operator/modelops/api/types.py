"""Constrained scalar types shared by both resources.

Each type carries its JSON-schema pattern so the generated CRD rejects the same input
the pydantic model rejects; the model's own message says what was expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, Field

# semver.org's recommended pattern, without named groups (the API server's regex dialect lacks them).
SEMVER_PATTERN = (
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(-(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?"
    r"(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$"
)
DIGEST_PATTERN = r"^sha256:[a-f0-9]{64}$"
# At most 6 digits a part and 20 characters: no duration reaches the int64 nanoseconds where the API server's
# CEL `duration()` (and Go's time.ParseDuration) overflow, so a bound is checked, never an overflow reported.
DURATION_PATTERN = r"^([0-9]{1,6}(ms|s|m|h))+$"
DURATION_MAX_LENGTH = 20
# A DNS-1123 label: what Kubernetes accepts as the name of most objects.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str) -> float:
    """Seconds in a duration such as `30s`, `5m`, `1h30m` or `250ms`."""
    if len(text) > DURATION_MAX_LENGTH or not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration like 30s, 5m or 1h (at most 6 digits a part, "
                         f"{DURATION_MAX_LENGTH} characters in all)")
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def _matching(pattern: str, expected: str, **schema: Any) -> Any:
    """A string type checked against `pattern`, with an error message a person can act on."""

    def check(text: str) -> str:
        if not re.fullmatch(pattern, text):
            raise ValueError(f"{text!r} is not {expected}")
        return text

    return Annotated[str, AfterValidator(check), Field(json_schema_extra={"pattern": pattern, **schema})]


@dataclass(frozen=True)
class DurationBounds:
    """The bounds of a duration field, kept in its type so that they can be listed."""

    most: str
    positive: bool


def BoundedDuration(most: str, positive: bool = False) -> Any:
    """A duration of at most `most` (and more than zero when `positive`): the pydantic model and the CRD's CEL rule
    refuse the same values with the same words; the API server prefixes them with the field's path."""
    least, above = ("more than 0s", ">") if positive else ("0s or more", ">=")
    words = f"must be {least} and at most {most}"
    most_seconds = duration_seconds(most)

    def check(text: str) -> str:
        seconds = duration_seconds(text)
        if not (seconds > 0 if positive else seconds >= 0) or seconds > most_seconds:
            raise ValueError(f"{text!r} {words}")
        return text

    rule = {"rule": f"duration(self) {above} duration('0s') && duration(self) <= duration('{most}')",
            "message": words}
    return Annotated[str, DurationBounds(most, positive), AfterValidator(check), Field(json_schema_extra={
        "pattern": DURATION_PATTERN, "maxLength": DURATION_MAX_LENGTH, "x-kubernetes-validations": [rule]})]


MAX_DURATION = "168h"
"""The longest duration any field takes (a week): far from any overflow, even summed into a step's deadline."""
Duration = BoundedDuration(MAX_DURATION)
PositiveDuration = BoundedDuration(MAX_DURATION, positive=True)
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

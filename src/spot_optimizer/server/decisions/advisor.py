"""Spot Advisor buckets for the server: instance type -> interruption bucket (0..4), per region.

The feed is the JSON AWS publishes (see ../shared/data/spot-advisor/); a type or region it does not list
gets core.risk's unknown (average) bucket, so a missing feed makes the loop cautious, not blind.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class AdvisorError(ValueError):
    """The advisor file cannot be used; the message names the file and what is wrong."""


@lru_cache(maxsize=8)
def _load(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        regions = data["spot_advisor"]
        if not isinstance(regions, dict):
            raise TypeError("spot_advisor is not an object")
        return regions
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdvisorError(f"{path}: cannot read a Spot Advisor JSON feed ({exc})") from exc
    except (KeyError, TypeError) as exc:
        raise AdvisorError(f"{path}: not a Spot Advisor feed (missing {exc})") from exc


def check(path: str) -> None:
    """Fail fast at start-up on a missing or garbled file."""
    _load(path)


def buckets(path: str | None, region: str) -> dict[str, int]:
    """Linux buckets of `region`; empty when there is no file or it does not list the region."""
    if not path:
        return {}
    linux = _load(path).get(region, {}).get("Linux", {})
    out: dict[str, int] = {}
    for name, entry in linux.items():
        try:
            out[name] = int(entry["r"])
        except (KeyError, TypeError, ValueError):
            logger.warning("advisor %s: entry for %s in %s has no bucket; treated as unknown", path, name, region)
    return out

"""What the admin API accepts: request bodies as msgspec Structs (the key fields reuse the
policy's own `LimitSpec` and `BudgetConfig`, so a runtime key takes exactly what a key in
proxy.yaml takes) and query parameters, every problem a 400 naming its field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, TypeVar

import limits
import msgspec
from msgspec import UNSET, Meta, UnsetType

from proxy.admin.records import GROUPS, UsageQuery
from proxy.config import BudgetConfig, IsoTime, LimitSpec, NonEmpty
from proxy.errors import InvalidRequestError
from proxy.keys import parse_expiry

KeyName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Label = Annotated[str, Meta(min_length=1, max_length=64)]
LabelValue = Annotated[str, Meta(max_length=512)]
Metadata = Annotated[dict[Label, LabelValue], Meta(max_length=32)]
Models = Annotated[list[NonEmpty], Meta(max_length=256)]
DEFAULT_SINCE = timedelta(days=30)
MAX_AUDIT = 1000


class Body(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class KeyCreate(Body, frozen=True):
    name: KeyName
    models: Models = msgspec.field(default_factory=lambda: ["*"])
    limits: LimitSpec | None = None
    budget: BudgetConfig | None = None
    expires_at: IsoTime | None = None
    metadata: Metadata = msgspec.field(default_factory=dict)


class KeyPatch(Body, frozen=True):
    """Fields left out stay as they are; `null` clears one (all models, the default limits,
    no budget, no expiry, no metadata)."""

    models: Models | UnsetType | None = UNSET
    limits: LimitSpec | UnsetType | None = UNSET
    budget: BudgetConfig | UnsetType | None = UNSET
    expires_at: IsoTime | UnsetType | None = UNSET
    metadata: Metadata | UnsetType | None = UNSET


B = TypeVar("B", bound=Body)
_AT = re.compile(r" - at `\$\.?([^`]*)`$")
_FIELD = re.compile(r"(?:required|unknown) field `([^`]+)`")


def decode(body: bytes, kind: type[B]) -> B:
    """The body as `kind`; a 400 naming the field when it does not fit."""
    try:
        decoded = msgspec.json.decode(body or b"null", type=kind)
    except msgspec.ValidationError as exc:
        message, param = explain(str(exc))
        raise InvalidRequestError(f"Invalid body: {message}", param=param) from None
    except (msgspec.DecodeError, UnicodeDecodeError):  # invalid UTF-8 inside a string
        raise InvalidRequestError("The body is not valid JSON.") from None
    check_limits(getattr(decoded, "limits", None))
    expires = getattr(decoded, "expires_at", None)
    if isinstance(expires, str):
        expiry(expires)
    return decoded


def explain(message: str) -> tuple[str, str | None]:
    """msgspec's message without its `$.path`, and the path as a field name."""
    at = _AT.search(message)
    path = at.group(1) if at else ""
    named = _FIELD.search(message)
    if named:
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    text = message[: at.start()] if at else message
    return text, path.replace("[...]", "") or None  # a mapping's value: named by the mapping


def check_limits(spec: LimitSpec | UnsetType | None) -> None:
    """Limit strings parse, and a burst has a rate to refill at (as in proxy.yaml)."""
    if not isinstance(spec, LimitSpec):
        return
    for kind in ("requests", "tokens"):
        text = getattr(spec, kind)
        if text is not None and not _parses(text):
            raise InvalidRequestError(
                f"Not a limit: {text!r} (e.g. '10/second; 600/minute').", param=f"limits.{kind}"
            )
    if spec.burst is not None and spec.requests is None:
        raise InvalidRequestError(
            "A burst needs 'requests' (the rate it refills at).", param="limits.burst"
        )


def _parses(text: str) -> bool:
    try:
        return bool(limits.parse_many(text))
    except ValueError:
        return False


def expiry(text: str) -> float:
    try:
        return parse_expiry(text)
    except ValueError:
        raise InvalidRequestError(f"Not a time: {text!r}.", param="expires_at") from None


# -- query parameters ------------------------------------------------------------------------


def usage_query(params: Mapping[str, str], now: datetime | None = None) -> tuple[UsageQuery, str]:
    """group_by, since, until (ISO dates or times, UTC unless they say; a date as `until`
    takes in that whole day; default: the last 30 days) and format (json or csv)."""
    now = now or datetime.now(UTC)
    group_by = params.get("group_by", "key")
    if group_by not in GROUPS:
        raise InvalidRequestError(f"group_by must be one of {', '.join(GROUPS)}.", param="group_by")
    output = params.get("format", "json")
    if output not in ("json", "csv"):
        raise InvalidRequestError("format must be json or csv.", param="format")
    since = _moment(params, "since", now - DEFAULT_SINCE)
    until = _moment(params, "until", now, whole_day=True)
    if since >= until:
        raise InvalidRequestError("since must be before until.", param="since")
    return UsageQuery(group_by, since.timestamp(), until.timestamp()), output


def _moment(
    params: Mapping[str, str], name: str, default: datetime, whole_day: bool = False
) -> datetime:
    text = params.get(name)
    if text is None:
        return default
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return moment + timedelta(days=1) if whole_day else moment
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(
            f"{name} must be an ISO 8601 date or time, e.g. 2026-12-01 or 2026-12-01T08:00:00Z.",
            param=name,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def audit_limit(params: Mapping[str, Any]) -> int:
    text = params.get("limit", "100")
    if not str(text).isdigit() or not 1 <= int(text) <= MAX_AUDIT:
        raise InvalidRequestError(
            f"limit must be a whole number from 1 to {MAX_AUDIT}.", param="limit"
        )
    return int(text)


def minutes(params: Mapping[str, Any], longest: int) -> int:
    text = params.get("minutes", "5")
    if not str(text).isdigit() or not 1 <= int(text) <= longest:
        raise InvalidRequestError(
            f"minutes must be a whole number from 1 to {longest}.", param="minutes"
        )
    return int(text)

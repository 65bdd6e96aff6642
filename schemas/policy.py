"""Who may say what (contract section 2): the source policy as pure data and a matcher.

A policy is a set of :class:`Grant` rows: a ``source`` prefix, an event type
it may send and, for the types that carry a suspension reason
(``plate.suspended``, ``plate.reinstated``), the reasons it may use
(:data:`NO_REASON` stands for "no reason at all", which lifts every
suspension). ``reasons`` of ``None`` allows any reason.

A ``source`` matches a prefix when it starts with it; an event is allowed
when any matching prefix grants its type (and reason): grants add up, none
takes away. :func:`compile_policy` turns rows into a :class:`Policy` whose
:meth:`Policy.allows` is what the consumer and the ingest API call per event.
No I/O here (see ``platereg.security.policy_store`` for the table).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.events import EventType, SuspensionReason

#: The reason token meaning "the event carries no reason" (``plate.reinstated`` only).
NO_REASON = "none"
#: Types whose ``data.reason`` the policy restricts.
REASON_TYPES = frozenset({"plate.suspended", "plate.reinstated"})
KNOWN_TYPES = frozenset(t.value for t in EventType)
KNOWN_REASONS = frozenset(r.value for r in SuspensionReason) | {NO_REASON}
MAX_PREFIX_CHARS = 512
#: Distinct sources whose merged grants are remembered (bounded against source spraying).
_MEMO_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Grant:
    """One row of the policy: ``prefix`` may send ``type`` (with ``reasons``)."""

    prefix: str
    type: str
    reasons: frozenset[str] | None = None

    def describe(self) -> str:
        if self.type not in REASON_TYPES or self.reasons is None:
            return self.type
        return f"{self.type} ({', '.join(sorted(self.reasons))})"


def _reg(prefix: str, *types: str) -> list[Grant]:
    return [Grant(prefix, t) for t in types]


def _reasons(prefix: str, *reasons: str) -> list[Grant]:
    allowed = frozenset(reasons)
    return [Grant(prefix, "plate.suspended", allowed), Grant(prefix, "plate.reinstated", allowed)]


#: The policy that ships (contract section 2, "Who may say what"). Migration 0008
#: seeds the same rows (a test compares them).
DEFAULT_POLICY: tuple[Grant, ...] = tuple([
    *_reg("/registry/", "plate.issued", "plate.renewed", "plate.transferred",
          "plate.owner_updated", "plate.cancelled", "plate.device_paired",
          "plate.device_unpaired"),
    Grant("/registry/", "plate.suspended", frozenset({"administrative"})),
    Grant("/registry/", "plate.reinstated", frozenset({"administrative", NO_REASON})),
    *_reasons("/insurance/", "insurance_lapsed"),
    *_reasons("/fines/", "unpaid_fines"),
    *_reasons("/courts/", "court_order", "unpaid_fines"),
    *_reasons("/emissions/", "emissions_failed"),
    *_reg("/police/", "plate.stolen_reported", "plate.recovered"),
])


class PolicyError(ValueError):
    """A grant that cannot be stored (the message names the problem)."""


def check_grant(prefix: str, kind: str, reasons: Iterable[str] | None) -> Grant:
    """A valid :class:`Grant`, or :class:`PolicyError`."""
    if not prefix or len(prefix) > MAX_PREFIX_CHARS or not prefix.isprintable():
        raise PolicyError(f"prefix must be 1 to {MAX_PREFIX_CHARS} printable characters")
    if kind not in KNOWN_TYPES:
        raise PolicyError(f"unknown event type {kind!r}; one of {', '.join(sorted(KNOWN_TYPES))}")
    if reasons is None:
        return Grant(prefix, kind, None)
    allowed = frozenset(reasons)
    if kind not in REASON_TYPES:
        raise PolicyError(f"{kind} carries no suspension reason; give no --reason")
    bad = sorted(allowed - KNOWN_REASONS)
    if bad or not allowed:
        raise PolicyError(f"reasons must be among {', '.join(sorted(KNOWN_REASONS))}")
    if NO_REASON in allowed and kind != "plate.reinstated":
        raise PolicyError(f"{NO_REASON!r} is only for plate.reinstated (lift every suspension)")
    return Grant(prefix, kind, allowed)


def reason_of(kind: str, data: Mapping[str, Any] | None) -> str | None:
    """The reason the policy looks at: ``data.reason``, or :data:`NO_REASON` if absent."""
    if kind not in REASON_TYPES:
        return None
    reason = (data or {}).get("reason")
    return NO_REASON if reason is None else str(reason)


#: type -> allowed reasons (None: any)
_Merged = dict[str, frozenset[str] | None]


@dataclass
class Policy:
    """A compiled policy; :meth:`allows` is pure and memoizes per source."""

    grants: tuple[Grant, ...]
    version: int = 0
    _by_prefix: dict[str, list[Grant]] = field(default_factory=dict, repr=False)
    _memo: dict[str, _Merged] = field(default_factory=dict, repr=False)

    def _merged(self, source: str) -> _Merged:
        merged = self._memo.get(source)
        if merged is not None:
            return merged
        merged = {}
        for prefix, grants in self._by_prefix.items():
            if not source.startswith(prefix):
                continue
            for g in grants:
                if g.type in merged and merged[g.type] is None:
                    continue
                if g.reasons is None:
                    merged[g.type] = None
                else:
                    merged[g.type] = (merged.get(g.type) or frozenset()) | g.reasons
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[source] = merged
        return merged

    def allows(self, source: str, kind: str, reason: str | None = None) -> bool:
        """May ``source`` send an event of ``kind`` (with ``reason``, for the reason types)?"""
        merged = self._merged(source)
        if kind not in merged:
            return False
        allowed = merged[kind]
        if allowed is None or kind not in REASON_TYPES:
            return True
        return (reason or NO_REASON) in allowed

    def allows_event(self, source: str, kind: str, data: Mapping[str, Any] | None) -> bool:
        return self.allows(source, kind, reason_of(kind, data))

    def explain(self, source: str, kind: str, reason: str | None = None) -> str:
        """Why (not): safe to log (names the type and reason, never the source's data)."""
        what = kind if kind not in REASON_TYPES else f"{kind} with reason {reason or NO_REASON}"
        if self.allows(source, kind, reason):
            return f"source: allowed to send {what}"
        return f"source: the source policy does not allow this source to send {what}"


def compile_policy(grants: Iterable[Grant], version: int = 0) -> Policy:
    """A :class:`Policy` from rows (in any order; duplicates are harmless)."""
    rows = tuple(sorted(set(grants), key=lambda g: (g.prefix, g.type)))
    by_prefix: dict[str, list[Grant]] = {}
    for g in rows:
        by_prefix.setdefault(g.prefix, []).append(g)
    return Policy(rows, version, by_prefix)


def prefix_allows(prefixes: Iterable[str], source: str) -> bool:
    """Whether ``source`` starts with one of an ingest key's ``prefixes``."""
    return source.startswith(prefixes if type(prefixes) is tuple else tuple(prefixes))

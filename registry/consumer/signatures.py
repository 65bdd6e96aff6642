"""The registry consumer's check of signed producers (contract section 2, "Signed
producers"): who sent each message, and may it speak for the event's ``source``?

Pure (no I/O): :func:`verify` takes a batch's parse results, the consumed messages they
came from (same order) and the registered producers as of the batch's transaction
(``platereg.security.producer_store.ProducerCache``). A message is refused with reason
``unauthorized_source`` and a detail naming the failing check, in this order:

1. no ``platereg-producer`` header, or more than one (``producer: ...``);
2. a producer that is not registered, or revoked;
3. no ``platereg-signature`` header, or more than one, or one that matches none of the
   producer's secrets (a wrong or retired secret; ``signature: ...``);
4. an event whose ``source`` is outside the producer's prefixes (``source: ...``).

Checks 1 to 3 come first, whatever the message holds: an unsigned or forged message is
``unauthorized_source`` even when it is not valid JSON (its parse result is dropped).
Check 4 needs the parsed ``source``. The source policy applies after these
(``registry.consumer.batch.authorize``). Details never echo a header's text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from platereg.security.producer_store import Producer, Producers
from registry.consumer.batch import Parsed, Rejected
from schemas.signing import PRODUCER_HEADER, SIGNATURE_HEADER, Headers, matches

UNAUTHORIZED = "unauthorized_source"
UNSIGNED = "producer: no platereg-producer header (the message is not signed)"
TWO_PRODUCERS = "producer: more than one platereg-producer header"
UNKNOWN = "producer: not a registered producer"
REVOKED = "producer: revoked"
NO_SIGNATURE = "signature: no platereg-signature header"
TWO_SIGNATURES = "signature: more than one platereg-signature header"
BAD_SIGNATURE = ("signature: matches none of the producer's secrets (a wrong or retired "
                 "secret, or the signed bytes were changed)")
OUT_OF_SCOPE = "source: outside the source prefixes of the producer"


class Message(Protocol):
    """What the check needs of a consumed Kafka record."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers


def producer_header(headers: Headers) -> str | None:
    """The producer a message names (the first ``platereg-producer`` header), or None."""
    for name, value in headers:
        if name == PRODUCER_HEADER:
            return (value or b"").decode("utf-8", "replace")
    return None


def signer_of(producers: Producers, headers: Headers,
              value: bytes | None) -> Producer | str:
    """The producer that signed the message, or the detail of the check that failed."""
    named = signature = None
    names = signatures = 0
    for header, text in headers:
        if header == PRODUCER_HEADER:
            named, names = text, names + 1
        elif header == SIGNATURE_HEADER:
            signature, signatures = text, signatures + 1
    if names != 1:
        return UNSIGNED if names == 0 else TWO_PRODUCERS
    producer = producers.by_name.get((named or b"").decode("utf-8", "replace"))
    if producer is None:
        return UNKNOWN
    if producer.revoked:
        return REVOKED
    if signatures != 1:
        return NO_SIGNATURE if signatures == 0 else TWO_SIGNATURES
    if not matches(producer.macs, headers, value, signature or b""):
        return BAD_SIGNATURE
    return producer


def verify(parsed: Sequence[Parsed | Rejected], messages: Sequence[Message],
           producers: Producers) -> list[Parsed | Rejected]:
    """``parsed`` with every message that fails a check replaced by its
    ``unauthorized_source`` rejection (``messages[i]`` is where ``parsed[i]`` came from)."""
    out: list[Parsed | Rejected] = []
    for item, message in zip(parsed, messages, strict=True):
        signer = signer_of(producers, message.headers, message.value)
        if isinstance(signer, str):
            problem: str | None = signer
        elif isinstance(item, Parsed) and not item.source.startswith(signer.prefixes):
            problem = OUT_OF_SCOPE
        else:
            problem = None
        if problem is None:
            out.append(item)
        else:
            label = item.type if isinstance(item, Parsed) else item.type_label
            out.append(Rejected(message.partition, message.offset, UNAUTHORIZED, problem,
                                label))
    return out

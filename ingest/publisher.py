"""Publishing validated plate events to ``plates.events`` with bounded waits.

Every event goes out as CloudEvents structured JSON (the normalized event,
``null`` fields omitted), keyed by its plate key, with the header
``content-type: application/cloudevents+json`` and the signed producer's headers
``platereg-producer`` and ``platereg-signature`` (``schemas.signing``; the producer is
``PLATEREG_PRODUCER_NAME`` with ``PLATEREG_PRODUCER_SECRET``), through an ``acks=all``
producer (:func:`platereg.kafka.make_producer`).

:meth:`Publisher.publish` returns only when the broker acknowledged every
record of the call, or raises :class:`BrokerUnavailable` after at most
``PLATEREG_KAFKA_TIMEOUT_SECONDS``: a caller never hangs on a dead broker.

All or nothing in effect, not in the log: a batch is not a Kafka transaction,
so when the broker fails in the middle of one, some records may already be
stored although the call fails. The caller then answers 503 and the producer
retries the *whole* batch. The duplicates this creates are harmless: the
registry consumer recognises an event it has applied by its (``source``,
``id``) (contract section 2, "Duplicates"). A transactional producer would
make the log itself all-or-nothing, at the price of a transaction per request,
a transactional id per process and every consumer reading committed records
only; the consumer's deduplication gives the same effect without them.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from platereg.kafka import Record, make_producer
from platereg.logging import get_logger
from platereg.settings import Settings
from schemas.events import Event
from schemas.topics import CLOUDEVENTS_JSON, CONTENT_TYPE_HEADER, EVENTS

log = get_logger(__name__)

HEADERS = [(CONTENT_TYPE_HEADER, CLOUDEVENTS_JSON.encode())]


class BrokerUnavailable(Exception):
    """The broker did not acknowledge in time (or is unreachable)."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


def published(event: Event | dict[str, Any], authid: str | None = None
              ) -> tuple[bytes, bytes]:
    """(key, value) of the Kafka record of a validated event: plate key -> normalized
    CloudEvents JSON.

    ``event`` is a validated event or its normalized JSON object (``Event.obj``, e.g.
    from :func:`ingest.api.validate_batch`). With ``authid`` (the API key id that sent it),
    the CloudEvents ``authcontext`` extension attributes are stamped on it:
    ``authtype`` = ``api_key`` and ``authid``, replacing whatever the client put
    there.
    """
    obj = event.obj if isinstance(event, Event) else event
    if authid is not None:
        obj = {**obj, "authtype": "api_key", "authid": authid}
    return obj["subject"].encode(), orjson.dumps(obj)


def record_of(event: Event | dict[str, Any], authid: str | None = None) -> Record:
    """:func:`published` as a :class:`Record`."""
    key, value = published(event, authid)
    return Record(key=key, value=value)


class Publisher:
    """One shared ``acks=all`` producer, started lazily and restarted after failures;
    :class:`platereg.settings.ConfigError` at once when no producer to sign as is set."""

    def __init__(self, settings: Settings, *, producer_options: dict | None = None) -> None:
        self.settings = settings
        self.signer = settings.signer()
        self.topic = settings.topic(EVENTS)
        self.timeout = settings.kafka_timeout_seconds
        self.retry_after = max(1, min(30, math.ceil(self.timeout)))
        self._options = producer_options or {}
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._cleanups: set[asyncio.Future] = set()

    async def start(self) -> bool:
        """Try to connect now (e.g. at start-up); False when the broker is not reachable."""
        try:
            await asyncio.wait_for(self._get_producer(), self.timeout)
            return True
        except (TimeoutError, KafkaError, OSError):
            return False

    async def _get_producer(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                producer = make_producer(self.settings, **self._options)
                try:
                    await producer.start()
                except BaseException:
                    # Also on cancellation (the caller's time is up).
                    self._stop_in_background(producer)
                    raise
                self._producer = producer
            return self._producer

    def _stop_in_background(self, producer: AIOKafkaProducer) -> None:
        """Stop ``producer`` without waiting, so the request answers within its bound."""
        task = asyncio.ensure_future(_quietly_stop(producer))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _quietly_stop(producer, self.timeout)

    async def publish(self, records: Sequence[tuple[bytes, bytes]]) -> int:
        """Send every (key, value) and wait for all acknowledgements; returns how many.

        Raises :class:`BrokerUnavailable` when that does not finish within
        the configured timeout (the whole call, start-up included).
        """
        records = list(records)
        if not records:
            return 0
        try:
            async with asyncio.timeout(self.timeout):
                producer = await self._get_producer()
                sign = self.signer.headers
                futures = [
                    await producer.send(self.topic, value=value, key=key,
                                        headers=sign(value, HEADERS))
                    for key, value in records
                ]
                await asyncio.gather(*futures)
        except TimeoutError:
            log.warning("kafka publish timed out", events=len(records), timeout_s=self.timeout)
            raise BrokerUnavailable(
                f"the event broker did not acknowledge within {self.timeout:g} s",
                self.retry_after,
            ) from None
        except (KafkaError, OSError) as exc:
            log.warning("kafka publish failed", events=len(records), error=type(exc).__name__)
            # The next call gets a fresh producer. aiokafka has no public way to tell a
            # producer whose background sender stopped (it would never send again) from
            # one that met a passing error, and a new producer costs one connection
            # and metadata fetch, only after a failure.
            if self._producer is not None:
                producer, self._producer = self._producer, None
                self._stop_in_background(producer)
            raise BrokerUnavailable("the event broker is unavailable", self.retry_after) from None
        return len(records)


async def _quietly_stop(producer: AIOKafkaProducer, timeout: float = 5.0) -> None:
    try:
        await asyncio.wait_for(producer.stop(), timeout)
    except Exception:  # noqa: BLE001 - best effort on a broken connection
        log.debug("producer stop failed")


class StreamPublisher:
    """Pipelined publishing of a long stream (import, simulate) in bounded memory.

    At most ``window`` records are awaiting acknowledgement; each wait is
    bounded by ``PLATEREG_KAFKA_TIMEOUT_SECONDS``. ``acked`` counts
    acknowledged records and ``acked_through`` is the ``tag`` of the last
    record such that it and every record before it were acknowledged (e.g. a
    line number of an imported file).
    """

    def __init__(self, settings: Settings, *, window: int = 5000,
                 producer_options: dict | None = None) -> None:
        self.settings = settings
        self.signer = settings.signer()
        self.topic = settings.topic(EVENTS)
        self.timeout = settings.kafka_timeout_seconds
        self.window = window
        self._options = producer_options or {}
        self._producer: AIOKafkaProducer | None = None
        self._inflight: deque[tuple[object, asyncio.Future]] = deque()
        self.acked = 0
        self.acked_through: object = None

    async def start(self) -> None:
        producer = make_producer(self.settings, **self._options)
        try:
            await asyncio.wait_for(producer.start(), self.timeout)
        except (TimeoutError, KafkaError, OSError):
            await _quietly_stop(producer)
            raise BrokerUnavailable("the event broker is unreachable", 5) from None
        self._producer = producer

    async def send(self, key: bytes | None, value: bytes, *, tag: object = None) -> None:
        assert self._producer is not None, "start() first"
        try:
            async with asyncio.timeout(self.timeout):
                future = await self._producer.send(self.topic, value=value, key=key,
                                                   headers=self.signer.headers(value, HEADERS))
        except (TimeoutError, KafkaError, OSError) as exc:
            raise self._failure(exc) from None
        self._inflight.append((tag, future))
        self._collect()
        if len(self._inflight) >= self.window:
            await self._wait_oldest()

    def _collect(self) -> None:
        """Count the acknowledged records at the head of the window (no waiting)."""
        inflight = self._inflight
        while inflight and inflight[0][1].done():
            tag, future = inflight[0]
            error = future.exception() if not future.cancelled() else TimeoutError()
            if error is not None:
                raise self._failure(error)
            inflight.popleft()
            self.acked += 1
            self.acked_through = tag

    async def _wait_oldest(self) -> None:
        future = self._inflight[0][1]
        await asyncio.wait([future], timeout=self.timeout)
        if not future.done():
            raise self._failure(TimeoutError())
        self._collect()

    def _failure(self, exc: BaseException) -> BrokerUnavailable:
        kind = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        return BrokerUnavailable(f"the event broker did not acknowledge ({kind})", 5)

    async def flush(self) -> None:
        while self._inflight:
            await self._wait_oldest()

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        for _, future in self._inflight:
            future.cancel()
        self._inflight.clear()
        if producer is not None:
            await _quietly_stop(producer, self.timeout)


@dataclass
class PostResult:
    ok: bool
    status: int
    accepted: int = 0
    detail: str = ""
    errors: list = field(default_factory=list)


class ApiPoster:
    """Posts JSON event texts to an ingest API as one batch per call.

    Retries 429 and 503 (honouring ``Retry-After``, at most 30 s each) and
    network errors and timeouts, up to ``attempts`` times, always with the whole batch.
    ``timeout`` bounds connecting and each read.
    """

    def __init__(self, url: str, key: str, *, timeout: float = 30.0, attempts: int = 8) -> None:
        self.url = url.rstrip("/")
        if not self.url.endswith("/v1/events"):
            self.url += "/v1/events"
        self.key = key
        self.timeout = timeout
        self.attempts = attempts
        self._session: Any = None

    async def __aenter__(self) -> ApiPoster:
        import aiohttp

        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout,
                                          sock_read=self.timeout))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _post_once(self, body: bytes, ctype: str) -> _Answer:
        async with self._session.post(self.url, data=body, allow_redirects=False,
                                      headers={"Content-Type": ctype}) as response:
            answer = _Answer(response.status, response.reason or "",
                             response.headers.get("Retry-After"), await response.read())
        if answer.status in (429, 503):
            raise _Busy(answer)
        return answer

    async def post(self, values: list[bytes]) -> PostResult:
        import aiohttp

        assert self._session is not None
        if len(values) == 1:
            body, ctype = values[0], CLOUDEVENTS_JSON
        else:
            body, ctype = b"[" + b",".join(values) + b"]", "application/cloudevents-batch+json"
        backoff = wait_exponential(multiplier=0.5, max=10)

        def pause(state: RetryCallState) -> float:
            busy = state.outcome.exception() if state.outcome is not None else None
            if isinstance(busy, _Busy) and busy.answer.retry_after is not None:
                try:
                    return min(max(float(busy.answer.retry_after), 0.1), 30)
                except ValueError:
                    pass
            return backoff(state)

        network = (aiohttp.ClientError, TimeoutError, OSError)
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type((*network, _Busy)), wait=pause,
                stop=stop_after_attempt(self.attempts), reraise=True,
            ):
                with attempt:
                    answer = await self._post_once(body, ctype)
        except network as exc:
            return PostResult(False, 0, detail=f"network error: {type(exc).__name__}")
        except _Busy as busy:
            answer = busy.answer
        return _result(answer)


@dataclass(frozen=True, slots=True)
class _Answer:
    """What a post needs of an HTTP answer, read before its connection is released."""

    status: int
    reason: str
    retry_after: str | None
    body: bytes


class _Busy(Exception):
    """429 or 503: try again after Retry-After."""

    def __init__(self, answer: _Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


def _result(answer: _Answer) -> PostResult:
    try:
        payload = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    if answer.status == 202:
        return PostResult(True, 202, accepted=int(payload.get("accepted", 0)))
    return PostResult(False, answer.status,
                      detail=str(payload.get("detail", answer.reason))[:500],
                      errors=list(payload.get("errors", []))[:1000])

"""Hostile messages for the consumer: arbitrary bytes, arbitrary JSON, and near-valid jobs built
from the real schemas with one field mutated (wrong types, huge strings, deep nesting, NUL,
lone surrogates, NaN and Infinity, huge numbers, duplicate keys, broken encodings).

Each message must end either as a job that Redis and PostgreSQL can hold or as a dead letter
whose reason says what is wrong. Hundreds of examples go through the consumer's own per-message
steps in process (validation, sealing, the job record, the dead-letter record); a corpus drawn
from the same strategies is then published through RabbitMQ to a running consumer, followed by
a valid message that must still go through.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import hypothesis
import pika
import pytest
from django.conf import settings
from hypothesis import strategies as st

from supworker import jobtypes, records
from supworker.envelope import SEAL_PREFIX, Envelope, open_fields
from supworker.masking import dead_letter_body
from supworker.models import DeadLetter, JobRun
from supworker.payloads import InvalidMessage, ParsedJob, parse_message
from supworker.rabbit import topology
from supworker.rabbit.consumer import Consumer, Delivery
from tests.helpers import rq_items, wait_for
from tests.ingest_fixtures import dead_letters, queue_depth

pytestmark = pytest.mark.django_db(transaction=True)

ALL_QUEUES = ("media_high", "media", "notifications_high", "notifications", "cleanup")


def schema_fields(domain: str) -> set[str]:
    return set(jobtypes.domains()[domain].schema.model_fields)


OTP = "otp"  # stands for the OTP queue's name, which each test chooses
USER, MESSAGE, OTHER = (str(uuid.UUID(int=n)) for n in (1, 2, 3))

# One valid message per job type: (domain, routing key, body).
VALID: list[tuple[str, str, dict[str, Any]]] = [
    ("media", "media.image", {"type": "image", "s3Key": "uploads/a/IMG_1.jpg", "userId": USER, "messageId": MESSAGE,
                              "originalName": "IMG_1.JPG"}),
    ("media", "media.video", {"type": "video", "s3Key": "uploads/v.mp4", "userId": USER, "messageId": MESSAGE}),
    ("media", "media.audio", {"type": "audio", "s3Key": "voice/n.ogg", "userId": USER, "messageId": MESSAGE,
                              "jobId": "aud-1", "priority": "high"}),
    ("notification", "notification.push", {"type": "push", "userId": USER, "title": "Ann", "body": "Hi!",
                                           "fcmToken": "device-token", "data": {"chatId": "c1"}}),
    ("notification", "notification.push", {"type": "push", "userId": USER, "title": "Group", "body": "Hi all",
                                           "userIds": [USER, OTHER], "timestamp": 1672531200000}),
    ("notification", "notification.email", {"type": "email", "userId": USER, "title": "Welcome", "body": "Hello",
                                            "email": "ann@example.com", "timestamp": "2024-05-01T10:00:00Z"}),
    ("notification", "notification.sms", {"type": "sms", "userId": USER, "title": "Code", "body": "Your code",
                                          "phoneNumber": "+14155550100", "otp": "482913", "data": {"kind": "otp"}}),
    ("cleanup", "cleanup.stories", {"type": "stories", "data": {"olderThanHours": 24, "dryRun": False}}),
    ("cleanup", "cleanup.sessions", {"type": "sessions", "jobId": "clean:1"}),
    (OTP, OTP, {"email": "ann@example.com", "otp": "482913", "retryCount": 1,
                "metadata": {"userName": "Ann", "expiryMinutes": 10}}),
    ("device", "device.register", {"userId": USER, "fcmToken": "device-token", "platform": "ios",
                                   "deviceId": "phone-1", "at": "2024-05-01T10:00:00.123Z"}),
    ("device", "device.unregister", {"userId": USER, "fcmToken": "device-token", "platform": "web",
                                     "timestamp": 1672531200000}),
    ("user", "user.erase", {"type": "erase", "userId": USER, "jobId": "erase-1"}),
    ("user", "user.export", {"type": "export", "userId": USER, "email": "ann@example.com"}),
]  # fmt: skip

# Raw JSON text for a field's value: what a careless or hostile publisher may put there.
SPECIAL_STRINGS = ["", " ", "\x00", "a\x00b", "\ud800", "x\udfff", "\ufeff", "\u202eevil", "😀" * 3,
                   "../../etc/passwd", "/etc/passwd", "C:\\boot.ini", "a//b", "%00", "\x7f", "\n", "null", "1e400",
                   "ann@", "+1", "Z" * 300]  # fmt: skip
RAW_VALUES = ["null", "true", "0", "-1", "1.5", "-0", "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400",
              "9" * 400, "9" * 5000, "[]", "{}", "[1, 2]", '{"a": 1}', '"\\u0000"', '"\\ud800"', '"\\udc00\\ud800"',
              '"\\x"', '"\\u12"', "'single'", "undefined", "0x10", "01", '"a" "b"', "[1,]", "{,}"]  # fmt: skip


def as_parked(body: bytes) -> bytes:
    """A dead-letter body with its sealed fields opened: sealing uses random nonces, so two
    sealings of one message differ; opened, they compare equal."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return body
    if not isinstance(data, dict) or not any(str(v).startswith(SEAL_PREFIX) for v in data.values()):
        return body
    return json.dumps(open_fields(data), sort_keys=True).encode()


def nested(depth: int, leaf: str = "1") -> str:
    return (
        "".join("[" if i % 2 else '{"k":' for i in range(depth))
        + leaf
        + "".join("]" if i % 2 else "}" for i in reversed(range(depth)))
    )


def raw(value: Any) -> str:
    # ensure_ascii: lone surrogates and NUL become \u escapes, as a JavaScript publisher would write them.
    return json.dumps(value)


raw_values = st.one_of(
    st.sampled_from(RAW_VALUES),
    st.sampled_from(SPECIAL_STRINGS).map(raw),
    st.text(max_size=40).map(raw),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from([257, 1025, 4001, 4097, 70_000, 300_000]).map(lambda n: raw("x" * n)),
    st.integers(min_value=2, max_value=40).map(nested),
    st.sampled_from([33, 500, 990, 5000, 100_000]).map(nested),
    st.lists(st.sampled_from(SPECIAL_STRINGS), max_size=3).map(raw),
    st.dictionaries(st.sampled_from(SPECIAL_STRINGS), st.sampled_from(SPECIAL_STRINGS), max_size=3).map(raw),
)


@dataclass(frozen=True)
class Hostile:
    domain: str
    routing_key: str
    body: bytes
    mutated: str = ""  # the field a near-valid message had changed, when one was

    def __repr__(self) -> str:  # a failing example stays readable when its body is 300 kB
        body = self.body if len(self.body) <= 400 else self.body[:400] + b"..."
        return f"Hostile({self.domain!r}, {self.routing_key!r}, {len(self.body)} bytes: {body!r}, {self.mutated!r})"


def encode(pairs: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{raw(key)}: {value}" for key, value in pairs) + "}"


@st.composite
def near_valid(draw: st.DrawFn) -> Hostile:
    """A valid message of a random type with one field changed, dropped, added or repeated."""
    domain, routing_key, body = draw(st.sampled_from(VALID))
    pairs = [(key, raw(value)) for key, value in body.items()]
    fields = sorted(schema_fields(domain) | set(body) | {"metadata.userName", "data.kind"})
    field = draw(st.sampled_from(fields))
    how = draw(st.sampled_from(["keep", "keep", "replace", "replace", "replace", "drop", "before", "after"]))
    value = draw(raw_values)
    if "." in field:  # a nested field of metadata or data
        outer, inner = field.split(".")
        inside = [(k, raw(v)) for k, v in (body.get(outer) or {}).items() if k != inner]
        pairs = [(k, v) for k, v in pairs if k != outer] + [(outer, encode([*inside, (inner, value)]))]
    elif how == "keep":  # only the encoding or the routing key may change
        field = ""
    elif how == "replace":
        pairs = [(k, v) for k, v in pairs if k != field] + [(field, value)]
    elif how == "drop":
        pairs = [(k, v) for k, v in pairs if k != field]
    elif how == "before":  # a duplicate key: the last one counts
        pairs = [(field, value), *pairs]
    else:
        pairs = [*pairs, (field, value)]
    if draw(st.integers(0, 3)) == 0:
        routing_key = draw(st.sampled_from([routing_key, f"{domain}.{draw(st.sampled_from(['image', 'push', 'x']))}",
                                            domain, f"{routing_key}.extra"]))  # fmt: skip
    how = draw(st.sampled_from(["utf-8"] * 14 + ["utf-16", "bom", "latin-1", "cut", "flip", "nul", "surrogate"]))
    intact = how in ("utf-8", "utf-16", "bom")  # then a rejection must be about the mutated field
    body = draw(encoded(encode(pairs), how))
    return Hostile(domain, routing_key if domain != OTP else OTP, body, field if intact else "")


@st.composite
def encoded(draw: st.DrawFn, text: str, how: str) -> bytes:
    """The JSON text as bytes: mostly UTF-8, sometimes in another encoding, cut short or corrupted."""
    if how == "utf-8":
        return text.encode(errors="surrogatepass")
    if how == "utf-16":
        return text.encode("utf-16-le", "surrogatepass")
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode(errors="surrogatepass")
    if how == "latin-1":
        return text.replace("Ann", "Ånn\xff").encode("latin-1", "replace")
    data = bytearray(text.encode(errors="surrogatepass"))
    at = draw(st.integers(0, max(0, len(data) - 1)))
    if how == "cut":
        return bytes(data[:at])
    if how == "flip" and data:
        data[at] ^= draw(st.integers(1, 255))
    elif how == "nul":
        data[at:at] = b"\x00"
    elif how == "surrogate":  # UTF-8 of a lone surrogate, which json.loads lets through with surrogatepass
        data[at:at] = b"\xed\xa0\x80"
    return bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.sampled_from(SPECIAL_STRINGS),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
domains = st.sampled_from([("media", "media.image"), ("notification", "notification.push"), ("cleanup", "cleanup.x"),
                           (OTP, OTP), ("device", "device.register")])  # fmt: skip


@st.composite
def arbitrary_json(draw: st.DrawFn) -> Hostile:
    domain, routing_key = draw(domains)
    value = draw(json_values | st.dictionaries(st.sampled_from(sorted(schema_fields(domain))), json_values))
    return Hostile(domain, routing_key, json.dumps(value).encode())  # NaN and Infinity included


@st.composite
def arbitrary_bytes(draw: st.DrawFn) -> Hostile:
    domain, routing_key = draw(domains)
    return Hostile(domain, routing_key, draw(st.binary(max_size=300)))


hostile_messages = st.one_of(near_valid(), near_valid(), near_valid(), arbitrary_json(), arbitrary_bytes())

# Deterministic and database-free, so CI runs the same examples every time.
FUZZ = hypothesis.settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate, hypothesis.Phase.shrink],
)


def outcome(message: Hostile) -> ParsedJob | InvalidMessage:
    """What the consumer's validation makes of a message; anything but these two is a crash."""
    try:
        return parse_message(message.domain, message.body, message.routing_key, settings.CONFIG.max_message_bytes)
    except InvalidMessage as exc:
        return exc


def check_reason(message: Hostile, reason: str) -> None:
    """A reason an operator can read, and that an AMQP header and a text column can carry."""
    assert reason.strip(), "an empty reason"
    assert "\x00" not in reason
    reason.encode()  # no lone surrogate
    if message.mutated and not reason.startswith(("message is", "routing key")):
        # The schema named what is wrong: the field itself, or (for a model-level rule) what it needs.
        field = message.mutated.split(".")[0]
        named = field in reason or "needs '" in reason
        assert named, f"the reason {reason!r} does not name {field!r}"


def as_job(message: Hostile, parsed: ParsedJob) -> Envelope:
    """The consumer's envelope for a valid message, with the checks that it can be queued and recorded."""
    domain = message.domain
    kind = parsed.payload.get("type", "email")
    assert parsed.job_type == f"{domain}.{kind}"
    if domain != OTP and "." in message.routing_key:
        assert message.routing_key.split(".")[1] == kind
    assert set(parsed.payload) <= schema_fields(domain), "unknown fields are dropped"
    envelope = Envelope.sealed(
        job_id=parsed.job_id or uuid.uuid4().hex,
        job_type=parsed.job_type,
        payload=parsed.payload,
        attempt=parsed.retries_done,
        created_at=parsed.created_at or 0.0,
        priority=parsed.priority,
        routing_key=message.routing_key,
    )
    pickle.dumps(envelope.to_dict())  # what RQ stores
    json.dumps(envelope.payload, allow_nan=False).encode()  # what jsonb stores: finite, valid Unicode
    return envelope


@pytest.fixture
def in_process(redis_conn) -> Consumer:
    """A consumer that is not running: its per-message steps are called directly."""
    return Consumer(redis=redis_conn, name="fuzz")


def test_every_hostile_message_becomes_a_storable_job_or_a_dead_letter_with_its_reason(in_process: Consumer) -> None:
    seen: Counter[str] = Counter()

    @hypothesis.given(message=hostile_messages)
    @hypothesis.settings(FUZZ, max_examples=500)
    def fuzz(message: Hostile) -> None:
        result = outcome(message)
        if isinstance(result, InvalidMessage):
            check_reason(message, result.reason)
            source = next(s for s in topology.sources() if s.domain == message.domain)
            delivery = Delivery(1, source, message.routing_key, message.body, pika.BasicProperties(), False)
            before = DeadLetter.objects.count()
            in_process._record_dead_letter(delivery, result.reason)  # the admin's copy, in PostgreSQL
            assert DeadLetter.objects.count() == before + 1, "the dead letter was not recorded"
            seen["rejected"] += 1
            seen[result.reason.split(":")[0]] += 1
            return
        envelope = as_job(message, result)
        records.start([envelope], "fuzz", "rq-fuzz")  # the job record: the payload must fit jsonb
        assert JobRun.objects.filter(job_id=envelope.job_id).exists()
        seen[result.job_type] += 1

    fuzz()
    # The fuzz proves little unless it reaches both outcomes, every job type and every schema.
    assert seen["rejected"] >= 150, seen
    for kind in ("media.image", "media.video", "media.audio", "notification.push", "notification.email",
                 "notification.sms", "cleanup.stories", "otp.email", "device.register",
                 "device.unregister"):  # fmt: skip
        assert seen[kind] >= 2, (kind, seen)
    for reason in ("message is not JSON", "invalid media job", "invalid notification job", "invalid otp job",
                   "invalid cleanup job", "invalid device job"):  # fmt: skip
        assert seen[reason] >= 5, (reason, seen)


# --- end to end: through RabbitMQ to a running consumer ---------------------------------------
def corpus(size: int) -> list[Hostile]:
    drawn: list[Hostile] = []

    @hypothesis.given(message=hostile_messages)
    @hypothesis.settings(FUZZ, max_examples=size)
    def collect(message: Hostile) -> None:
        drawn.append(message)

    collect()
    return drawn


def dedup_key(message: Hostile, parsed: ParsedJob) -> str:
    """How the consumer recognises the same job twice (see Consumer._identity)."""
    if parsed.job_id:
        return f"id:{parsed.job_id}"
    return "fp:" + hashlib.sha256(message.routing_key.encode() + b"\0" + message.body).hexdigest()


@pytest.mark.slow
def test_a_fuzzed_stream_through_rabbitmq_is_queued_or_dead_lettered_and_the_consumer_keeps_going(
    consumer: Consumer, publisher, redis_conn
) -> None:
    otp_queue = settings.CONFIG.rabbitmq_queue_name
    messages = corpus(250)
    expected_dead: Counter[tuple[str, bytes]] = Counter()
    reasons: dict[tuple[str, bytes], str] = {}
    jobs: dict[str, Hostile] = {}
    for message in messages:
        routing_key = otp_queue if message.domain == OTP else message.routing_key
        publisher.publish(routing_key, message.body)
        result = outcome(message)
        if isinstance(result, InvalidMessage):
            expected_dead[(routing_key, as_parked(dead_letter_body(message.body)))] += 1
            reasons[(routing_key, as_parked(dead_letter_body(message.body)))] = result.reason
        else:
            jobs.setdefault(dedup_key(message, result), message)
    assert expected_dead and jobs, "the corpus holds both kinds"

    dead_count = sum(expected_dead.values())
    # Dead letters are recorded before their batch is acked, jobs are in RQ before it: both
    # counts reaching what the oracle expects means every message was handled.
    wait_for(
        lambda: DeadLetter.objects.count() >= dead_count and len(rq_items(redis_conn, *ALL_QUEUES)) >= len(jobs),
        60,
        f"the consumer to handle all {len(messages)} messages",
    )
    assert consumer.stats.rejectedMessages == dead_count
    assert consumer.stats.enqueuedJobs == len(jobs)

    parked = dead_letters()
    got_dead = Counter((properties.headers["x-original-routing-key"], as_parked(body)) for properties, body in parked)
    assert got_dead == expected_dead, "every invalid message is in the dead-letter queue, secrets sealed or masked"
    for properties, body in parked:
        key = (properties.headers["x-original-routing-key"], as_parked(body))
        assert properties.headers["x-supworker-reason"] == reasons[key][:1000]
    assert DeadLetter.objects.filter(source=DeadLetter.Source.CONSUMER).count() == dead_count

    queued = rq_items(redis_conn, *ALL_QUEUES)
    assert len(queued) == len(jobs), "every valid message is one job"
    for item in queued:
        envelope = Envelope.from_dict(item)
        for name in jobtypes.sealed_fields():
            if name in envelope.payload:
                envelope.payload[name] = envelope.reveal(name)
        assert envelope.payload in [outcome(m).payload for m in jobs.values()]
    for source in topology.sources():
        assert queue_depth(source.queue) == 0, f"{source.queue}: everything was acked"

    # Nothing else is lost: the consumer is still running and a good message still goes through.
    publisher.publish("cleanup.sessions", {"type": "sessions", "jobId": "after-the-fuzz"})
    wait_for(
        lambda: any(i["job_id"] == "after-the-fuzz" for i in rq_items(redis_conn, "cleanup")),
        20,
        "the message published after the fuzz",
    )


@pytest.mark.slow
def test_hostile_routing_keys_message_ids_and_headers_do_not_stop_the_consumer(
    consumer: Consumer, publisher, redis_conn
) -> None:
    """Not only the body is the publisher's: RabbitMQ passes on routing keys that are not UTF-8
    or hold NUL, any message_id and any header table."""
    exchange, body = settings.CONFIG.rabbitmq_exchange, json.dumps({"type": "sessions"}).encode()
    sent = [  # (routing key, body, properties, rejected)
        (b"cleanup.\xff", body, pika.BasicProperties(), True),
        ("cleanup.\x00", body, pika.BasicProperties(), True),
        ("cleanup.sessions\n", body, pika.BasicProperties(), True),
        ("cleanup.sessions", b"{bad", pika.BasicProperties(headers={"b": b"\xff\x00", "t": {"n": [1, None]}}), True),
        ("cleanup.sessions", b"[]", pika.BasicProperties(content_type="\x00", headers={"x-supworker-reason": 5}), True),
        ("cleanup.sessions", body, pika.BasicProperties(message_id="id with \x00 NUL"), False),
        ("cleanup.sessions", body + b" ", pika.BasicProperties(message_id="m" * 200), False),
    ]
    for routing_key, data, properties, _ in sent:
        publisher.channel.basic_publish(exchange, routing_key, data, properties, mandatory=True)
    publisher.publish("cleanup.sessions", {"type": "sessions", "jobId": "after-the-fuzz"})
    queued = wait_for(
        lambda: len(items := rq_items(redis_conn, "cleanup")) >= 3 and items, 20, "the valid messages in RQ"
    )

    reasons = {properties.headers["x-original-routing-key"]: properties.headers["x-supworker-reason"]
               for properties, _ in dead_letters()}  # fmt: skip
    assert reasons[b"cleanup.\xff"] == "routing key b'cleanup.\\xff' must be printable UTF-8 text"
    assert reasons["cleanup.\x00"] == "routing key 'cleanup.\\x00' must be printable UTF-8 text"
    assert reasons["cleanup.sessions\n"].endswith("must be printable UTF-8 text")
    assert DeadLetter.objects.count() == sum(rejected for *_, rejected in sent), "each one recorded for the admin"
    # A message_id that cannot be a job id is replaced, so the job's records can be written.
    envelopes = [Envelope.from_dict(item) for item in queued]
    assert "after-the-fuzz" in {e.job_id for e in envelopes}
    assert all("\x00" not in e.job_id and len(e.job_id) <= 128 for e in envelopes)
    records.start(envelopes, "cleanup", "rq-fuzz")
    assert JobRun.objects.count() == 3
    assert consumer.stats.rejectedMessages == 5

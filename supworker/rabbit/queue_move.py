"""Moving supworker's queues to the type the settings ask for, on a live broker, losing nothing.

RabbitMQ cannot change a queue's type or arguments in place: declaring a classic queue again as
a quorum queue fails with PRECONDITION_FAILED. Each queue Q whose arguments differ is moved in
two hops through a temporary queue Q.moving (declared with the new arguments):

    1. Q.moving is bound like Q, then Q unbound: new messages collect in Q.moving;
    2. Q's messages are moved to Q.moving, then Q (empty) is deleted and declared again;
    3. Q is bound again, Q.moving unbound, its messages moved back, and Q.moving deleted.

A message is moved by publishing it (with confirms, keeping its routing key, which names its
job type, and its properties) through a private exchange bound only to the destination, and
acked in its source after the confirm. The messenger keeps publishing throughout. Between a
bind and the next unbind a message may be routed to both queues, and a move interrupted
between a confirm and its ack repeats up to one batch: the consumer recognises the copies
by their jobId (anonymous messages by their body, within an hour). Nothing is lost: every
step is idempotent and a run picks up where an interrupted one stopped.

The consumers must be stopped while it runs (a queue deleted under a consumer takes the
consumer's unacknowledged messages with it): the move refuses to touch a queue that has one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pika
from django.conf import settings
from pika.adapters.blocking_connection import BlockingConnection
from pika.exceptions import ChannelClosedByBroker

from supworker.rabbit import topology

MOVING = ".moving"
ACK_EVERY = 200  # messages acked together in their source once their copies are confirmed
IDLE_S = 1.0  # a source that delivered nothing for this long, and holds nothing, is empty


class QueueInUse(Exception):
    """A queue to be moved has consumers: consume_rabbit must be stopped first."""


@dataclass
class Moved:
    queue: str
    outcome: str  # "already" (nothing to do), "declared" (it did not exist) or "moved"
    messages: int = 0


class QueueMove:
    def __init__(self, connection: BlockingConnection, say: Callable[[str], None] = lambda line: None):
        self.connection = connection
        self.say = say
        self.channel = connection.channel()
        self.via = f"{settings.CONFIG.rabbitmq_queue_prefix}{MOVING}"  # the private exchange

    def run(self) -> list[Moved]:
        topology.declare_exchanges(self.channel)
        self.channel.exchange_declare(self.via, exchange_type="topic", durable=True)
        results = [self.move(queue) for queue in topology.own_queues()]
        self.channel.exchange_delete(self.via)
        return results

    def move(self, queue: topology.OwnQueue) -> Moved:
        temporary = topology.OwnQueue(queue.name + MOVING, queue.arguments, queue.bindings)
        existed = self._exists(queue.name)
        if self._declares(queue) and not self._exists(temporary.name):
            return Moved(queue.name, "already" if existed else "declared")
        for name in (queue.name, temporary.name):
            consumers = self._consumers(name)
            if consumers:
                raise QueueInUse(
                    f"{name} has {consumers} consumer(s): stop every `manage.py consume_rabbit` (and any other "
                    "consumer of supworker's queues) first; publishers may go on"
                )
        moved = 0
        if not self._declares(queue):  # still of the old kind: first hop, to the temporary queue
            topology.declare_own(self.channel, temporary)
            self._rebind(to=temporary, away_from=queue)
            moved += self._transfer(queue.name, temporary.name)
            moved += self._delete_empty(queue.name, temporary.name)
            topology.declare_own(self.channel, queue)
            self.say(f"{queue.name}: declared again with {queue.arguments}")
        self._rebind(to=queue, away_from=temporary)
        moved += self._transfer(temporary.name, queue.name)
        moved += self._delete_empty(temporary.name, queue.name)
        return Moved(queue.name, "moved", moved)

    # --- steps ----------------------------------------------------------------------------
    def _declares(self, queue: topology.OwnQueue) -> bool:
        """Whether `queue` exists with these arguments, declaring it if it is missing."""
        try:
            topology.declare_own(self.channel, queue)
        except topology.QueueMismatch:
            self.channel = self.connection.channel()  # the broker closed the other one
            return False
        return True

    def _passive(self, name: str) -> pika.frame.Method | None:
        try:
            return self.channel.queue_declare(name, passive=True)
        except ChannelClosedByBroker as exc:
            self.channel = self.connection.channel()
            if exc.reply_code != topology.NOT_FOUND:
                raise
            return None

    def _exists(self, name: str) -> bool:
        return self._passive(name) is not None

    def _consumers(self, name: str) -> int:
        declared = self._passive(name)
        return 0 if declared is None else declared.method.consumer_count

    def _rebind(self, to: topology.OwnQueue, away_from: topology.OwnQueue) -> None:
        """Bind first, then unbind: a message published in between reaches both, never neither."""
        for exchange, routing_key in to.bindings:
            self.channel.queue_bind(to.name, exchange, routing_key=routing_key)
        for exchange, routing_key in away_from.bindings:
            self.channel.queue_unbind(away_from.name, exchange, routing_key=routing_key)

    def _transfer(self, source: str, destination: str) -> int:
        """Move every message of `source` to `destination`; returns how many."""
        self.channel.queue_bind(destination, self.via, routing_key="#")
        taking = self.connection.channel()
        taking.basic_qos(prefetch_count=ACK_EVERY * 2)
        giving = self.connection.channel()
        giving.confirm_delivery()
        count, unacked_tag = 0, 0
        for method, properties, body in taking.consume(source, inactivity_timeout=IDLE_S):
            if method is None:  # idle: done once the source holds nothing more
                if unacked_tag:
                    taking.basic_ack(unacked_tag, multiple=True)
                    unacked_tag = 0
                if self._passive(source).method.message_count == 0:  # type: ignore[union-attr]
                    break
                continue
            # mandatory: were the destination not bound, the publish raises instead of vanishing.
            giving.basic_publish(self.via, method.routing_key, body, properties, mandatory=True)
            unacked_tag, count = method.delivery_tag, count + 1
            if count % ACK_EVERY == 0:
                taking.basic_ack(unacked_tag, multiple=True)
                unacked_tag = 0
                self.say(f"{source} -> {destination}: {count} message(s)")
        taking.cancel()
        taking.close()
        giving.close()
        self.channel.queue_unbind(destination, self.via, routing_key="#")
        self.say(f"{source} -> {destination}: {count} message(s) moved")
        return count

    def _delete_empty(self, name: str, drained_into: str) -> int:
        """Delete a drained queue; one that received a message meanwhile is drained again first.
        Returns how many messages that second drain moved.

        Quorum queues refuse `if_empty`, so emptiness is asked first. Nothing is routed to the queue
        any more (it was unbound before its drain, which ended after IDLE_S without a message).
        """
        moved = 0
        while (state := self._passive(name)) is not None:
            if state.method.message_count:
                moved += self._transfer(name, drained_into)
                continue
            deleted = self.channel.queue_delete(name).method.message_count
            if deleted:  # cannot happen while nothing routes to it; said loudly if it ever does
                raise RuntimeError(f"{deleted} message(s) arrived in {name} after its drain and were deleted with it")
        return moved

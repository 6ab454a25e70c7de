"""Connecting to RabbitMQ: to one node, or to any answering node of a cluster.

RABBITMQ_URL may list several nodes' URLs separated by commas. Every connection (the consumer's,
each publisher's, the health check's) tries them in a random order and keeps the first that
answers, so consumers spread over the cluster and a dead node costs one refused connection,
not a stall. A connection that breaks is opened again the same way: by the consumer's
reconnect loop, by the next publish for a publisher.
"""

from __future__ import annotations

import os
import random
import socket

import pika
from django.conf import settings


def parameters(purpose: str, heartbeat: int | None = None) -> list[pika.URLParameters]:
    """One parameter set per node, shuffled; `purpose` names the connection in RabbitMQ's tools."""
    nodes = settings.CONFIG.rabbitmq_urls
    listed = []
    for url in random.sample(nodes, len(nodes)):
        params = pika.URLParameters(url)
        params.client_properties = {"connection_name": f"supworker {purpose} {socket.gethostname()}:{os.getpid()}"}
        if heartbeat is not None:
            params.heartbeat = heartbeat
        listed.append(params)
    return listed


def connect(purpose: str = "client", heartbeat: int | None = None) -> pika.BlockingConnection:
    """A connection to the first node that answers; AMQPConnectionError when none does."""
    return pika.BlockingConnection(parameters(purpose, heartbeat))

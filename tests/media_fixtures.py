"""Fixtures for the media tests: generated files, storage (local or a local S3 server),
a per-test TEMP_DIR and a RabbitMQ queue that receives media.processed and media.failed.

Registered by `pytest_plugins = ["tests.media_fixtures"]` in each media test module.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.media_files import MediaFiles, MediaHarness
from tests.s3_server import S3Bucket, S3Server, storage_from_environment


@pytest.fixture(scope="session")
def media_files(tmp_path_factory) -> MediaFiles:
    return MediaFiles(tmp_path_factory.mktemp("media-fixtures"))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3-compatible server on loopback, as a MinIO or Ceph would be in production,
    checking every request's SigV4 signature against an IAM user's key (tests/s3_server.py)."""
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_storage(s3_server, settings) -> Iterator[S3Bucket]:
    """Django's default storage on a fresh bucket of the local S3 server, set up as in production:
    AWS_* variables read by supworker.config and turned into STORAGES by the settings' own code."""
    bucket = s3_server.bucket(f"media-{uuid.uuid4().hex[:12]}")
    settings.STORAGES = settings.STORAGES | {"default": storage_from_environment(bucket.env)}
    yield bucket


@pytest.fixture
def local_storage(settings, tmp_path) -> Path:
    """Default storage on a private MEDIA_ROOT for the test."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = str(root)
    settings.STORAGES = settings.STORAGES | {"default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
    return root


@pytest.fixture
def media_temp_dir(settings, tmp_path) -> Path:
    """TEMP_DIR of the test's own, so leftovers of a job are visible."""

    temp = tmp_path / "tmp"
    settings.CONFIG = dataclasses.replace(settings.CONFIG, temp_dir=temp)
    return temp


@pytest.fixture
def media_events(rabbit_names) -> Iterator[tuple[object, str]]:
    """A queue bound to media.processed and media.failed on the test's sup_exchange."""
    from django.conf import settings as django_settings

    from supworker.rabbit.connection import connect

    connection = connect()
    channel = connection.channel()
    exchange = django_settings.CONFIG.rabbitmq_exchange
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
    for key in ("media.processed", "media.failed"):
        channel.queue_bind(queue, exchange, routing_key=key)
    yield channel, queue
    connection.close()


@pytest.fixture
def media(media_files, media_events, media_temp_dir, local_storage) -> MediaHarness:
    channel, queue = media_events
    return MediaHarness(media_files, channel, queue)


@pytest.fixture
def media_s3(media_files, media_events, media_temp_dir, s3_storage) -> MediaHarness:
    channel, queue = media_events
    return MediaHarness(media_files, channel, queue)

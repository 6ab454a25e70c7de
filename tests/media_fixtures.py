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

from tests.media_files import MediaFiles, MediaHarness, free_port


@pytest.fixture(scope="session")
def media_files(tmp_path_factory) -> MediaFiles:
    return MediaFiles(tmp_path_factory.mktemp("media-fixtures"))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3-compatible server on loopback, as a MinIO or Ceph would be in production."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_storage(s3_server, settings) -> Iterator[str]:
    """Point Django's default storage at a fresh bucket of the local S3 server; yields the bucket."""
    import boto3

    bucket = f"media-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    client.create_bucket(Bucket=bucket)
    # The same options supworker/settings.py builds when AWS_S3_BUCKET is set.
    settings.STORAGES = settings.STORAGES | {
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "region_name": "us-east-1",
                "endpoint_url": s3_server,
                "access_key": "test",
                "secret_key": "test",
                "file_overwrite": True,
                "default_acl": None,
            },
        }
    }
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

    from supworker.rabbit.publisher import connect

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

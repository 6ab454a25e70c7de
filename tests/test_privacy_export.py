"""A user's export against real PostgreSQL, the real local media store and RabbitMQ: the archive's
contents, written through a file (memory bounded), the event and the e-mail notice, expiry by the
cron job, and the two manage.py commands."""

from __future__ import annotations

import json
import os
import re
import tracemalloc
import urllib.parse
import uuid
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.utils import timezone

from privacy import erasure, export
from privacy.jobtypes import EXPORTED_ROUTING_KEY
from privacy.models import ErasureReceipt, UserExport, subject_of
from supworker.envelope import Envelope
from supworker.models import Message
from supworker.rabbit.connection import connect
from supworker.runner import run_here
from tests.helpers import drain_queue, rq_items, run_manage, run_manage_on_a_terminal, wait_for
from tests.ingest_fixtures import subprocess_env
from tests.privacy_data import archived, everything_of, stored

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_stores")]
pytest_plugins = ["tests.privacy_fixtures", "tests.media_fixtures"]


@pytest.fixture
def private_queue(rabbit_names):
    """What the messenger binds privately: the export events; and where a notice e-mail job goes."""
    connection = connect()
    channel = connection.channel()
    exchange = settings.CONFIG.rabbitmq_exchange
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
    channel.queue_bind(queue, exchange, routing_key=EXPORTED_ROUTING_KEY)

    def received() -> list[dict]:
        bodies = []
        while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
            bodies.append(json.loads(got[2]))
        return bodies

    yield received
    connection.close()


def opened(key: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(default_storage.path(key))


def test_the_export_holds_a_json_file_per_table_and_the_users_media_and_nothing_of_others(two_users,
                                                                                          private_queue):  # fmt: skip
    ann, bob, ann_data, _, _, _, _ = two_users
    result = export.export(ann, "export-1")

    record = UserExport.objects.get(job_id="export-1")
    assert record.subject == subject_of(ann) and record.key == result["key"]
    assert record.key.startswith("exports/") and len(record.key) > len("exports/") + 40, "unguessable"
    assert timezone.now() + timedelta(days=6) < record.expires_at <= timezone.now() + timedelta(days=7)
    with opened(record.key) as archive_file:
        names = set(archive_file.namelist())
        tables = {name: json.loads(archive_file.read(name)) for name in names if name.endswith(".json")}
        media = {name: archive_file.read(name) for name in names if name.startswith("media/")}
    assert sorted(r["content"] for r in tables["messages.json"]) == ["ann 0", "ann 1", "ann 2"]
    assert {r["sender_id"] for r in tables["message_archives.json"]} == {str(ann)}
    assert len(tables["message_archives.json"]) == 3
    for name in ("stories", "user_sessions", "user_prekeys", "websocket_connections", "user_statistics",
                 "notifications", "fcm_devices", "muted_chats"):  # fmt: skip
        assert len(tables[f"{name}.json"]) == 1, name
        assert str(bob) not in json.dumps(tables[f"{name}.json"]), name
    assert "registration_id" not in tables["fcm_devices.json"][0], "a device token is no export's business"
    assert "job_runs.json" not in tables and "dead_letters.json" not in tables
    assert set(media) == {f"media/{key}" for key in ann_data["files"]}
    assert all(content == b"data" for content in media.values())
    manifest = tables["manifest.json"]
    assert manifest["counts"]["media_files"] == 3 and manifest["missing_media"] == []
    assert result["bytes"] == default_storage.size(record.key)

    (event,) = private_queue()
    assert event["type"] == "user.exported" and event["userId"] == str(ann) and event["key"] == record.key
    assert event["url"].endswith(record.key) and event["expiresAt"] == record.expires_at.isoformat()

    again = export.export(ann, "export-1")  # the same job run again: the same archive, announced again
    assert again["key"] == record.key and UserExport.objects.filter(job_id="export-1").count() == 1
    assert [e["key"] for e in private_queue()] == [record.key]


def test_an_export_is_written_through_a_file_and_its_memory_does_not_grow_with_the_media():
    ann = uuid.uuid4()
    megabyte = 1024 * 1024
    for n in range(6):
        key = stored(f"media/big/{n}.bin", os.urandom(4 * megabyte))
        Message.objects.create(sender_id=ann, chat_id=uuid.uuid4(), media_url=key)
    path = Path(settings.CONFIG.temp_dir) / "probe.zip"

    tracemalloc.start()
    try:
        counts = export.write_archive(ann, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert counts["media_files"] == 6 and path.stat().st_size > 24 * megabyte
    assert peak < 4 * megabyte, f"{peak:,} bytes at the peak for 24 MB of media"


def test_expired_exports_are_deleted_by_their_cron_job_with_their_archives():
    old = UserExport.objects.create(subject="a" * 64, job_id="old", key=stored("exports/old.zip"),
                                    expires_at=timezone.now() - timedelta(minutes=1))  # fmt: skip
    fresh = UserExport.objects.create(subject="a" * 64, job_id="fresh", key=stored("exports/fresh.zip"),
                                      expires_at=timezone.now() + timedelta(days=1))  # fmt: skip
    tick = Envelope(job_id="cron:expire_exports:1", job_type="user.expire_exports", payload={"type": "expire_exports"})

    (settled,) = run_here([tick])

    assert settled.outcome.result == {"counts": {"exports_expired": 1, "export_files_deleted": 1}}
    assert list(UserExport.objects.values_list("job_id", flat=True)) == ["fresh"]
    assert not default_storage.exists(old.key) and default_storage.exists(fresh.key)
    assert "expire_exports" in settings.CONFIG.cron


def test_an_export_published_to_rabbitmq_is_written_announced_and_mailed(consumer, publisher, redis_conn,
                                                                         private_queue):  # fmt: skip
    ann = uuid.uuid4()
    everything_of(ann, "ann")
    publisher.publish("user.export", {"type": "export", "userId": str(ann), "email": "ann@example.com",
                                      "jobId": "export-ann"})  # fmt: skip
    wait_for(lambda: rq_items(redis_conn, "cleanup"), 20, "the export job")
    drain_queue(redis_conn, "cleanup")

    (event,) = wait_for(private_queue, 10, "the user.exported event")
    assert default_storage.exists(event["key"]) and event["userId"] == str(ann)
    # The notice goes the way every e-mail goes: a notification.email job, through the consumer.
    (notice,) = wait_for(lambda: rq_items(redis_conn, "notifications", "notifications_high"), 20, "the notice job")
    assert notice["job_id"] == "export-ann:notice" and notice["job_type"] == "notification.email"
    assert notice["payload"]["email"] == "ann@example.com" and event["url"] in notice["payload"]["body"]


def test_the_commands_show_a_dry_run_then_erase_and_export_with_their_progress(rabbit_names):
    ann = uuid.uuid4()
    everything_of(ann, "ann")
    env = subprocess_env(rabbit_names)

    dry = run_manage("erase_user", str(ann), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "messages" in dry.stdout and " 3" in dry.stdout and Message.objects.filter(sender_id=ann).count() == 3

    exported = run_manage("export_user", str(ann), env=env)
    assert exported.returncode == 0, exported.stderr
    assert "export written: exports/" in exported.stdout and "media_files" in exported.stderr

    erased = run_manage("erase_user", str(ann), "--batch-size", "1", env=env)
    assert erased.returncode == 0, erased.stderr
    assert "erasure done, receipt" in erased.stdout and "erasure: messages: " in erased.stderr
    assert not Message.objects.filter(sender_id=ann).exists() and ErasureReceipt.objects.count() == 1
    assert not UserExport.objects.exists(), "the export went with the user"

    bad = run_manage("export_user", str(ann), "--email", "nobody", env=env)
    assert bad.returncode != 0 and "--email" in bad.stderr


def test_erase_user_on_a_terminal_draws_a_bar_with_the_dry_runs_total(rabbit_names):
    ann = uuid.uuid4()
    everything_of(ann, "ann")
    process, screen = run_manage_on_a_terminal("erase_user", str(ann), "--batch-size", "2",
                                               env=subprocess_env(rabbit_names))  # fmt: skip
    assert process.returncode == 0, screen
    assert "━" in screen and "14/14" in screen, screen  # 13 rows and the command's own job record, masked
    # The log line is printed above the bar, from the start of a line, not into it.
    assert re.search(r"[\r\n][-\d]+ [:,\d]+ INFO +privacy\.erasure: erasure ", screen), screen
    assert "erasure: messages:" not in screen, "no plain lines on a terminal"


def test_on_s3_the_erasure_rewrites_the_archives_and_the_export_is_a_presigned_download(
    s3_storage, two_users, private_queue, tmp_path
):
    """The same on the S3 store (a local S3 server, through boto3 and django-storages)."""
    ann, bob, ann_data, bob_data, shared, only_ann, export_key = two_users
    erasure.erase(ann, "erase-ann")

    objects = s3_storage.objects()
    assert not set(ann_data["files"]) & set(objects) and set(bob_data["files"]) <= set(objects)
    assert only_ann not in objects and export_key not in objects
    assert [row["sender_id"] for row in archived(shared)] == [str(bob)]

    result = export.export(bob, "export-bob")
    (event,) = private_queue()
    # Presigned with SigV4 until the export expires. (moto's server, checking signatures as IAM
    # does, refuses query-string auth: the archive is fetched with the client instead.)
    link = urllib.parse.urlsplit(event["url"])
    query = urllib.parse.parse_qs(link.query)
    assert link.path.endswith(f"/{result['key']}") and query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    expires_at = datetime.fromisoformat(event["expiresAt"])
    assert abs(int(query["X-Amz-Expires"][0]) - (expires_at - timezone.now()).total_seconds()) < 60
    download = tmp_path / "export.zip"
    s3_storage.client().download_file(s3_storage.name, result["key"], str(download))
    with zipfile.ZipFile(download) as archive_file:
        assert {f"media/{key}" for key in bob_data["files"]} <= set(archive_file.namelist())
        assert len(json.loads(archive_file.read("messages.json"))) == 3

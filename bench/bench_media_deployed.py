"""Media throughput as deployed: image jobs published to RabbitMQ as the messenger publishes them,
drained by `manage.py consume_rabbit` and 1, 2 and 4 `manage.py rqworker media` processes, each
started from its Procfile line with the operator's settings; beside it, the bare `vipsthumbnail`
making the same two sizes of the same files on the same machine in the same run, one process at a
time and two in parallel.

Each image: the 12-megapixel photographic JPEG of bench_media.py, uploaded to the local media
store (Django's FileSystemStorage under the bench's MEDIA_ROOT, as the tests upload), a
`messages` row with media_status "queued" (as the messenger leaves it), and `media.image`
`{type, s3Key, userId, messageId, originalName, jobId}` on the exchange. It is done when its row
is "ready"; each round checks that every row is, and every job record succeeded on its first try.

Timing: Django's start-up is not timed: the workers are registered in Redis and the consumer is
consuming before the clock starts; it runs from the first publish to the last row ready. CPU:
user + system seconds (psutil) of the consumer and of the worker processes with their children
(the work-horse RQ forks per job, and the scheduler process it forks at start), from the first
publish until every worker is idle again (its last work-horse ended: the event and RQ's
bookkeeping follow the row). Memory: the peak resident set (the kernel's VmHWM) of each worker
process, and of its work-horses, sampled every 0.1 s (a work-horse shares its parent's pages
until it writes them: its figure includes those). vipsthumbnail: each image
made at both sizes by two runs, as bench_media's baseline; CPU and peak memory are exactly the
runs' own (wait4). libvips runs its own thread pool on every core, as our resize does.

Isolation, as bench_notifications: own exchange and queue names, Redis database 12, own database
(`<name>_bench`), own media, temporary and log directories; every other setting is the default.
BENCH_MEDIA_IMAGES sets the image count (default 40), BENCH_MEDIA_WORKERS the worker counts
(default "1,2,4").
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg2
from redis import Redis
from rq import Worker
from rq.worker import WorkerStatus

from bench import deployed
from bench.bench_ingest import _wait_for
from bench.bench_media import _photo
from bench.table import Table

IMAGES = int(os.environ.get("BENCH_MEDIA_IMAGES", "40"))
WORKER_COUNTS = [int(n) for n in os.environ.get("BENCH_MEDIA_WORKERS", "1,2,4").split(",")]
REDIS_DB = 12  # the benchmarks' (tests use 15 and 8 to 11); one benchmark runs at a time
STALL_SECONDS = 60.0
SAMPLE_SECONDS = 0.1
VIPS_OPTIONS = "[Q=82,strip,interlace]"  # bench_media's: our JPEG quality, no metadata, progressive


@dataclasses.dataclass
class Drain:
    label: str
    images: int
    seconds: float
    cpu: dict[str, float]  # CPU seconds over the window, per process kind
    peak_mb: dict[str, float]  # peak resident set, per process kind (the largest one process reached)

    @property
    def rate(self) -> float:
        return self.images / self.seconds


class PeakMemory:
    """Samples the kernel's high-water mark of resident memory (VmHWM) of some processes and their
    children every SAMPLE_SECONDS in a thread: /proc reads only, cheap beside the work measured."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.parents = 0.0
        self.children = 0.0
        # Children already there before the jobs are not work-horses: RQ's scheduler, forked by a worker.
        self.before = {child for pid in pids for child in _children(pid)}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-peak-memory", daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # the parents' high-water marks at the end

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample()

    def _sample(self) -> None:
        for pid in self.pids:
            self.parents = max(self.parents, _hwm_mb(pid))
            for child in _children(pid):
                if child not in self.before:
                    self.children = max(self.children, _hwm_mb(child))


def _hwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (FileNotFoundError, ProcessLookupError):
        pass  # a work-horse that just ended
    return 0.0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(child) for child in children.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


@dataclasses.dataclass
class Bench:
    env: dict[str, str]
    work: Path
    redis: Redis
    db: psycopg2.extensions.connection
    keys: list[str]
    tag: str
    made: list[str] = dataclasses.field(default_factory=list)  # the `messages` rows this run inserted

    def drain(self, workers: int) -> Drain:
        """`workers` media workers and one consumer, started and idle; then IMAGES jobs published
        and drained."""
        from supworker.rabbit.publisher import Publisher

        prefix = f"{self.tag}-w{workers}"
        messages = self._messages()
        bodies = [
            {"type": "image", "s3Key": key, "userId": str(uuid.uuid4()), "messageId": message_id,
             "originalName": f"IMG_{n:04}.JPG", "jobId": f"{prefix}-{n}"}
            for n, (message_id, key) in enumerate(zip(messages, self.keys, strict=True))
        ]  # fmt: skip
        media = self._workers(prefix, workers)
        processes = list(media)
        alive = lambda: all(process.alive() for process in processes)  # noqa: E731
        publisher: Publisher | None = None
        try:
            consumer = deployed.start("consumer", self.env, self.work, name=f"{prefix}-consumer")
            processes.append(consumer)
            publisher = Publisher()  # the messenger's way: confirmed, mandatory, persistent
            consumers = lambda: publisher.channel.queue_declare(_media_queue(), passive=True).method.consumer_count  # noqa: E731
            _wait_for(consumers, 1, f"the consumer process consuming ({prefix})", 0.05, alive, stall=60)
            with PeakMemory([process.popen.pid for process in media]) as memory:
                start = time.perf_counter()
                before = _cpu(consumer, media)
                for body in bodies:
                    publisher.publish("media.image", body)
                publisher.close()  # idle through the drain, it would miss its heartbeats
                self._wait_ready(messages, alive)
                seconds = time.perf_counter() - start
                # Every job's CPU, to the end of its work-horse: the event and RQ's bookkeeping follow the row.
                _wait_for(lambda: self._idle(media), len(media), "workers idle", 0.01, alive, STALL_SECONDS)
                cpu = {kind: after - before[kind] for kind, after in _cpu(consumer, media).items()}
        finally:
            if publisher is not None:
                publisher.close()
            deployed.stop(processes)
        self._verify(prefix, messages, processes)
        label = f"{workers} `rqworker media`" + (" processes" if workers > 1 else " process")
        return Drain(label, IMAGES, seconds, cpu, {"worker": memory.parents, "work-horse": memory.children})

    def _idle(self, workers: list[deployed.Process]) -> int:
        """Workers idle again: an RQ worker says so once it reaped the work-horse of its last job."""
        pids = {worker.popen.pid for worker in workers}
        return sum(w.pid in pids and w.get_state() == WorkerStatus.IDLE for w in Worker.all(connection=self.redis))

    def _messages(self) -> list[str]:
        """IMAGES `messages` rows waiting for their media, as the messenger leaves them."""
        ids = [str(uuid.uuid4()) for _ in range(IMAGES)]
        self.made.extend(ids)
        with self.db.cursor() as cursor:
            for message_id in ids:
                cursor.execute(
                    "INSERT INTO messages (id, sender_id, chat_id, content, media_status)"
                    " VALUES (%s, %s, %s, '', 'queued')",
                    [message_id, str(uuid.uuid4()), str(uuid.uuid4())],
                )
        return ids

    def _workers(self, prefix: str, count: int) -> list[deployed.Process]:
        """`count` media workers, started and registered in Redis (Django set up)."""
        workers = [deployed.start("media", self.env, self.work, name=f"{prefix}-media{n}") for n in range(count)]
        pids = {worker.popen.pid for worker in workers}
        registered = lambda: sum(w.pid in pids for w in Worker.all(connection=self.redis))  # noqa: E731
        try:
            _wait_for(registered, count, "workers registered", 0.05, lambda: all(w.alive() for w in workers), 60)
        except BaseException:
            deployed.stop(workers)
            raise
        return workers

    def _wait_ready(self, messages: list[str], alive) -> None:
        def ready() -> int:
            with self.db.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FILTER (WHERE media_status = 'ready'),"
                    " count(*) FILTER (WHERE media_status = 'failed') FROM messages WHERE id = ANY(%s::uuid[])",
                    [messages],
                )
                done, failed = cursor.fetchone()
            if failed:
                raise RuntimeError(f"{failed} image jobs failed (output in {self.work})")
            return done

        _wait_for(ready, len(messages), "messages ready", 0.05, alive, STALL_SECONDS)

    def _verify(self, prefix: str, messages: list[str], processes: list[deployed.Process]) -> None:
        with self.db.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM messages WHERE id = ANY(%s::uuid[]) AND media_status = 'ready'"
                " AND media_url LIKE 'media/%%/processed/image.jpg'"
                " AND thumbnail_url LIKE 'media/%%/processed/thumb.jpg'"
                " AND media_metadata->>'blurhash' <> ''",
                [messages],
            )
            ready = cursor.fetchone()[0]
            cursor.execute(
                "SELECT count(*) FILTER (WHERE status = 'succeeded' AND attempts = 1), count(*) FROM job_runs"
                " WHERE job_id LIKE %s",
                [prefix + "-%"],
            )
            succeeded, runs = cursor.fetchone()
        if not ready == succeeded == runs == len(messages):
            outputs = "; ".join(str(process.log) for process in processes)
            raise RuntimeError(
                f"{prefix}: {ready} of {len(messages)} messages ready with image, thumbnail and blurhash,"
                f" {succeeded} of {runs} job records succeeded at the first try (output: {outputs})"
            )


def _cpu(consumer: deployed.Process, workers: list[deployed.Process]) -> dict[str, float]:
    """CPU seconds so far of the consumer, of the workers with all their children, and of the
    finished work-horses alone (the children a worker reaped; its scheduler runs on)."""
    parts = [worker.cpu_parts() for worker in workers]
    return {
        "consumer": consumer.cpu_seconds(),
        "workers": sum(sum(part) for part in parts),
        "work-horses": sum(reaped for _, reaped, _ in parts),
    }


def _media_queue() -> str:
    from supworker.rabbit import topology

    return next(source.queue for source in topology.sources() if source.domain == "media")


# --- the bare tool ------------------------------------------------------------------------------
def vipsthumbnail(files: list[Path], out: Path, parallel: int) -> Drain:
    """Each file made at both sizes by two vipsthumbnail runs, `parallel` runs at a time."""
    from django.conf import settings

    vips = shutil.which("vipsthumbnail")
    assert vips is not None
    limits = settings.CONFIG.media
    runs = [
        [vips, str(path), "-s", str(size), "-o", f"{out / f'{path.stem}-{name}.jpg'}{VIPS_OPTIONS}"]
        for path in files
        for size, name in ((limits.image_max_edge, "image"), (limits.thumbnail_max_edge, "thumb"))
    ]
    lock = threading.Lock()
    totals = {"cpu": 0.0, "peak": 0.0}
    errors: list[str] = []

    def stream(mine: list[list[str]]) -> None:
        for argv in mine:
            pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=_quiet())
            _, status, usage = os.wait4(pid, 0)
            with lock:
                totals["cpu"] += usage.ru_utime + usage.ru_stime
                totals["peak"] = max(totals["peak"], usage.ru_maxrss / 1024)  # kB on Linux
                if os.waitstatus_to_exitcode(status):
                    errors.append(" ".join(argv))

    # Each stream takes whole images (both of an image's runs), in order.
    per_image = [runs[i : i + 2] for i in range(0, len(runs), 2)]
    streams = [[argv for pair in per_image[n::parallel] for argv in pair] for n in range(parallel)]
    threads = [threading.Thread(target=stream, args=(mine,)) for mine in streams]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"vipsthumbnail failed: {errors[0]}")
    label = "vipsthumbnail, one at a time" if parallel == 1 else f"vipsthumbnail, {parallel} in parallel"
    return Drain(label, len(files), seconds, {"vipsthumbnail": totals["cpu"]}, {"vipsthumbnail": totals["peak"]})


def _quiet() -> list[tuple]:
    return [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0), (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)]


# --- the run -------------------------------------------------------------------------------------
def run() -> Table:
    if not shutil.which("vipsthumbnail"):
        raise RuntimeError("vipsthumbnail not found: run make bench, or apt-get install libvips-tools")
    with deployed.own_site("bm", REDIS_DB) as site:
        return _run(site)


def _run(site: deployed.Site) -> Table:
    from django.core.files import File
    from django.core.files.storage import FileSystemStorage

    from bench.bench_notifications import _with_channel, topology_declare, topology_delete

    tag, db = site.tag, site.db
    work = Path(tempfile.mkdtemp(prefix="supworker-bench-media-"))
    media_root = work / "media"
    env = site.env(LOG_DIR=str(work / "logs"), MEDIA_ROOT=str(media_root), TEMP_DIR=str(work / "tmp"))
    drains: list[Drain] = []
    bench: Bench | None = None
    try:
        photo = work / "photo.jpg"
        _photo(4000, 3000).save(photo, "JPEG", quality=92)  # bench_media's photo
        store = FileSystemStorage(location=media_root)
        keys = []
        for n in range(IMAGES):
            with open(photo, "rb") as handle:
                keys.append(store.save(f"uploads/{uuid.uuid4()}/IMG_{n:04}.jpg", File(handle, name=photo.name)))
        files = [media_root / key for key in keys]
        vips_out = work / "vips"
        vips_out.mkdir()
        vipsthumbnail(files[:2], vips_out, 1)  # untimed: the files and libvips into the page cache
        for parallel in (1, 2):
            drains.append(vipsthumbnail(files, vips_out, parallel))
        _with_channel(site.config, topology_declare)
        bench = Bench(env, work, site.redis, db, keys, tag)
        for workers in WORKER_COUNTS:
            drains.append(bench.drain(workers))
    finally:
        _with_channel(site.config, topology_delete)
        with db.cursor() as cursor:
            for table in ("job_runs", "dead_letters"):
                cursor.execute(f"DELETE FROM {table} WHERE job_id LIKE %s", [tag + "-%"])  # noqa: S608 - our names
            if bench is not None:
                cursor.execute("DELETE FROM messages WHERE id = ANY(%s::uuid[])", [bench.made])
    shutil.rmtree(media_root, ignore_errors=True)
    shutil.rmtree(work / "vips", ignore_errors=True)
    print(f"(process output and logs in {work})")
    return _table(drains)


def _table(drains: list[Drain]) -> Table:
    best_vips = max(drain.rate for drain in drains if "vipsthumbnail" in drain.cpu)
    table = Table(
        f"Media as deployed: {IMAGES} 12 MP JPEGs → 2048 + 320 + blurhash through `consume_rabbit` and"
        " `rqworker media` processes, against vipsthumbnail on the same files in the same run",
        ["drained by", "images", "seconds", "images/s", "time ÷ vips best", "CPU s/image: consumer",
         "workers (work-horses)", "vipsthumbnail", "peak MB: worker", "work-horse / vips run"],
    )  # fmt: skip
    for drain in drains:
        cpu = {kind: f"{seconds / drain.images:.3f}" for kind, seconds in drain.cpu.items()}
        workers = f"{cpu['workers']} ({cpu['work-horses']})" if "workers" in cpu else ""
        peak = drain.peak_mb.get("work-horse", drain.peak_mb.get("vipsthumbnail", ""))
        table.rows.append([
            drain.label, drain.images, drain.seconds, drain.rate, f"{best_vips / drain.rate:.2f}",
            cpu.get("consumer", ""), workers, cpu.get("vipsthumbnail", ""), drain.peak_mb.get("worker", ""), peak,
        ])  # fmt: skip
    table.notes = [
        "clock: from the first publish (Django's start-up before it, untimed) to the last `messages` row ready;"
        " every row ready with image, thumbnail and blurhash, every job record succeeded at its first try."
        " time ÷ vips best: seconds per image over those of the faster vipsthumbnail row.",
        "CPU: psutil, from the first publish until the last work-horse ended; workers: the worker processes with"
        " their work-horses (RQ forks one per job), in brackets the work-horses alone. vipsthumbnail: two runs"
        " per image (2048, then 320), their own figures (wait4). Peak MB: VmHWM (a work-horse's includes the"
        " pages it still shares with its worker), sampled every 0.1 s.",
    ]
    return table

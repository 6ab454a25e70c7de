"""Running ffmpeg and ffprobe on untrusted files: sandboxed, bounded in time, no pipe deadlock.

Sandbox: a media file can be or hide a reference to other resources (an HLS or concat
playlist uploaded under a video's name, one inside another container's stream) that plain
ffmpeg follows, reading local files or reaching the network. ffmpeg detects formats by
content, whatever the name says. Every input here is opened with
- `-protocol_whitelist file`: only local files, no http, tcp, data, crypto, subfile…;
- `-format_whitelist <list>`: only the demuxers we accept for that kind of media, so hls,
  concat, dash, image2 patterns and the like cannot even be probed (ffmpeg copies both lists
  to every nested context it opens);
- an explicit `file:` URL, so a key such as `http:x` can never be read as a protocol.

Time: every run gets the job's remaining time (`Deadline`), is killed when it runs out, and is
killed too if the Python side is interrupted (RQ's job timeout raises in the work horse) or
the work horse dies (PR_SET_PDEATHSIG, set by setpriv). Output: stdout and stderr are read
together by `communicate()`, so a chatty ffmpeg can never fill a pipe and hang.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from media_jobs.limits import Deadline
from supworker.handlers import PermanentError

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"
STDERR_TAIL = 600  # characters of ffmpeg's complaint kept in a failure reason


class FFmpegError(PermanentError):
    """ffmpeg could not read or convert the file: the file is at fault, retrying will not help."""


# util-linux's setpriv sets PR_SET_PDEATHSIG and execs ffmpeg: if the work horse dies (even by
# SIGKILL), the kernel kills ffmpeg too. Doing it with a preexec_fn instead would run Python
# between fork and exec, which can deadlock in a process with threads (ours has some).
_DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []


def input_url(path: Path) -> str:
    return f"file:{Path(path).resolve()}"


def input_options(demuxers: Sequence[str], max_pixels: int | None = None) -> dict[str, str]:
    """ffmpeg-python keyword arguments that sandbox one input.

    `max_pixels` makes the decoder refuse any picture larger than that. The size checked from
    ffprobe is only the first one a stream states: an H.264 stream can switch to a 16384x16384
    picture mid-way (gigabytes of decoded frames); with the cap such pictures are dropped.
    """
    options = {"protocol_whitelist": "file", "format_whitelist": ",".join(demuxers)}
    if max_pixels:
        options["max_pixels"] = str(max_pixels)
    return options


def run(args: Sequence[str], deadline: Deadline, what: str) -> bytes:
    """Run ffmpeg/ffprobe `args`; return stdout. Failures become FFmpegError naming `what`."""
    timeout = deadline.remaining()
    process = subprocess.Popen(
        [*_DIE_WITH_PARENT, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise PermanentError(
            f"{what} took longer than the {deadline.seconds:.0f} s this job may take; ffmpeg was stopped"
        ) from None
    finally:
        # Whatever interrupted us (RQ's JobTimeoutException, a signal), ffmpeg does not outlive it.
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        message = readable(stderr.decode(errors="replace"))
        raise FFmpegError(f"{what} failed: {_tail(message) or f'exit status {process.returncode}'}")
    return stdout


def readable(stderr: str) -> str:
    """ffmpeg's complaint on one line, without the memory addresses it tags lines with and
    without our file system paths (the reason reaches the messenger's users)."""
    lines = [_URL_RE.sub("the file", _ADDRESS_RE.sub("]", line)).strip() for line in stderr.splitlines()]
    return "; ".join(dict.fromkeys(line for line in lines if line))  # repeated lines once


_ADDRESS_RE = re.compile(r" @ 0x[0-9a-f]+\]")
_URL_RE = re.compile(r"file:/.*?(?=: |;|$)")  # every input and output is given as a file: URL


def run_together(runs: Sequence[tuple[Sequence[str], str]], deadline: Deadline) -> list[bytes]:
    """Several independent runs at once (each in its own thread, so each pipe is drained)."""
    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        futures = [pool.submit(run, args, deadline, what) for args, what in runs]
        return [future.result() for future in futures]  # the first failure is raised


def probe(path: Path, demuxers: Sequence[str], deadline: Deadline, kind: str = "media") -> dict[str, Any]:
    """ffprobe's JSON view of `path` (format and streams), opened in the sandbox."""
    args = [
        FFPROBE,
        "-v",
        "error",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        ",".join(demuxers),
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        input_url(path),
    ]
    try:
        out = run(args, deadline, "reading the file")
    except FFmpegError as exc:
        raise FFmpegError(_refusal(str(exc), path, demuxers, kind)) from None
    return json.loads(out)


def _refusal(stderr: str, path: Path, demuxers: Sequence[str], kind: str) -> str:
    """A reason an operator and a user can act on, without our file system paths in it."""
    accepted = ", ".join(demuxers)
    refused = re.search(r"\[(\w+)(?: @ [^]]*)?\] Format not on whitelist", stderr)
    if refused:
        name = refused.group(1)
        return (
            f"the file was recognised as {name} (by content or name), which is not accepted for {kind}"
            f" (accepted: {accepted})"
        )
    detail = stderr.split(": ", 1)[-1].replace(input_url(path), "the file").replace(str(path), "the file")
    return f"the file is not a readable {kind} file in an accepted container ({accepted}): {readable(detail)}"


def base_args() -> list[str]:
    # -nostdin: never wait for a keypress; -y: deterministic outputs are overwritten on rerun.
    return [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]


def _tail(message: str) -> str:
    return message if len(message) <= STDERR_TAIL else "…" + message[-STDERR_TAIL:]

# supworker: one image for every process (web, workers, scheduler, consumer); the command
# chooses the process. Multi-stage: build wheels with compilers, run without them, as non-root.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential libpq-dev \
    && rm -rf /var/lib/apt/lists/*
# The runtime lock only: no test, lint or audit tool reaches the image (requirements/dev.txt is for .venv).
# pip first, at the pinned version that checks hashes of packages asked for with extras.
COPY requirements/pip.txt /tmp/pip.txt
COPY requirements/runtime.txt /tmp/runtime.txt
RUN pip install --no-cache-dir --require-hashes -r /tmp/pip.txt \
    && pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels -r /tmp/runtime.txt

FROM python:3.11-slim-bookworm AS runtime
# ffmpeg for media jobs; util-linux for setpriv (ffmpeg dies with its work horse).
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg util-linux libpq5 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system supworker && useradd --system --gid supworker --home /app supworker
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels /wheels/* && rm -rf /wheels
WORKDIR /app
COPY --chown=supworker:supworker . /app
# var/secrets: the compose quick start's generated secret key (a volume takes this owner and mode).
RUN mkdir -p /app/logs /app/var/media /app/var/tmp /app/var/static /app/var/secrets \
    && chown -R supworker:supworker /app/logs /app/var && chmod 700 /app/var/secrets
USER supworker
ENV SUPWORKER_ENV=production PYTHONUNBUFFERED=1 LOG_DIR=/app/logs MEDIA_ROOT=/app/var/media TEMP_DIR=/app/var/tmp
EXPOSE 8000
# The web process by default; workers: ["python", "manage.py", "rqworker", "media"]
CMD ["gunicorn", "supworker.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2", "--graceful-timeout", "30", "--no-control-socket", "--access-logfile", "-"]

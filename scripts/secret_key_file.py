"""Write a random secret key into the file DJANGO_SECRET_KEY_FILE names, unless it holds one.

docker-compose.yml runs this before `migrate`, so `docker compose up` needs no hand-made `.env`:
the key stays in the `secrets` volume across restarts and every process reads it from there
(supworker/config.py). It runs before Django, which refuses to start in production without a key.
The key is never printed.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


def ensure_key_file(path: Path) -> bool:
    """Write a new key unless `path` already holds one; True when a key was written."""
    if path.is_file() and path.read_text().strip():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # an empty file an interrupted run left
    # O_EXCL: of two runs at once, one writes and the other fails loudly instead of overwriting.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as key_file:
        key_file.write(secrets.token_urlsafe(60) + "\n")
    return True


def main() -> int:
    name = os.environ.get("DJANGO_SECRET_KEY_FILE", "").strip()
    if not name:
        sys.stderr.write("secret_key_file: DJANGO_SECRET_KEY_FILE is not set: nowhere to keep the key\n")
        return 2
    path = Path(name) if Path(name).is_absolute() else PROJECT_DIR / name
    written = ensure_key_file(path)
    print(f"secret key: {'a new one written to' if written else 'kept in'} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Project-local Redis, RabbitMQ and PostgreSQL for development, tests and `make run`.
#
#   scripts/services.sh up [SERVER...]     install what is missing (as root), start what is not running
#   scripts/services.sh down [SERVER...]   stop the servers (all three by default)
#   scripts/services.sh status             say what runs
#   scripts/services.sh install            install the missing Debian packages only
#   scripts/services.sh rabbitmqctl ARGS...   rabbitmqctl for the project's RabbitMQ node
#
# SERVER is redis, rabbitmq, postgresql or pgbouncer. PgBouncer (transaction pooling, in front of
# the project's PostgreSQL; `make test` runs the tests marked `pgbouncer` through it) starts only
# when named: `scripts/services.sh up pgbouncer`. Each server listens on 127.0.0.1 on the project's
# own ports, keeps its data under var/ and has its own node name, pid file and (for RabbitMQ)
# its own epmd port, so servers already on the machine on the standard ports are never
# touched. Running `up` twice is harmless and quick.
#
# A second, throw-away set (the fault tests restart theirs) needs other ports, another data
# directory and another node name:
#   SUPWORKER_VAR=/tmp/x SUPWORKER_REDIS_PORT=.. SUPWORKER_AMQP_PORT=.. SUPWORKER_AMQP_DIST_PORT=..
#   SUPWORKER_EPMD_PORT=.. SUPWORKER_RABBIT_NODE=name@localhost scripts/services.sh up redis rabbitmq
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR="${SUPWORKER_VAR:-$ROOT/var}"
case "$VAR" in /*) ;; *) VAR="$ROOT/$VAR" ;; esac
RABBIT_NODE="${SUPWORKER_RABBIT_NODE:-supworker@localhost}"
REDIS_PORT="${SUPWORKER_REDIS_PORT:-6390}"
AMQP_PORT="${SUPWORKER_AMQP_PORT:-5690}"
AMQP_DIST_PORT="${SUPWORKER_AMQP_DIST_PORT:-25690}"
AMQP_EPMD_PORT="${SUPWORKER_EPMD_PORT:-4390}"
PG_PORT="${SUPWORKER_PG_PORT:-5440}"
PG_DB=supworker PG_USER=supworker PG_PASSWORD=supworker
PGBOUNCER_PORT="${SUPWORKER_PGBOUNCER_PORT:-6440}"

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

# --- installing what is missing ---------------------------------------------------------
pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
pgbouncer_bin() { command -v pgbouncer || { [ -x /usr/sbin/pgbouncer ] && echo /usr/sbin/pgbouncer; } || true; }

missing_packages() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
  [ -n "$(pg_bindir)" ] || missing+=(postgresql)
  [ -n "$(pgbouncer_bin)" ] || missing+=(pgbouncer)
  command -v ffmpeg >/dev/null || missing+=(ffmpeg)
  echo "${missing[@]:-}"
}

install_packages() {
  local missing
  missing="$(missing_packages)"
  [ -z "$missing" ] && return 0
  if ! is_root; then
    die "missing packages; run: sudo apt-get update && sudo apt-get install -y $missing"
  fi
  log "installing $missing"
  # Keep the packages' own system services from starting: we run our own instances.
  local policy=/usr/sbin/policy-rc.d had_policy=0
  [ -e "$policy" ] && had_policy=1 && cp -p "$policy" "$policy.supworker-backup"
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
  local status=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null; } || status=$?
  if [ "$had_policy" = 1 ]; then mv "$policy.supworker-backup" "$policy"; else rm -f "$policy"; fi
  [ "$status" = 0 ] || die "apt-get install $missing failed (exit $status)"
}

# Run a command as the unprivileged owner of a server's data when we are root.
as_user() {
  local user="$1"; shift
  if is_root; then runuser -u "$user" -- "$@"; else "$@"; fi
}

# What tells this set of servers' outside directories apart: the checkout for the default var/,
# the data directory itself otherwise.
var_key() {
  if [ "$VAR" = "$ROOT/var" ]; then printf %s "$ROOT"; else printf %s "$VAR"; fi | md5sum | cut -c1-12
}

# Where a server that runs as USER keeps its files: var/NAME, or, when USER cannot reach var/
# (a checkout in a private home directory), a directory outside the checkout that var/NAME
# links to. Prints the path; creates nothing.
service_dir() {
  local user="$1" name="$2"
  if ! is_root || [ "$user" = root ] || runuser -u "$user" -- test -x "$VAR"; then
    echo "$VAR/$name"
  else
    echo "/var/tmp/supworker-$(var_key)/$name"
  fi
}

# Create a server's directory, owned by USER; link it from var/ when it lives outside.
make_service_dir() {
  local user="$1" name="$2" dir
  dir="$(service_dir "$user" "$name")"
  mkdir -p "$dir" "$VAR"
  if [ "$dir" != "$VAR/$name" ] && [ ! -L "$VAR/$name" ]; then
    log "user $user cannot reach $VAR; keeping $name data in $dir (linked from var/$name)"
    ln -sfn "$dir" "$VAR/$name"
  fi
  if is_root; then chown -R "$user" "$dir" && chmod 700 "$dir"; fi
}

# --- Redis ------------------------------------------------------------------------------
redis_up() {
  if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    log "redis already running on 127.0.0.1:$REDIS_PORT"; return 0
  fi
  mkdir -p "$VAR/redis" "$VAR/log" "$VAR/run"
  # Append-only file with fsync every second: a restart keeps queued jobs.
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$VAR/redis" \
    --daemonize yes --pidfile "$VAR/run/redis.pid" --logfile "$VAR/log/redis.log" \
    --appendonly yes --appendfsync everysec --save "" --protected-mode yes
  for _ in $(seq 50); do
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && { log "redis up on 127.0.0.1:$REDIS_PORT"; return 0; }
    sleep 0.1
  done
  die "redis did not start; see $VAR/log/redis.log"
}

redis_down() {
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown >/dev/null 2>&1 && log "redis stopped" || true
}

# --- RabbitMQ ---------------------------------------------------------------------------
rabbit_user() {
  if is_root && id rabbitmq >/dev/null 2>&1; then echo rabbitmq; else id -un; fi
}

rabbit_env() {
  local base; base="$(service_dir "$(rabbit_user)" rabbitmq)"
  export RABBITMQ_NODENAME="$RABBIT_NODE"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$AMQP_PORT"
  export RABBITMQ_DIST_PORT="$AMQP_DIST_PORT"
  export ERL_EPMD_PORT="$AMQP_EPMD_PORT"
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_MNESIA_BASE="$base/mnesia"
  export RABBITMQ_LOG_BASE="$base/log"
  export RABBITMQ_PID_FILE="$base/rabbitmq.pid"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins"
  export RABBITMQ_CONFIG_FILE="$base/rabbitmq.conf"
}

rabbitmqctl_() { rabbitmqctl -n "$RABBITMQ_NODENAME" "$@"; }

rabbit_running() { rabbitmqctl_ -q status >/dev/null 2>&1; }

# The node is registered with its epmd: it runs, even if a busy machine kept it from answering
# `status` in time. Starting it again would fail, after deleting its pid file.
rabbit_registered() {
  epmd -port "$AMQP_EPMD_PORT" -names 2>/dev/null | grep -q "^name ${RABBITMQ_NODENAME%@*} at port "
}

rabbit_up() {
  rabbit_env
  if rabbit_running; then log "rabbitmq already running on 127.0.0.1:$AMQP_PORT"; return 0; fi
  if rabbit_registered; then
    for _ in $(seq 12); do
      rabbit_running && { log "rabbitmq already running on 127.0.0.1:$AMQP_PORT"; return 0; }
      sleep 5
    done
    die "node $RABBITMQ_NODENAME is registered with epmd on port $AMQP_EPMD_PORT but does not answer"
  fi
  local user; user="$(rabbit_user)"
  make_service_dir "$user" rabbitmq
  mkdir -p "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
  echo '[].' >"$RABBITMQ_ENABLED_PLUGINS_FILE"
  cat >"$RABBITMQ_CONFIG_FILE" <<EOF
listeners.tcp.1 = 127.0.0.1:$AMQP_PORT
loopback_users.guest = true
log.file.level = warning
# Local development broker: do not block publishers on a nearly full developer disk.
disk_free_limit.absolute = 50MB
EOF
  is_root && chown -R "$user" "$(dirname "$RABBITMQ_PID_FILE")"
  rm -f "$RABBITMQ_PID_FILE"
  # The Debian wrapper drops from root to the rabbitmq user; it keeps the RABBITMQ_* variables.
  nohup rabbitmq-server >"$RABBITMQ_LOG_BASE/startup.log" 2>&1 &
  # `wait` returns once the node has booted; a cold start takes 10-30 s.
  for _ in $(seq 60); do [ -s "$RABBITMQ_PID_FILE" ] && break; sleep 0.5; done
  [ -s "$RABBITMQ_PID_FILE" ] || die "rabbitmq did not write its pid file; see $RABBITMQ_LOG_BASE"
  rabbitmqctl_ -q wait --timeout 90 "$RABBITMQ_PID_FILE" >/dev/null ||
    die "rabbitmq did not start; see $RABBITMQ_LOG_BASE"
  log "rabbitmq up on 127.0.0.1:$AMQP_PORT (node $RABBITMQ_NODENAME)"
}

# Our own epmd (on its private port) has no other node to serve. It refuses to die while the
# node that just stopped is still registered, which lasts a moment after the node is gone.
epmd_down() {
  for _ in $(seq 50); do
    epmd -port "$AMQP_EPMD_PORT" -names >/dev/null 2>&1 || return 0
    epmd -port "$AMQP_EPMD_PORT" -kill >/dev/null 2>&1 || true
    sleep 0.1
  done
  log "epmd on port $AMQP_EPMD_PORT is still running"
}

rabbit_down() {
  rabbit_env
  rabbit_running || { epmd_down; return 0; }
  # With a pid file, `stop` waits for the node's process to end; the node another checkout
  # started has its pid file there, and waiting for a file that never appears would hang.
  local pid_file=()
  [ -s "$RABBITMQ_PID_FILE" ] && pid_file=("$RABBITMQ_PID_FILE")
  rabbitmqctl_ -q stop "${pid_file[@]}" >/dev/null 2>&1 && log "rabbitmq stopped" || true
  epmd_down
}

# --- PostgreSQL -------------------------------------------------------------------------
pg_user() { if is_root; then echo postgres; else id -un; fi; }

pg_socket_dir() {
  # A Unix socket path must stay under ~100 bytes; a deep checkout falls back to /tmp.
  local dir; dir="$(service_dir "$(pg_user)" postgres)/run"
  if [ "${#dir}" -gt 80 ]; then dir="/tmp/supworker-pg-$(var_key)"; fi
  echo "$dir"
}

pg_up() {
  local bin user base sock data log
  bin="$(pg_bindir)"; sock="$(pg_socket_dir)"
  if "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
    log "postgresql already running on 127.0.0.1:$PG_PORT"; return 0
  fi
  user="$(pg_user)"
  id "$user" >/dev/null 2>&1 || die "user $user does not exist (it comes with Debian's postgresql package)"
  make_service_dir "$user" postgres
  base="$(service_dir "$user" postgres)"; data="$base/data"; log="$base/postgres.log"
  mkdir -p "$sock"; is_root && chown "$user" "$sock"
  if [ ! -s "$data/PG_VERSION" ]; then
    log "initialising a new cluster in $data"
    local pwfile; pwfile="$(mktemp)"; echo "$PG_PASSWORD" >"$pwfile"; chmod 644 "$pwfile"
    as_user "$user" "$bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
  fi
  as_user "$user" "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 start \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $sock" >/dev/null ||
    die "postgresql did not start; see $log"
  # Role and database, created once; CREATEDB lets pytest-django create its test database.
  local psql=("$bin/psql" -h "$sock" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qtA)
  if [ -z "$(as_user "$user" "${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'")" ]; then
    as_user "$user" "${psql[@]}" -c "CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD'"
  fi
  if [ -z "$(as_user "$user" "${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname='$PG_DB'")" ]; then
    as_user "$user" "${psql[@]}" -c "CREATE DATABASE $PG_DB OWNER $PG_USER"
  fi
  log "postgresql up on 127.0.0.1:$PG_PORT (database $PG_DB)"
}

pg_down() {
  local bin user data
  bin="$(pg_bindir)"; user="$(pg_user)"; data="$(service_dir "$user" postgres)/data"
  [ -n "$bin" ] && [ -s "$data/postmaster.pid" ] || return 0
  as_user "$user" "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 && log "postgresql stopped" || true
}

# --- PgBouncer --------------------------------------------------------------------------
# Transaction pooling, as the README advises operators to run it: a client's transactions may each
# run on another server session, so nothing supworker relies on may live in the session
# (docs/operations.md, "PostgreSQL through PgBouncer"). Any database name is passed through to the
# same name on the project's PostgreSQL (the `*` entry), test databases included.
pgbouncer_up() {
  local bin user dir
  bin="$(pgbouncer_bin)"
  if "$(pg_bindir)/pg_isready" -q -h 127.0.0.1 -p "$PGBOUNCER_PORT"; then
    log "pgbouncer already running on 127.0.0.1:$PGBOUNCER_PORT"; return 0
  fi
  user="$(pg_user)"  # PgBouncer refuses to run as root
  make_service_dir "$user" pgbouncer
  dir="$(service_dir "$user" pgbouncer)"
  printf '"%s" "%s"\n' "$PG_USER" "$PG_PASSWORD" >"$dir/userlist.txt"
  cat >"$dir/pgbouncer.ini" <<EOF
[databases]
* = host=127.0.0.1 port=$PG_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
pool_mode = transaction
; Few server sessions per database: clients share them, so session state would leak (and show).
default_pool_size = 5
max_client_conn = 500
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
log_connections = 0
log_disconnections = 0
EOF
  is_root && chown "$user" "$dir/userlist.txt" "$dir/pgbouncer.ini" && chmod 600 "$dir/userlist.txt"
  local as=(); is_root && as=(-u "$user")
  "$bin" -d "${as[@]}" "$dir/pgbouncer.ini" >/dev/null || die "pgbouncer did not start; see $dir/pgbouncer.log"
  for _ in $(seq 50); do
    "$(pg_bindir)/pg_isready" -q -h 127.0.0.1 -p "$PGBOUNCER_PORT" && {
      log "pgbouncer up on 127.0.0.1:$PGBOUNCER_PORT (transaction pooling to 127.0.0.1:$PG_PORT)"; return 0
    }
    sleep 0.1
  done
  die "pgbouncer did not start; see $dir/pgbouncer.log"
}

pgbouncer_down() {
  local pidfile; pidfile="$(service_dir "$(pg_user)" pgbouncer)/pgbouncer.pid"
  [ -s "$pidfile" ] || return 0
  kill "$(cat "$pidfile")" 2>/dev/null && log "pgbouncer stopped" || true
  rm -f "$pidfile"
}

status() {
  local bin; bin="$(pg_bindir)"; rabbit_env
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && echo "redis      up   127.0.0.1:$REDIS_PORT" || echo "redis      down"
  rabbit_running && echo "rabbitmq   up   127.0.0.1:$AMQP_PORT" || echo "rabbitmq   down"
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && echo "postgresql up   127.0.0.1:$PG_PORT" || echo "postgresql down"
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$PGBOUNCER_PORT" && echo "pgbouncer  up   127.0.0.1:$PGBOUNCER_PORT" || echo "pgbouncer  down"
}

# The servers named on the command line (all three when none is), checked.
servers() {
  local name
  [ "$#" -gt 0 ] || set -- redis postgresql rabbitmq
  for name in "$@"; do
    case "$name" in
      redis | rabbitmq | postgresql | pgbouncer) echo "$name" ;;
      *) die "unknown server '$name' (redis, rabbitmq, postgresql or pgbouncer)" ;;
    esac
  done
}

up() {
  local names; names="$(servers "$@")"
  install_packages
  mkdir -p "$VAR"  # before service_dir() asks whether the servers' users can reach it
  for name in $names; do
    case "$name" in redis) redis_up ;; rabbitmq) rabbit_up ;; postgresql) pg_up ;; pgbouncer) pgbouncer_up ;; esac
  done
}

down() {
  local names; names="$(servers "$@")"
  # RabbitMQ first, PgBouncer, PostgreSQL, Redis last, unless told otherwise.
  [ "$#" -gt 0 ] || names="rabbitmq pgbouncer postgresql redis"
  for name in $names; do
    case "$name" in redis) redis_down ;; rabbitmq) rabbit_down ;; postgresql) pg_down ;; pgbouncer) pgbouncer_down ;; esac
  done
}

command="${1:-up}"
[ "$#" -gt 0 ] && shift
case "$command" in
  up) up "$@" ;;
  down) down "$@" ;;
  status) status ;;
  install) install_packages ;;
  # rabbitmqctl for the project's node, e.g. `services.sh rabbitmqctl list_queues name messages`
  rabbitmqctl) rabbit_env; rabbitmqctl_ "$@" ;;
  *) die "usage: $0 up [SERVER...]|down [SERVER...]|status|install|rabbitmqctl ARGS... (SERVER: redis, rabbitmq, postgresql, pgbouncer)" ;;
esac

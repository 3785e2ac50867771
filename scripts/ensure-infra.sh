#!/usr/bin/env bash
# Make sure RabbitMQ, PostgreSQL and Redis answer on their standard local ports.
# Starts any that is installed but stopped; fails with instructions when one is missing.
set -u

wait_port() { # name port seconds
  local i
  for ((i = 0; i <= $3 * 5; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    [ "$3" -gt 0 ] && sleep 0.2
  done
  return 1
}

missing() {
  cat >&2 <<MSG
casegate: $1 is not running on 127.0.0.1:$2 and is not installed here.
  Install it (Debian: apt-get install $3), or run the infrastructure in containers:
    docker compose up -d rabbitmq postgres redis
MSG
  exit 1
}

ensure() { # name port start-command package probe-binary
  local name=$1 port=$2 start=$3 pkg=$4 bin=$5
  wait_port "$name" "$port" 0 && return 0
  command -v "$bin" >/dev/null 2>&1 || missing "$name" "$port" "$pkg"
  echo "casegate: starting $name" >&2
  eval "$start" >/dev/null 2>&1 || true
  wait_port "$name" "$port" 60 || { echo "casegate: $name did not come up on port $port" >&2; exit 1; }
  if [ "$name" = RabbitMQ ]; then rabbitmqctl -q await_startup >/dev/null 2>&1 || true; fi
}

ensure RabbitMQ 5672 "rabbitmq-server -detached" rabbitmq-server rabbitmq-server
ensure PostgreSQL 5432 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start' postgresql pg_ctlcluster
ensure Redis 6379 'mkdir -p /var/lib/redis /var/log/redis && redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log' redis-server redis-server

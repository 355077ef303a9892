#!/usr/bin/env bash
# `engine.sh up`: make sure a Docker engine answers; start one if not.
# `engine.sh down`: stop the engine `up` started (and only that one, by its PID).
# The engine we start has no bridge network and touches no iptables rules: containers run
# with --network host or --network none, so nothing listens beyond what the host has.
set -euo pipefail
PIDFILE=${CHUNKVAULT_DOCKERD_PIDFILE:-/run/chunkvault-dockerd.pid}
LOG=${CHUNKVAULT_DOCKERD_LOG:-/var/log/chunkvault-dockerd.log}

case "${1:-}" in
up)
    if docker info >/dev/null 2>&1; then exit 0; fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: no Docker engine answers and starting one needs root" >&2
        exit 1
    fi
    echo "==> starting dockerd --bridge=none --iptables=false (log: $LOG)" >&2
    setsid dockerd --bridge=none --iptables=false --ip6tables=false >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 60); do
        if docker info >/dev/null 2>&1; then exit 0; fi
        kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
        sleep 0.5
    done
    echo "error: dockerd did not answer within 30 s; its log:" >&2
    tail -n 20 "$LOG" >&2
    exit 1
    ;;
down)
    [ -f "$PIDFILE" ] || exit 0
    pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
        echo "==> stopping the dockerd we started (pid $pid)" >&2
        kill -TERM "$pid"
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$PIDFILE"
    ;;
*)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac

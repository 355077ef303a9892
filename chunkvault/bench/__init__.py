"""Measurements: ``chunkvault bench`` (in-process and against the configured peers) and the
side-by-side comparison behind ``make bench`` (:mod:`chunkvault.bench.compare`).

Modules: ``data`` (datasets and tree verification), ``micro`` (crypto, chunker,
compression), ``peerbench`` (raw peer throughput), ``procs`` (a child's wall time and peak
RSS), ``e2e`` (a throwaway vault: init, push, restore, verify), ``report`` (ratios,
targets, tables and markdown: pure), ``tools`` (restic, rclone, boto3 ceilings),
``agentlat`` (change-to-durable latency under ``chunkvault run``), ``charts`` (PNGs).
Speed goals live here, never in timed tests.
"""

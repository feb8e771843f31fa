"""Benchmark of the deployed AusCAT Orthanc (a command, not part of the test suite).

    sudo .venv/bin/python -m tests.bench [--quick] [--growth N] [--rounds R] [--backends sqlite,postgresql]
                                         [--output DIR] [--keep]

It rolls out its own stacks with the site playbook (tests/bench/inventory: ``auscat_bench``
with the SQLite index on 58042/58242, ``auscat_benchpg`` with PostgreSQL on 59042/59242),
starts the same image's Orthanc with Orthanc's own defaults (``stock``, 56042/56242) and
the same binary and configuration outside any container (``bare``, 57042/57242). The SQLite
stack is also reached at its container's own address (``deployed-direct``), because a client
on 127.0.0.1 goes through docker-proxy to reach a published port. It then measures on fresh
UIDs, alternating servers round by round:

- C-STORE ingest with pynetdicom and DCMTK storescu over 1, 4 and 8 associations;
- REST ingest (POST /instances) of the same bytes and REST retrieval (study archive);
- raw disk writes of the same bytes (a file and an fsync per instance);
- /tools/find and C-FIND latency by PatientID while each index grows to N small instances,
  and the ingest rate of each growth window.

It writes results.json (every sample, summaries, ratios, goals, machine), results.png and
results.txt to build/bench/, and removes its stacks, secrets, containers and directories
at the end, also on failure or Ctrl-C (``--keep`` keeps them).
"""

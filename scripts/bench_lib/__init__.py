"""Building blocks of scripts/bench.

measure.py      timing one command (posix_spawn -> waitpid), the round-robin runner, stats
report.py       the printed table, ratios and the JSON file
sandbox_suite.py  `scripts/bench sandbox`: stoke run vs host, unshare, bwrap, crun
crun_peer.py    crun, driven from a helper in a private mount namespace (hybrid cgroup hosts)
spawn_suite.py  `scripts/bench spawn`: wraps build/bin/stoke-bench-spawn

Stdlib only; run by Debian's /usr/bin/python3.
"""

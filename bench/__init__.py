"""svcaudit's benchmarks (not part of the tests; docs/benchmarks.md), as a package.

Command line, from the repository's root: `python -m bench run|soak|chart|report|core ...`
(bench/__main__.py; `make bench BENCH_ARGS=...` is `python -m bench run ...`). The modules
import each other as `bench.<module>` and none of them is ever run as a script.
"""

"""Tools that live beside the product, not in it: benchmarks (bench/), result tables (reports/),
test-vector and model generators (generators/) and fuzz harnesses (fuzz/).

They form a package run from the repository root as modules, e.g.
`python -m tools.bench.bench_cuda MODEL.lowbit`, so that `lowbit`, `converters` and the tools
themselves import from this checkout with no sys.path edits; where a tool needs a path (the
checkout, the shared test world) it takes it from tools/_paths.py."""

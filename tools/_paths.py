"""The paths every tool needs, in one place: the checkout and the shared test world beside it.

The tools import the checkout's own packages because they run as modules from its root
(`python -m tools.reports.quality_table ...`), so nothing here edits sys.path."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the shared test world (models, eval texts, baselines) is ../shared beside the checkout, as for
# the tests; LOWBIT_SHARED points the tools elsewhere
SHARED = os.environ.get("LOWBIT_SHARED") or os.path.join(os.path.dirname(ROOT), "shared")

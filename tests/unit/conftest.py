"""Pure tests: no database, no network. Make the checkout importable when pytest runs from a script."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

"""Sphinx configuration of the documentation site: pip install -e ".[docs]", then
``sphinx-build -W --keep-going -b html docs docs/_build`` (what CI runs: any warning — a broken link or
reference — fails) or ``python -m http.server -d docs/_build`` to browse it."""
from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS)]  # the package, and generated.py beside this file

project = "segdeconv"
author = "the segdeconv developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "generated"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
html_theme = "furo"
html_title = "segdeconv"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
nitpicky = False

"""Sphinx configuration: the API reference of pp_diffusion, generated from its docstrings.

Build with ``make docs`` (warnings are errors: ``-W --keep-going``). Nothing is fetched at build
time: no intersphinx, and the theme is Sphinx's built-in one.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document this checkout, whatever is installed

import pp_diffusion  # noqa: E402

project = "pp_diffusion"
author = "the pp_diffusion developers"
release = version = pp_diffusion.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext"}  # the Markdown pages in docs/ are read on their own
root_doc = "index"
exclude_patterns = ["_build"]
templates_path: list[str] = []

# The docstrings are numpy-style (Parameters / Returns sections) over plain-text maths.
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_preprocess_types = False  # types are prose ("(d,) array"), not names to cross-reference

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True  # show `resampling=resampling_lib.systematic`, not a function repr
autodoc_inherit_docstrings = False  # Equinox and NamedTuple bases would otherwise lend their own

nitpicky = False
html_theme = "alabaster"
html_title = f"pp_diffusion {release}"
html_static_path: list[str] = []

"""Diffusion Tree Sampling and Search (Jain et al., 2025) on fixed-shape tree arrays.

``infer(program, ppd.tree.dts(1000), key, num_chains=4)`` samples a program's posterior with
independent trees as chains; :func:`kernel` gives the anytime search (``init`` / ``grow`` / ``draw``)
and :func:`save` / :func:`load` keep a tree between sessions.
"""

from pp_diffusion.tree._best_of_n import best_of_n as best_of_n
from pp_diffusion.tree._io import TreeFileError as TreeFileError, load as load, save as save
from pp_diffusion.tree._search import (
    TreeKernel as TreeKernel, dts as dts, dts_star as dts_star, kernel as kernel,
)
from pp_diffusion.tree._tree import Tree as Tree

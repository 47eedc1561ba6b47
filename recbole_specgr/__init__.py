"""
recbole_specgr
##############
Inductive generative recommendation (SpecGR, TIGER, RQ-VAE semantic IDs, UniSRec) as a RecBole 1.2.1 plugin.

Importing any module of the package runs this file first, which applies :mod:`recbole_specgr.compat` once, before
anything from recbole is imported.
"""

from recbole_specgr import compat  # noqa: F401  (applies the compatibility patches)

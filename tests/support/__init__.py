"""Helpers shared by the test modules: configs, planted data, registered models, comparisons.

Test modules import from here, never from conftest.py (which holds only fixtures and hooks) nor
from each other, so a module can be run, moved or split on its own.
"""

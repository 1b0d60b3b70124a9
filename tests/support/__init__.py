"""Helpers shared by the test modules: import them from here (``from support.database
import Database``), not from conftest.py (fixtures only) or from another test module."""

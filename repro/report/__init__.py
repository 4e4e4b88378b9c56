"""Reporting: aggregate evaluation JSONs into a tidy CSV, then tables and figures from it."""

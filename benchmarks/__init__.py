"""Benchmarks of authz_migration (see README.rst). Not part of the installed package."""

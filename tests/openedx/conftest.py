"""Fixtures of the Open edX-shaped host. Its tests (test_openedx_host.py) are collected only
under ``DJANGO_SETTINGS_MODULE=tests.settings_openedx``; the plugin and openedx-authz interop
tests run under either settings."""

from __future__ import annotations

import pytest
from django.conf import settings

OPENEDX_SETTINGS = "tests.settings_openedx"


def openedx_host() -> bool:
    """True when the suite runs with the Open edX-shaped host installed."""
    return settings.SETTINGS_MODULE == OPENEDX_SETTINGS


# The host's models exist only under its settings: importing them elsewhere would fail.
collect_ignore = [] if openedx_host() else ["test_openedx_host.py"]


@pytest.fixture(autouse=True)
def _fresh_caches():
    """ConfigurationModel caches current() in the request cache and the default cache, which
    outlive a test; every test starts with both empty."""
    from django.core.cache import cache

    try:
        from edx_django_utils.cache import RequestCache
    except ImportError:  # only the host's tests need it
        RequestCache = None
    cache.clear()
    if RequestCache is not None:
        RequestCache.clear_all_namespaces()
    yield
    cache.clear()
    if RequestCache is not None:
        RequestCache.clear_all_namespaces()

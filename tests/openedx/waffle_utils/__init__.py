"""Test stand-in for Open edX's ``openedx.core.djangoapps.waffle_utils`` override models."""

"""The demo app: only the ``demo`` management command, which plays a migration scenario."""

"""Move course-authoring roles between a legacy role table and Casbin, in step with a flag."""

__version__ = "0.1.0"

import os as _os

#: The Casbin model file shipped with the app; a host may set ``CASBIN_MODEL`` to it.
CASBIN_MODEL_PATH = _os.path.join(_os.path.dirname(__file__), "casbin_model.conf")

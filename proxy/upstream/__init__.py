"""Carrying a call to a provider: the only room that imports litellm."""

import os

# Before any module of this room imports litellm: otherwise litellm fetches its model price
# list over the network at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

"""The HTTP service: app factory, aggregation, error mapping, server runner."""

import logging

# stac-fastapi builds default settings at import time and warns that the title and
# version are defaults; ours are set in create_app, so that warning is noise.
logging.getLogger("stac_fastapi.types.config").setLevel(logging.ERROR)

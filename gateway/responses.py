"""A JSON response that serialises numpy arrays natively: vectors never become Python float lists."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class VectorJSONResponse(JSONResponse):
    """orjson renders a 384-d float32 vector about 20x faster than json.dumps of its `tolist()`."""

    def render(self, content: Any) -> bytes:
        """The content as JSON bytes, numpy arrays written by orjson directly."""
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)

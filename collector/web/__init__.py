"""The web UI and the HTTP API (``/api/v1``) over the store the collector writes.

Served by the ``ui`` extension (``collector/extensions/ui.py``) inside a running collector, or by
``genai-collector ui --db ...`` for a store that other collectors feed.  Every answer comes from
the query CLI's layer (:mod:`collector.query`): the same question gives the same answer.

Nothing here is imported by the query CLI: FastAPI and uvicorn cost about half a second to import,
and the CLI's start-up is part of its answer time.
"""

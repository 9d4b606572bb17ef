"""The Jupyter server extension: REST API and event stream over the engine.

Only `app.py` and `handlers.py` import jupyter_server or tornado; the service, the
request checks and the event broadcaster are plain asyncio, so the in-process client
(`scripthut.client`) reuses them without a server.
"""

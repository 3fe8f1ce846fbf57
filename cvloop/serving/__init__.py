"""``cvloop serve``: the inference server.

FastAPI on uvicorn (several worker processes), routing every frame by the rollout
manifest, dynamic micro-batching per model version, and the inference log written
durably by the server itself (journal first, Parquet parts after). See runbooks/serve.md.

- :mod:`cvloop.serving.models`  load a registered version for serving, checksum first
- :mod:`cvloop.serving.routing` the routing snapshot and its hot reload from the manifest
- :mod:`cvloop.serving.batcher` dynamic micro-batching with a bounded queue
- :mod:`cvloop.serving.app`     the HTTP API and the worker's life cycle
"""

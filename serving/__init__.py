"""Clips over HTTP: the toolkit's pipeline as a Ray Serve application (``python -m serving.serve``)
and its client (``python -m serving.client``). Needs the ``serve`` extra; the runtime does not."""

"""The torch networks that the exporter, the torch backend and training share: SVD loading, export wrappers, fast decoders."""

"""The bundle contract everything stands on: network specs, the manifest, precisions, errors, atomic writes, CLI helpers."""

"""Image in, video out: the SVD / SF-V pipeline over engines of any backend.

    from runtime.pipeline import VideoPipeline
    with VideoPipeline.from_bundle("bundle/", backend="onnxruntime") as pipe:
        result = pipe("image.png", steps=1, min_guidance=1.0, max_guidance=1.0)
        results = pipe(["a.png", "b.png"], steps=1, max_guidance=1.0)   # one clip per image, one pass
"""

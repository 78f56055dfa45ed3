"""Global batch inference: a checkpoint applied to every cell-year of a Grid store (a pool of Ray actors), written
as CF-conventions Zarr flux maps with a global budget and PNG figures; resumable after a crash.

Entry points: ``xmw_ray.infer.run.run_inference`` (library) and ``xmw infer`` / ``jobs/infer.py`` (command).
Nothing is imported here so that ``xmw --help`` stays fast.
"""

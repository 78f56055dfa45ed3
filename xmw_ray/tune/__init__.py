"""Ray Tune search over the model zoo x transfer strategies x their hyper-parameters (Optuna + ASHA).

``xmw tune --config FILE`` and ``jobs/tune.py`` call :func:`xmw_ray.tune.search.run_search`.
"""

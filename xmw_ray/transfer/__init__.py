"""Transfer learning from simulations (TEM-MDM) to observations (FLUXNET-CH4): one interface, five strategies.

The interface is ``xmw_ray.transfer.base`` (``Strategy``: one run of an ``ExperimentConfig`` plus its parameters), the strategies by name are
``xmw_ray.transfer.registry`` (``STRATEGIES``, ``get_strategy``). Nothing is imported here so that ``xmw --help``
(which imports ``xmw_ray.transfer.commands``) does not load torch and scikit-learn.
"""

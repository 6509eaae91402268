"""The monitor tier's analysis: the network model (areas), validation, estimation and the
energy balance of an area.

Pure functions over records (``areas``, ``series``, ``rules``, ``estimate``, ``balance``,
``settings``) and thin jobs and queries over the store (``store``, ``jobs``). The layer sits
above the collection engine and below the operator tier (tests/test_layers.py).
"""

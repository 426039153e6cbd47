"""streamfn's built-in connector plugins.

Each subpackage is one connector of the same shape (``config.py``, ``source.py``, a pure
helper) and registers through the ``streamfn.connectors`` entry-point group, exactly as a
third-party plugin does.
"""

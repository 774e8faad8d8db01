"""A module whose import fails, for the ``-A`` error tests in test_cli.py."""
raise RuntimeError("this module cannot be imported")

"""pytest plugin: a real redis-server on a free port; see issue 5."""

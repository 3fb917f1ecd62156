"""The HTTP query and admin API."""

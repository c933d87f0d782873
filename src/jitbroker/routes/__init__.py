"""Downstream routes: which destinations a live grant may reach, checked by gateways."""

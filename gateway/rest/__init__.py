"""REST/JSON for the gateway, derived at start from the `google.api.http` annotations of its contract."""

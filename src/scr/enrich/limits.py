"""How many similar sessions a search may ask for: read by the routes, the search itself and
the OpenAPI document, none of which then loads numpy for it."""

MAX_K = 100
DEFAULT_K = 10

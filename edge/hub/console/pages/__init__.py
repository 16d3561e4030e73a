"""The console's pages and API, one module per concern, each a list of routes."""

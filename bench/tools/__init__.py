"""Tools beside the harness: cross-checks against the engines' own benchmark tools."""

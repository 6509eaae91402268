"""Collection: which meter is read when, over which route, and what came of it."""

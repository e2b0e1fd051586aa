"""Documents as jobs: an upload accepted at once, embedded in the background, its zip fetched when done."""

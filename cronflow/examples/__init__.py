"""Flow files that `cronflow init` copies into a new home."""

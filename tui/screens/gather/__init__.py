"""The Gather/Clean screen: fetch from a booru, review arrivals, remove backgrounds."""

"""A conventional peer of Feira for comparison benchmarks: see README.md here."""

"""Generated gRPC code for Feira's internal services (protos/feira/v1).

Regenerate with ``python scripts/gen_protos.py``; never edit these files by hand.
"""

"""Product search: documents, cursors, and the Tantivy and Elasticsearch indexes.

Adapters live in their own modules (``tantivy_index``, ``elastic``) and are imported by
whoever wires the application, so importing this package loads neither driver.
"""

"""Pure DataFrame -> DataFrame transformations shared by batch and streaming paths.

Nothing in this package reads, writes, counts, collects or caches: I/O sits in clickrec.ingest
and clickrec.io. Column names are keyword parameters with defaults from clickrec.columns.
"""

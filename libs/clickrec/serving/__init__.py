"""Reading the serving tables without a JVM: the library call, and the HTTP app in `api`.

    from clickrec.serving import recommendations
    recommendations("u42", n=10, variant="champion")

Importing this package never imports pyspark.
"""

from clickrec.serving.reader import RecommendationReader, Snapshot, load_snapshot, recommendations

__all__ = ["RecommendationReader", "Snapshot", "load_snapshot", "recommendations"]

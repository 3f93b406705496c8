"""Scale-out engines that compute features and train models (Apache Spark)."""

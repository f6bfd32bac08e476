"""Data layer: raw formats -> Parquet shards (``prepare``), manifests, benchmarks and splits, subsets.

See ``docs/ARCHITECTURE.md`` ("Prepared dataset") for the shard columns and manifest keys.
"""

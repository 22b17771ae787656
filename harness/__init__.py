"""What the tests, the demo and the benchmarks drive the programs with.

A node's container runtimes played with ground truth (`nodewriter`), the collector and the
pipeline started as real processes (`collector_run`, `pipeline_run`), the hand-written
Kubernetes API stand-in (`k8s_api`), the whole flow from files to search (`flow`) and the
bounded wait on a condition (`wait`). It imports neither tests/ nor bench/, and the product
packages never import it.
"""

"""What is run: the accuracy cases and the performance workloads (YAML in data/, package
data), read and validated. Imports only the foundation (errors, baseline_files)."""

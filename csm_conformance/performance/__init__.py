"""The performance gate: timed fixed-length workloads (timing), the figures taken from
them, the stored baselines and the judge that compares against them, and the run that ties them
together. Imports the layers below (runtime, catalogue, faults, foundation); never the accuracy
gate."""

"""The accuracy gate: metrics (one registry), stored bounds, golden outputs, the CPU
reference's outputs, the judged checks, and the localizer that names the first diverging layer.
Imports the layers below (runtime, catalogue, faults, foundation); never the performance gate."""

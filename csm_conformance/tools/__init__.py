"""The command-line tools: the upgrade verdict, the A/B comparison, promotion of
baselines, the first run on a user's own model, the stack-range matrix, the fault catalogue and
inference. Their documented names (`python -m csm_conformance.<tool>`) are the thin entry modules
at the package's top. Tools may import every layer below; nothing below imports a tool."""

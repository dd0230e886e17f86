"""The command-line tools: the upgrade verdict, the A/B comparison, promotion of
baselines, the first run on a user's own model, the stack-range matrix, the fault catalogue and
inference. Their command line is one console script with a verb each, `csm-conformance <verb>`
(cli.py; `python -m csm_conformance <verb>` the same). Tools may import every layer below; nothing below imports a tool."""

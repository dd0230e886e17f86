"""Kernel-level conformance: every aten operator a case runs on the device, judged one by one.

When a logits or decode-loop check is red, the module localizer names a module (a dozen operators);
an upstream kernel bug needs the operator, its shapes and dtypes, and a script that shows the error
without the model. This package records every aten call of a case on the device model
(record.py: a TorchDispatchMode, with the module each call ran under and its phase: prefill, decode
step, codec), replays each distinct call on the device and judges it against its correctly rounded
standard computed on the CPU in float64 (standard.py), per case (run.py); bundle.py writes a
standalone repro.py with the call's inputs. The report is reports/ops_report.py (output/ops/ops.json).

Pass and fail of a logits check remain the accuracy gate's; `--csm-ops` makes the operator
standard a gate of its own (test_operator_conformance).
"""

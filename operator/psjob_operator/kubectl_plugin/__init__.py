"""`kubectl psjob`: a kubectl plugin that shows a PSJob's status, progress and pod logs.

kubectl runs any executable named `kubectl-psjob` on PATH for `kubectl psjob ...`; installing
the operator package puts one there. Formatting (terminal, status_view, chart, log_lines) is pure;
cli and pod_logs are the thin shell that talks to the API server.
"""

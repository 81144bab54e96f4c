"""faultplane for Chaos Toolkit (`pip install 'faultplane[chaostoolkit]'`).

- `faultplane.chaostoolkit.actions`: `inject`, `abort`, `abort_all`, and the rollback
  `abort_started`.
- `faultplane.chaostoolkit.probes`: `injection_state`, `verdict`, `slo_value`,
  `hypothesis_holds`, `wait_until_ended`.
- `faultplane.chaostoolkit.control`: aborts what the run started even when Chaos Toolkit
  skips rollbacks (Ctrl-C, SIGTERM, a failed method).

The control plane is `configuration.faultplane_api` (else $FAULTPLANE_API, else
127.0.0.1:18001), the token the secret `faultplane_token` (else $FAULTPLANE_TOKEN).
`examples/chaostoolkit/` has a held and a refuted experiment.
"""

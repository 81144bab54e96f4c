"""faultplane: fault injection as a platform, delivered to Envoy sidecars over xDS."""

__version__ = "0.1.0"

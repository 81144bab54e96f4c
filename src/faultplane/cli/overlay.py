"""`faultplane overlay envoy|istio`: print what to add to a sidecar faultplane does not own.

The output is meant to be pasted (or piped to `kubectl apply -f -`), so stdout carries
only the config: JSON with `--json`, else YAML whose comments say where each part goes.
The data itself comes from `render.overlay_config`; this module parses flags and formats.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from faultplane.cli.serve import MAX_FAULT_SLOTS, integer
from faultplane.model.mesh import DNS_LABEL
from faultplane.model.selector import SelectorError, parse_selector
from faultplane.render.overlay_config import (
    BOOTSTRAP_ANNOTATION,
    BOOTSTRAP_CONFIGMAP,
    DEFAULT_SELECTOR,
    DEFAULT_SLOTS,
    ROUTER_FILTER,
    XDS_CLUSTER,
    XdsAddress,
    envoy_overlay,
    istio_overlay,
    parse_xds_address,
)
from faultplane.render.resources import RUNTIME_LAYER


def add_overlay_commands(commands: argparse._SubParsersAction) -> None:
    overlay = commands.add_parser(
        "overlay", help="print the config that attaches an Envoy or Istio sidecar to faultplane"
    )
    platforms = overlay.add_subparsers(required=True, metavar="PLATFORM")
    envoy = platforms.add_parser("envoy", help="cluster, runtime layer and filter slots (Envoy v3)")
    istio = platforms.add_parser("istio", help="bootstrap-override ConfigMap and EnvoyFilter")
    for parser in (envoy, istio):
        parser.add_argument(
            "--xds-address",
            type=xds_address,
            required=True,
            action="append",
            metavar="HOST:PORT",
            help="where sidecars reach faultplane's xDS port (`serve --overlay`); repeat it "
            "for each replica on one store: Envoy fails over between them",
        )
        parser.add_argument(
            "--slots",
            type=integer(1, MAX_FAULT_SLOTS),
            default=DEFAULT_SLOTS,
            help="fault slots per direction, as `serve --fault-slots`; a sidecar opens "
            f"2N+1 streams to faultplane (default {DEFAULT_SLOTS})",
        )
    envoy.add_argument("--json", action="store_true", help="one JSON object, no comments")
    envoy.set_defaults(handler=cmd_overlay_envoy)
    istio.add_argument(
        "--namespace", type=namespace, help="the workloads' namespace (default: none, for -n)"
    )
    istio.add_argument(
        "--selector",
        type=labels,
        default=DEFAULT_SELECTOR,
        metavar="KEY=VALUE[,...]",
        help="the pod labels the EnvoyFilter selects (default "
        + ",".join(f"{k}={v}" for k, v in DEFAULT_SELECTOR.items())
        + ")",
    )
    istio.set_defaults(handler=cmd_overlay_istio)


def xds_address(text: str) -> XdsAddress:
    """An argparse type: argparse names the flag in the error and exits 2."""
    try:
        return parse_xds_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def namespace(text: str) -> str:
    # The mesh model's rule for Kubernetes names: a namespace is a DNS label.
    if not DNS_LABEL.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"must be a Kubernetes namespace (lower-case letters, digits and '-', at most "
            f"63, starting and ending with a letter or digit), not {text!r}"
        )
    return text


def labels(text: str) -> dict[str, str]:
    """KEY=VALUE[,KEY=VALUE...]: labels a pod must all carry, in the selector parser's
    Kubernetes syntax; only equalities, since a workloadSelector is a plain label map."""
    try:
        requirements = parse_selector(text).requirements
    except SelectorError:
        requirements = ()
    equalities = [r for r in requirements if r.operator == "in" and len(r.values) == 1]
    pairs = {r.key: min(r.values) for r in equalities}
    if not requirements or len(pairs) != len(requirements):  # also: a key given twice
        raise argparse.ArgumentTypeError(
            f"must be KEY=VALUE[,KEY=VALUE...], e.g. faultplane.io/overlay=enabled, not {text!r}"
        )
    return pairs


def cmd_overlay_envoy(args: argparse.Namespace) -> int:
    snippet = envoy_overlay(args.xds_address, args.slots)
    if args.json:
        print(json.dumps(snippet, indent=2))
        return 0
    streams = 2 * args.slots + 1
    parts = [
        _comments(
            f"faultplane overlay for Envoy: {args.slots} fault slot(s) per direction, so each",
            f"sidecar opens {streams} gRPC streams to faultplane (1 RTDS + {2 * args.slots} ECDS)",
            "on one HTTP/2 connection. Serve with `faultplane serve --overlay "
            f"--fault-slots {args.slots}`.",
            "Keep every part exactly as printed: identical config sources share streams.",
            "",
            f"clusters -> append to static_resources.clusters. {XDS_CLUSTER} must be in the",
            "bootstrap: Envoy refuses a config source whose cluster came over CDS.",
        ),
        _yaml({"clusters": snippet["clusters"]}),
        _comments(
            "layers -> append to layered_runtime.layers, after your own layers. faultplane",
            f"leases its fault switches in layer {RUNTIME_LAYER!r}: they lapse if it dies.",
        ),
        _yaml({"layers": snippet["layers"]}),
        _comments(
            f"http_filters.inbound -> insert before {ROUTER_FILTER} in every inbound HCM;",
            "http_filters.outbound -> the same in every outbound HCM. Until faultplane",
            "answers, each slot passes every request (its default_config).",
        ),
        _yaml({"http_filters": snippet["http_filters"]}),
    ]
    sys.stdout.write("".join(parts))
    return 0


def cmd_overlay_istio(args: argparse.Namespace) -> int:
    config_map, envoy_filter = istio_overlay(
        args.xds_address, args.slots, args.namespace, args.selector
    )
    apply = f"kubectl apply -n {args.namespace or 'NAMESPACE'} -f FILE"
    parts = [
        _comments(
            f"faultplane overlay for Istio sidecars: `{apply}`, then add to each",
            "workload's pod template (spec.template.metadata), and restart its pods (the",
            "bootstrap is read when the sidecar starts):",
            f"  annotations: {_flow({BOOTSTRAP_ANNOTATION: BOOTSTRAP_CONFIGMAP})}",
            f"  labels: {_flow(dict(args.selector))}",
            "",
            f"1. The ConfigMap adds cluster {XDS_CLUSTER} and runtime layer {RUNTIME_LAYER!r}",
            "to the sidecar's bootstrap (Istio refuses a config source whose cluster an",
            "EnvoyFilter added, istio/istio#35969). It must live in the pods' namespace.",
        ),
        _yaml(config_map),
        "---\n",
        _comments(
            f"2. The EnvoyFilter inserts {args.slots} fault slot(s) before the router of every",
            "inbound and outbound HCM, and selects only pods that carry the label: on a pod",
            f"without the override, {XDS_CLUSTER} does not exist and istiod's listener",
            "updates would be refused.",
        ),
        _yaml(envoy_filter),
    ]
    sys.stdout.write("".join(parts))
    return 0


def _comments(*lines: str) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


class _Dumper(yaml.SafeDumper):
    """Block YAML without anchors, multi-line strings (the bootstrap JSON) as `|` blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _literal_strings(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _literal_strings)


def _flow(data: dict[str, str]) -> str:
    """One-line YAML, quoted where YAML needs it (a label value `true` stays a string)."""
    return yaml.safe_dump(data, default_flow_style=True, width=1000).strip()


def _yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False)

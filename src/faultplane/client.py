"""Operator-side helpers: reach the API named by --api or FAULTPLANE_API."""

from __future__ import annotations

import os

import grpc

from faultplane.v1 import faultplane_pb2_grpc

DEFAULT_API = "127.0.0.1:18001"


def api_address(explicit: str | None) -> str:
    return explicit or os.environ.get("FAULTPLANE_API") or DEFAULT_API


def fault_stub(channel: grpc.Channel) -> faultplane_pb2_grpc.FaultServiceStub:
    return faultplane_pb2_grpc.FaultServiceStub(channel)

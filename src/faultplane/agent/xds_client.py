"""The agent's side of xDS: one state-of-the-world stream of kernel faults.

Same protocol as a sidecar's: the agent subscribes (wildcard) to `NETWORK_FAULT` with its
node (id, and its pods and capabilities in the metadata); each response is the whole set
of its pods' faults, one resource per (pod, fault) wrapped in an xDS `Resource` whose
`ttl` is that fault's lease. The agent ACKs a response (its version and nonce) only once
the rules are in the kernel, and NACKs one it could not apply (the previous version, the
nonce, and the reason: a field problem, or nft's own message), leaving the kernel as it
was. A lost stream is retried with backoff; the leases keep ticking meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import structlog
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format, struct_pb2
from google.rpc import code_pb2, status_pb2

from faultplane.agent.capabilities import Capabilities
from faultplane.agent.pods import Pod
from faultplane.agent.rules import KernelRules, Leased, Refused
from faultplane.kernel.fault import KernelFaultError, parse_fault
from faultplane.kernel.v1 import kernel_pb2

log = structlog.get_logger("faultplane.agent")

NETWORK_FAULT = "type.googleapis.com/faultplane.kernel.v1.NetworkFault"
RESOURCE = "type.googleapis.com/envoy.service.discovery.v3.Resource"
# Node metadata key under which an agent describes itself (AgentInfo's fields).
METADATA_KEY = "faultplane_agent"


def node_of(
    node_id: str, cluster: str, pods: list[Pod], capabilities: Capabilities
) -> base_pb2.Node:
    """The agent as the control server sees it: its pods and what its kernel can do."""
    metadata = struct_pb2.Struct()
    metadata.update(
        {
            METADATA_KEY: {
                "pods": [pod.metadata() for pod in pods],
                "capabilities": capabilities.metadata(),
            }
        }
    )
    return base_pb2.Node(id=node_id, cluster=cluster, metadata=metadata)


def desired_faults(response: discovery_pb2.DiscoveryResponse) -> dict[str, Leased]:
    """The response's faults by resource name; KernelFaultError or Refused if one is not
    a well-formed, leased NetworkFault."""
    desired: dict[str, Leased] = {}
    for index, envelope in enumerate(response.resources):
        path = f"resources[{index}]"
        if envelope.type_url != RESOURCE:
            raise Refused(f"{path}: a kernel fault must come wrapped in a Resource with a ttl")
        resource = discovery_pb2.Resource()
        envelope.Unpack(resource)
        if resource.resource.type_url != NETWORK_FAULT:
            raise Refused(f"{path} ({resource.name}): not a NetworkFault")
        message = kernel_pb2.NetworkFault()
        resource.resource.Unpack(message)
        fields = json_format.MessageToDict(message, preserving_proto_field_name=True)
        fault = parse_fault(fields, f"{path}.resource")
        if resource.name != fault.key:
            raise Refused(f"{path}.name: {resource.name!r} must be POD/ID, {fault.key!r}")
        ttl = resource.ttl.ToMilliseconds() / 1000 if resource.HasField("ttl") else 0.0
        if fault.key in desired:
            raise Refused(f"{path}.name: {fault.key!r} appears twice in one response")
        desired[fault.key] = Leased(fault, ttl)
    return desired


class AgentClient:
    """Keeps one ADS stream to the control server at `address` and applies what it says."""

    def __init__(self, address: str, node: base_pb2.Node, rules: KernelRules) -> None:
        self.address = address
        self.node = node
        self.rules = rules
        self.version = ""  # the last version ACKed
        self.answers: list[discovery_pb2.DiscoveryRequest] = []  # every ACK/NACK sent

    async def run(self, backoff: float = 0.2, max_backoff: float = 2.0) -> None:
        """Stream until cancelled, reconnecting after a lost stream."""
        delay = backoff
        while True:
            try:
                async with grpc.aio.insecure_channel(self.address) as channel:
                    await self._stream(channel)
                delay = backoff
            except grpc.aio.AioRpcError as exc:
                log.info("agent.stream_lost", address=self.address, code=exc.code().name)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff)

    async def _stream(self, channel: grpc.aio.Channel) -> None:
        outbox: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        outbox.put_nowait(
            discovery_pb2.DiscoveryRequest(
                node=self.node, type_url=NETWORK_FAULT, version_info=self.version
            )
        )

        async def requests() -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
            while True:
                yield await outbox.get()

        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        async for response in stub.StreamAggregatedResources(requests()):
            answer = await self._answer(response)
            self.answers.append(answer)
            outbox.put_nowait(answer)

    async def _answer(
        self, response: discovery_pb2.DiscoveryResponse
    ) -> discovery_pb2.DiscoveryRequest:
        """Apply the response; the ACK to send, or the NACK saying why not."""
        request = discovery_pb2.DiscoveryRequest(
            type_url=NETWORK_FAULT, response_nonce=response.nonce
        )
        try:
            if response.type_url != NETWORK_FAULT:
                raise Refused(f"type {response.type_url} is not served by a node agent")
            await self.rules.apply(desired_faults(response))
        except (Refused, KernelFaultError) as exc:
            log.warning("agent.nack", version=response.version_info, error=str(exc))
            request.version_info = self.version
            request.error_detail.CopyFrom(
                status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(exc))
            )
            return request
        self.version = response.version_info
        request.version_info = self.version
        log.info("agent.ack", version=self.version, faults=self.rules.applied())
        return request
